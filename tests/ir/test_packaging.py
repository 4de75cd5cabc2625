"""Packaging rules that stay true: one import style (package-relative) in ir/, search/ and
backends/; ``superopt.ir.kernelize`` is the module, not a function shadowing it; the legality
check reaches no lowering module, at any depth of its imports (top level or in functions)."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import superopt.ir
from superopt.ir import kernelize

ROOT = Path(superopt.ir.__file__).resolve().parent.parent
LAYERS = ("ir", "search", "backends")


def _sources():
    for layer in LAYERS:
        yield from sorted((ROOT / layer).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every ``import``/``from`` statement of a file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom): out.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import): out += [(0, a.name) for a in node.names]
    return out


def test_one_import_style_package_relative():
    absolute = [f"{p.relative_to(ROOT)}: {m}" for p in _sources() for level, m in _imports(p)
                if level == 0 and (m == "superopt" or m.startswith("superopt."))]
    assert len(list(_sources())) > 50 and absolute == []


def test_kernelize_is_the_module():
    assert inspect.ismodule(superopt.ir.kernelize) and superopt.ir.kernelize is kernelize
    assert inspect.isfunction(kernelize.kernelize)


def _ir_closure(start: str) -> set[str]:
    """ir modules that ``start`` imports, directly or through other ir modules."""
    def local(name: str) -> bool: return (ROOT / "ir" / f"{name}.py").exists()
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen: continue
        seen.add(name)
        for node in ast.walk(ast.parse((ROOT / "ir" / f"{name}.py").read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level != 1: continue
            if node.module: todo += [node.module.split(".")[0]] if local(node.module.split(".")[0]) else []
            else: todo += [a.name for a in node.names if local(a.name)]   # ``from . import x``
    return seen


def test_legality_check_imports_no_lowering():
    reach = _ir_closure("schedule")
    assert {"geometry_staged", "wgmma", "tensorcore", "target"} <= reach
    assert not {m for m in reach if m.startswith("lower")}, sorted(reach)
    assert "lower_staged" in _ir_closure("lower") and "geometry_staged" in _ir_closure("lower_staged")

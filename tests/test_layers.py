"""Layers only point down: ir <- search <- backends <- superopt (engine, cache, runtime) <-
superopt/commands (the CLI); kernels/ (the workload library) uses ir only. Every import of
every module is checked, at module level and inside functions (ast: nothing is imported);
the graph of module-level imports must have no cycle (networkx)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"ir": "superopt.ir", "search": "superopt.search", "backends": "superopt.backends",
           "kernels": "superopt.kernels", "superopt": "superopt"}
# layer -> the layers its modules may import
ALLOWED = {"ir": {"ir"}, "kernels": {"ir", "kernels"}, "search": {"ir", "search"},
           "backends": {"ir", "search", "backends"},
           "superopt": {"ir", "search", "backends", "kernels", "superopt"},
           "commands": {"ir", "search", "backends", "kernels", "superopt", "commands"}}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the five folders (as installed: superopt.ir, ...)."""
    out = {}
    for folder, pkg in FOLDERS.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__": parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


MODULES = modules()


def layer(name: str) -> str | None:
    """The layer of a dotted module name of this project (None: not ours)."""
    parts = name.split(".")
    if parts[0] != "superopt": return None
    if len(parts) == 1: return "superopt"
    return {"ir": "ir", "search": "search", "backends": "backends", "kernels": "kernels",
            "commands": "commands"}.get(parts[1], "superopt")


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports(name: str, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) of every import in module ``name`` (relative ones resolved);
    with ``top_level_only``, only those run when the module is imported (not inside functions,
    not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    base = name if _is_package(name) else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): continue
            if top_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test): continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    up = base.split(".")
                    up = up[:len(up) - (child.level - 1)]
                    mod = ".".join(up + ([mod] if mod else []))
                for a in child.names:   # `from pkg import submodule` imports the submodule
                    sub = f"{mod}.{a.name}"
                    out.append((sub if sub in MODULES else mod, child.lineno))
            visit(child)
    visit(tree)
    return out


def violations(folder: str) -> list[str]:
    found = []
    for name, path in MODULES.items():
        own = layer(name)
        if not name.startswith(FOLDERS[folder]) or (folder == "superopt" and own not in ("superopt", "commands")):
            continue
        for target, line in imports(name):
            theirs = layer(target)
            if theirs is not None and theirs not in ALLOWED[own]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {target} ({theirs})")
    return found


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_imports_point_down(folder):
    bad = violations(folder)
    assert not bad, f"{len(bad)} imports point up:\n" + "\n".join(bad)


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for name in MODULES:
        g.add_node(name)
        for target, _ in imports(name, top_level_only=True):
            if target in MODULES and target != name: g.add_edge(name, target)
    return g


def test_module_level_imports_have_no_cycle():
    cycles = [c for c in nx.strongly_connected_components(graph()) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_checker_sees_upward_and_relative_imports():
    """The walk itself: this project's own modules resolve, relative imports included."""
    assert "superopt.search.beam" in MODULES and "superopt.engine" in MODULES
    targets = {t for t, _ in imports("superopt.search.families.simt")}
    assert "superopt.search.cost" in targets and "superopt.search.families" in targets
    assert layer("superopt.commands.tune") == "commands" and layer("superopt.engine.tuner") == "superopt"
    assert layer("numpy") is None

"""Hostile kernel files: every case is a one-line KernelFileError from the loader, and a
handful go through the CLI (one stderr line, exit 2, < 10 s, nothing executed or mutated)."""
from __future__ import annotations

import copy
import json
import os
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt.io import KernelFileError, load_steps, save_kernel
from superopt.ir import dtype as dt
from superopt.ir.kernel import Axis, Buffer, Kernel
from superopt.ir.node import Node, Ops, render, var

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "kernels" / "examples"
MARK = "SUPEROPT_PWNED_MARKER"


def _inject(marker: Path) -> str:
    return f'block + ({{ extern int system(const char*); system("touch {marker}"); 0; }})'


def _base() -> dict:
    return json.loads((EX / "matmul_512.json").read_text())


# ---- the generator -------------------------------------------------------------------
def json_cases(marker: Path) -> dict[str, bytes]:
    inj = _inject(marker)
    b = _base()
    cases: dict[str, dict | bytes] = {}

    def mut(name, f):
        d = copy.deepcopy(b); f(d); cases[name] = d

    # code injection through every string-carrying field
    mut("special_arg", lambda d: d["nodes"].__setitem__(0, ["special", "int32", [], [inj, 512]]))
    mut("reg_op", lambda d: d["nodes"].append(["reg", "float32", [0], inj]))
    mut("shared_body", lambda d: (d["nodes"].append(["shared", "float32", [0], inj]), d.__setitem__("body", len(d["nodes"]) - 1)))
    mut("kernel_name", lambda d: d.__setitem__("name", inj))
    mut("buffer_name", lambda d: d["inputs"][0].__setitem__("name", inj))
    mut("output_name", lambda d: d["output"].__setitem__("name", inj))
    mut("dtype_name", lambda d: d["inputs"][0].__setitem__("dtype", inj))
    mut("node_dtype", lambda d: d["nodes"][0].__setitem__(1, inj))
    mut("op_name", lambda d: d["nodes"][0].__setitem__(0, inj))
    mut("var_arg_str", lambda d: d["nodes"][0].__setitem__(3, [inj, 512]))
    mut("const_str", lambda d: d["nodes"][1].__setitem__(3, inj))
    mut("format_str", lambda d: d.__setitem__("format", inj))
    # arity and type errors
    mut("arity", lambda d: d["nodes"][2].__setitem__(2, [0]))
    mut("arity_more", lambda d: d["nodes"][2].__setitem__(2, [0, 1, 0]))
    mut("axes_type", lambda d: d.__setitem__("axes", "x"))
    mut("axis_neg", lambda d: d["axes"].__setitem__(0, [-1, False]))
    mut("axis_str", lambda d: d["axes"].__setitem__(0, ["512", False]))
    mut("shape_float", lambda d: d["inputs"][0].__setitem__("shape", [512.0, 512]))
    mut("body_index", lambda d: d.__setitem__("body", 10 ** 6))
    mut("var_axis", lambda d: d["nodes"][0].__setitem__(3, [7, 512]))
    mut("var_size", lambda d: d["nodes"][0].__setitem__(3, [0, 100000]))
    mut("const_float_in_int", lambda d: d["nodes"][1].__setitem__(3, 512.5))
    # huge shapes and constants
    mut("huge_shape", lambda d: d["inputs"][0].__setitem__("shape", [10 ** 12, 10 ** 12]))
    mut("huge_axes", lambda d: [d["axes"].__setitem__(i, [10 ** 9, r]) for i, (_, r) in enumerate(d["axes"])])
    mut("big_const", lambda d: d["nodes"][1].__setitem__(3, 1 << 200))
    # out of bounds: the input is smaller than its index range
    mut("oob_input", lambda d: d["inputs"][0].__setitem__("shape", [16, 16]))
    mut("oob_output", lambda d: d["output"].__setitem__("shape", [16]))
    cases["const_5000_digits"] = json.dumps(b).replace('"int32", [], 512]', '"int32", [], ' + "9" * 5000 + "]", 1).encode()
    # deep chain and exponential DAG
    d = copy.deepcopy(b)
    n0 = len(d["nodes"])
    d["nodes"].append(["var", "int32", [], [0, 512]])
    for i in range(5000): d["nodes"].append(["neg", "int32", [n0 + i], None])
    d["store"] = len(d["nodes"]) - 1
    cases["deep_5000"] = d
    # truncations and junk
    raw = json.dumps(b).encode()
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        cases[f"trunc_json_{cut}"] = raw[:cut]
    cases["not_dict"] = b"[1, 2, 3]"
    cases["deep_list"] = b"{" + b'"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
    return {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in cases.items()}


def _exp_dag_json(b: dict, depth: int) -> dict:
    """x_{i+1} = x_i + x_i ... kept apart by MAX so it is not folded: 2^depth terms expanded."""
    d = copy.deepcopy(b)
    start = len(d["nodes"])
    d["nodes"].append(["var", "int32", [], [0, 512]])
    for i in range(depth): d["nodes"].append(["max", "int32", [start + i, start + i], None])
    d["store"] = len(d["nodes"]) - 1
    return d


def _pk(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"."


def _su(s: str) -> bytes:
    e = s.encode(); return b"\x8c" + bytes([len(e)]) + e  # SHORT_BINUNICODE


def _glob(mod: str, name: str) -> bytes: return _su(mod) + _su(name) + b"\x93"  # STACK_GLOBAL


class _Raw:
    """Pickles as ``(f, args)`` without calling f (to craft hostile streams)."""
    def __init__(self, f, args): self.f, self.args = f, args
    def __reduce__(self): return (self.f, self.args)


def _envelope(kernel_obj) -> bytes:
    return pickle.dumps({"format": "superopt.kernel", "version": 1, "kernel": kernel_obj}, protocol=4)


def pickle_cases(marker: Path) -> dict[str, bytes]:
    inj = _inject(marker)
    good = load_steps(EX / "matmul_512.pkl")[0][0].kernel
    cases: dict[str, bytes] = {}
    # globals / reduce
    cases["os_system"] = _pk(_glob("os", "system"), _su(f"touch {marker}"), b"\x85R")
    cases["builtins_eval"] = _pk(_glob("builtins", "eval"), _su(f"open({str(marker)!r},'w')"), b"\x85R")
    cases["subprocess"] = _pk(_glob("subprocess", "call"), _su(f"touch {marker}"), b"\x85R")
    cases["posix_system"] = pickle.dumps(_Raw(os.system, (f"touch {marker}",)), protocol=2)
    cases["inst"] = b"(cos\nsystem\n" + f"S'touch {marker}'\n".encode() + b"o."  # protocol 0 OBJ/INST
    cases["inst0"] = b"(" + f"S'touch {marker}'\n".encode() + b"ios\nsystem\n."
    # BUILD on objects that exist outside the file
    cases["build_float32"] = _pk(_glob("superopt.ir.dtype", "dtype_by_name"), _su("float32"), b"\x85R",
                                 b"}(" + _su("itemsize") + b"K\x63" + _su("c") + _su("evil") + b"u", b"b")
    cases["build_float32_slots"] = _pk(_glob("superopt.ir.dtype", "dtype_by_name"), _su("float32"), b"\x85R",
                                       b"N}" + _su("name") + _su("evil") + b"s\x86b")
    cases["build_ops_add"] = _pk(_glob("superopt.ir.node", "Ops"), _su("add"), b"\x85R",
                                 b"}" + _su("_value_") + _su("evil") + b"s" + b"b")
    cases["build_kernel_cls"] = _pk(_glob("superopt.ir.kernel", "Kernel"), b"}" + _su("evil") + b"K\x01sb")
    # lowered-only ops and injected strings inside the pickle's IR
    v = var(0, 512)
    axes, ins, out = good.axes, good.inputs, good.output
    for op in (Ops.SPECIAL, Ops.REG, Ops.SHARED):
        src = () if op is Ops.SPECIAL else (v,)
        arg = (inj, 512) if op is Ops.SPECIAL else inj
        bad = Node(op, dt.int32 if op is Ops.SPECIAL else dt.float32, src, arg)
        store = bad if op is Ops.SPECIAL else good.store
        body = good.body if op is Ops.SPECIAL else bad
        cases[f"pkl_{op.name.lower()}"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, body, store)))
    cases["pkl_name"] = _envelope(_Raw(Kernel, (inj, axes, ins, out, good.body, good.store)))
    cases["pkl_bufname"] = _envelope(_Raw(Kernel, ("k", axes, (Buffer(inj, dt.float32, (512, 512)),) + ins[1:], out, good.body, good.store)))
    cases["pkl_oob"] = _envelope(_Raw(Kernel, ("k", axes, (Buffer("a", dt.float32, (4,)),) + ins[1:], out, good.body, good.store)))
    cases["pkl_huge"] = _envelope(_Raw(Kernel, ("k", (Axis(10 ** 12), Axis(10 ** 12), Axis(512, True)), ins, out, good.body, good.store)))
    cases["pkl_arity"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, Node(Ops.ADD, dt.float32, (good.body,)), good.store)))
    cases["pkl_bigconst"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, Node(Ops.CONST, dt.int8, (), 10 ** 5000), good.store)))
    cases["pkl_fp16_overflow"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, Node(Ops.CONST, dt.float16, (), 1e10), good.store)))
    cases["pkl_wrongtype"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, "body", good.store)))
    chain = v
    for _ in range(300): chain = Node(Ops.NEG, dt.int32, (chain,))  # deeper than the limit (256)
    cases["pkl_deep"] = _envelope(_Raw(Kernel, ("k", axes, ins, out, good.body, chain)))
    # a 5000-deep chain crafted opcode by opcode (the pickler itself would recurse)
    node, ops, dty = b"h\x00", b"h\x01", b"h\x02"
    head = (_glob("superopt.ir.node", "Node") + b"\x94" + _glob("superopt.ir.node", "Ops") + _su("neg") + b"\x85R\x94"
            + _glob("superopt.ir.dtype", "dtype_by_name") + _su("int32") + b"\x85R\x94"
            + node + b"(" + _glob("superopt.ir.node", "Ops") + _su("const") + b"\x85R" + dty + b")K\x01tRq\x030")
    step = node + b"(" + ops + dty + b"h\x03\x85Ntq\x030"[:0] + b"tRq\x030"
    cases["pkl_deep_5000"] = _pk(b"}" + _su("format") + _su("superopt.kernel") + _su("version") + b"K\x01"
                                 + _su("kernel") + head + step * 5000 + b"h\x03u")
    raw = (EX / "matmul_512.pkl").read_bytes()
    for cut in (3, 40, len(raw) // 2, len(raw) - 1):
        cases[f"trunc_pkl_{cut}"] = raw[:cut]
    return cases


def fuzz_cases(n: int = 60, seed: int = 1234) -> dict[str, bytes]:
    rng = random.Random(seed)
    srcs = [p for p in sorted(EX.iterdir()) if p.suffix in (".pkl", ".json")]
    out = {}
    for i in range(n):
        data = bytearray(srcs[i % len(srcs)].read_bytes())
        for _ in range(rng.randint(1, 8)):
            r = rng.random(); j = rng.randrange(len(data))
            if r < 0.5: data[j] = rng.randrange(256)
            elif r < 0.75: del data[j:j + rng.randint(1, 16)]
            else: data[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        out[f"fuzz{i}_{srcs[i % len(srcs)].name}"] = bytes(data)
    return out


def _state() -> tuple:
    return (dict(vars(dt.float32)), dt.float32.itemsize, dt.float32.name, Ops.ADD.value, Ops.ADD.name,
            dict(vars(Ops.ADD)), Ops("add") is Ops.ADD, dt.dtype_by_name("float32") is dt.float32,
            *(sorted(set(c.__dict__) - {"__slotnames__"}) for c in (Kernel, Buffer, Axis, dt.DType)))  # copyreg's cache aside


def _write(tmp: Path, cases: dict[str, bytes]) -> list[Path]:
    paths = []
    for name, data in cases.items():
        p = tmp / (name + (".pkl" if data[:1] == b"\x80" or name.startswith(("inst", "pkl", "trunc_pkl")) else ".json"))
        p.write_bytes(data); paths.append(p)
    return paths


# ---- the loader on every case ---------------------------------------------------------------
def test_every_hostile_file_is_one_line_error(tmp_path):
    marker = tmp_path / MARK
    before = _state()
    cases = {**json_cases(marker), **pickle_cases(marker)}
    loaded = []
    for p in _write(tmp_path, cases):
        try:
            load_steps(p)
            loaded.append(p.name)
        except KernelFileError as e:
            assert "\n" not in str(e) and str(p) in str(e), (p.name, str(e))
    assert not loaded, loaded
    assert not marker.exists()
    assert _state() == before


def test_fuzzed_examples_never_crash(tmp_path):
    before = _state()
    for p in _write(tmp_path, fuzz_cases()):
        try:
            for s in load_steps(p)[0]: s.kernel.describe()
        except KernelFileError as e:
            assert "\n" not in str(e)
    assert _state() == before


def test_build_on_shared_objects_changes_nothing(tmp_path):
    before = _state()
    for name in ("build_float32", "build_float32_slots", "build_ops_add", "build_kernel_cls"):
        p = tmp_path / f"{name}.pkl"
        p.write_bytes(pickle_cases(tmp_path / MARK)[name])
        with pytest.raises(KernelFileError, match="BUILD"):
            load_steps(p)
    assert _state() == before and dt.float32.itemsize == 4 and Ops.ADD.value == "add"
    assert not hasattr(dt.float32, "c") or dt.float32.c == "float"


def test_render_exponential_dag_is_bounded():
    x = var(0, 512)
    for _ in range(70): x = Node(Ops.MAX, dt.int32, (x, x))
    s = render(x)
    assert len(s) <= 2000


def test_limits_are_overridable(tmp_path):
    import superopt.validate as v
    p = save_kernel(load_steps(EX / "matmul_512.json")[0][0].kernel, tmp_path / "k.json")
    old = v.LIMITS["max_elements"]
    try:
        v.LIMITS["max_elements"] = 1000
        with pytest.raises(KernelFileError, match="limit 1000"):
            load_steps(p)
    finally:
        v.LIMITS["max_elements"] = old
    assert load_steps(p)


# ---- a handful through the CLI -------------------------------------------------------------
CLI_CASES = ["special_arg", "kernel_name", "os_system", "build_float32", "pkl_special", "pkl_deep", "pkl_deep_5000", "oob_input"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SUPEROPT_CACHE=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "superopt", *args], capture_output=True, text=True, timeout=10,
                          cwd=cwd, env=env)


def test_cli_one_line_exit_2(tmp_path):
    marker = tmp_path / MARK
    cases = {**json_cases(marker), **pickle_cases(marker)}
    d = tmp_path / "files"; d.mkdir()
    paths = _write(d, {k: cases[k] for k in CLI_CASES})
    for p in paths[:4]:
        for cmd in ("show", "tune", "run"):
            r = _cli(cmd, str(p), cwd=tmp_path)
            assert r.returncode == 2, (cmd, p.name, r.stderr[-500:])
            assert len(r.stderr.strip().splitlines()) == 1, (cmd, p.name, r.stderr[-500:])
    for p in paths[4:]:
        r = _cli("show", str(p), cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (p.name, r.stderr[-500:])
    r = _cli("tune-cache", str(d), "--no-progress", "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-500:]
    assert not marker.exists()


def test_exponential_dag_loads_and_shows_fast(tmp_path):
    """A 70-node index DAG (2^70 terms if expanded) is a valid kernel: show renders it memoized."""
    p = tmp_path / "exp.json"
    p.write_text(json.dumps(_exp_dag_json(_base(), 70)))
    k = load_steps(p)[0][0].kernel
    assert len(k.describe()) < 20000
    r = _cli("show", str(p), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-500:]


def test_cli_new_rejects_absurd_sizes(tmp_path):
    for args in (["M=1e23"], ["M=" + "9" * 30], ["M=1000000", "N=1000000", "K=1000000"]):
        r = _cli("new", "matmul", *args, "-o", str(tmp_path / "x.pkl"), cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x.pkl").exists()


# ---- properties --------------------------------------------------------------------------------
_KIND_PARAMS = [("matmul", dict(M=(1, 64), N=(1, 64), K=(1, 64))), ("rowsum", dict(M=(1, 64), N=(1, 64))),
                ("softmax", dict(M=(1, 32), N=(1, 64))), ("transpose", dict(M=(1, 64), N=(1, 64)))]


@st.composite
def _workload(draw):
    from superopt.kernels import Workload
    kind, ps = draw(st.sampled_from(_KIND_PARAMS))
    params = {k: draw(st.integers(*r)) for k, r in ps.items()}
    try:
        return Workload.make(kind, **params)
    except ValueError:
        return Workload.make(kind)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=_workload(), suffix=st.sampled_from([".pkl", ".json"]))
def test_valid_kernels_round_trip(tmp_path, w, suffix):
    p = save_kernel(w.steps if len(w.steps) > 1 else w.kernel, tmp_path / f"k{suffix}")
    steps, _ = load_steps(p)
    assert [s.kernel.key for s in steps] == [s.kernel.key for s in w.steps]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_only_raise_kernel_file_error(tmp_path, data):
    src = data.draw(st.sampled_from(["matmul_512.json", "softmax_1024.json", "matmul_512.pkl", "softmax_1024.pkl"]))
    raw = bytearray((EX / src).read_bytes())
    if src.endswith(".json"):
        d = json.loads(raw)
        k = d if "nodes" in d else d["steps"][0]["kernel"]
        leaf = st.one_of(st.integers(-2 ** 40, 2 ** 40), st.floats(), st.text(max_size=5), st.none(), st.booleans(),
                         st.lists(st.integers(-3, 600), max_size=3))
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(k["nodes"]) - 1))
            f = data.draw(st.integers(0, 3))
            k["nodes"][i][f] = data.draw(leaf if f != 0 else st.sampled_from([o.value for o in Ops] + ["x"]))
        raw = bytearray(json.dumps(d).encode())
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            j = data.draw(st.integers(0, len(raw) - 1))
            raw[j] = data.draw(st.integers(0, 255))
    p = tmp_path / ("m" + src[-5:].lstrip("_"))
    p.write_bytes(bytes(raw))
    try:
        for s in load_steps(p)[0]: s.kernel.describe()
    except KernelFileError as e:
        assert "\n" not in str(e)


def test_constants_must_fit_their_dtype():
    from superopt.validate import ValidationError, check_const
    for v, d in ((1e10, dt.float16), (1 << 200, dt.int32), (300, dt.uint8), (-129, dt.int8), (1, dt.bool_), (1.5, dt.int32)):
        with pytest.raises(ValidationError):
            check_const(v, d)
    for v, d in ((65504.0, dt.float16), (float("-inf"), dt.float32), (255, dt.uint8), (True, dt.bool_)):
        check_const(v, d)

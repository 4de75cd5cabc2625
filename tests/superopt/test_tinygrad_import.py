import os
import pickle

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad")
os.environ.setdefault("DEV", "CPU")
from tinygrad import Tensor as TT, dtypes as tdt  # noqa: E402

from superopt.ir.interpret import run_kernel  # noqa: E402
from superopt.tinygrad_import import (capture_tensors, from_ast, is_tinygrad_pickle, kernel_asts,  # noqa: E402
                                      kernels_from_tensor, load_ast, load_asts, loads_asts)

rng = np.random.default_rng(0)


def run_by_size(k, arrays):
    """Run kernel k feeding each input the array with its element count (sizes are distinct in these tests)."""
    by_size = {a.size: a for a in arrays}
    return run_kernel(k, [by_size[b.size].reshape(-1) for b in k.inputs])


def test_matmul_matches_numpy_and_tinygrad():
    a, b = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    t = TT(a).realize() @ TT(b).realize()
    want = (TT(a) @ TT(b)).numpy()  # schedule_linear() consumes t's schedule: realize a twin
    [k] = kernels_from_tensor(t)
    assert k.kind == "gemm" and [ax.size for ax in k.axes] == [16, 12, 8]
    got = run_by_size(k, [a, b]).reshape(16, 12)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_with_padding_and_stride():
    x, w = rng.standard_normal((1, 2, 8, 8)).astype(np.float32), rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    for stride in (1, 2):
        t = TT(x).realize().conv2d(TT(w).realize(), stride=stride, padding=1)
        want = TT(x).conv2d(TT(w), stride=stride, padding=1).numpy()
        [k] = kernels_from_tensor(t)
        assert k.kind == "conv"
        np.testing.assert_allclose(run_by_size(k, [x, w]).reshape(want.shape), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ewise", "sum", "max", "where", "gelu", "transpose"])
def test_elementwise_and_reductions(op):
    x = rng.standard_normal((6, 10)).astype(np.float32)
    f = {"ewise": lambda t: (t * 2 + 1).exp(), "sum": lambda t: t.sum(1), "max": lambda t: t.max(0),
         "where": lambda t: (t > 0).where(t, 3.0), "gelu": lambda t: t.gelu(), "transpose": lambda t: t.T + 1}[op]
    want = f(TT(x)).numpy()
    [k] = kernels_from_tensor(f(TT(x).realize()))
    np.testing.assert_allclose(run_kernel(k, [x.reshape(-1)]).reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_half_and_int8_casts():
    h = rng.standard_normal((4, 8)).astype(np.float16)
    [k] = kernels_from_tensor(TT(h).realize().cast(tdt.float) + 1)
    assert k.inputs[0].dtype.name == "float16" and k.output.dtype.name == "float32"
    np.testing.assert_allclose(run_kernel(k, [h.reshape(-1)]).reshape(4, 8), (TT(h).cast(tdt.float) + 1).numpy(), rtol=1e-6)
    q = rng.integers(-100, 100, (4, 4)).astype(np.int8)
    [k] = kernels_from_tensor(TT(q).realize().cast(tdt.int) * 3)
    np.testing.assert_array_equal(run_kernel(k, [q.reshape(-1)]).reshape(4, 4), (TT(q).cast(tdt.int) * 3).numpy())


def test_multi_kernel_program_imports_every_kernel():
    x = TT(rng.standard_normal((4, 8)).astype(np.float32)).realize()
    ks = kernels_from_tensor(x.softmax(1))
    assert [k.kind for k in ks] == ["reduce", "reduce", "elementwise"]


def test_pickled_ast_roundtrip(tmp_path):
    t = TT.empty(16, 8) @ TT.empty(8, 12)
    lin = t.schedule_linear()
    p = tmp_path / "mm.pkl"
    p.write_bytes(pickle.dumps(kernel_asts(lin)[0]))
    assert is_tinygrad_pickle(p.read_bytes())
    k = load_ast(p)
    assert k.key == from_ast(kernel_asts(lin)[0]).key and k.kind == "gemm"
    p2 = tmp_path / "all.pkl"
    p2.write_bytes(pickle.dumps(TT.empty(4, 8).softmax(1).schedule_linear()))
    assert len(load_asts(p2)) == 3
    with pytest.raises(ValueError, match="holds 3"):
        load_ast(p2)


class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    t = TT.empty(4, 4) + 1
    payload = pickle.dumps([kernel_asts(t.schedule_linear())[0], _Evil()])
    with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os.system"):
        loads_asts(payload)
    with pytest.raises(ValueError, match="truncated|cannot read"):
        loads_asts(payload[:len(payload) // 2])


def test_load_kernel_accepts_tinygrad_pickles_and_refuses_payloads(tmp_path):
    io = pytest.importorskip("superopt.io")
    p = tmp_path / "k.pkl"
    p.write_bytes(pickle.dumps(kernel_asts((TT.empty(16, 8) @ TT.empty(8, 12)).schedule_linear())[0]))
    assert io.load_kernel(p).kind == "gemm"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps([kernel_asts((TT.empty(4, 4) + 1).schedule_linear())[0], _Evil()]))
    with pytest.raises(io.KernelFileError, match="refusing to load"):
        io.load_kernel(bad)


def test_unsupported_kernel_is_a_clear_error():
    from tinygrad.uop.ops import UOp, Ops as TOps
    with pytest.raises(ValueError, match="expected a SINK"):
        from_ast(UOp(TOps.NOOP, tdt.void))
    with pytest.raises(ValueError, match="not a kernel AST"):
        kernel_asts(UOp(TOps.NOOP, tdt.void))


def test_capture_tensors_writes_a_tunable_directory(tmp_path):
    pytest.importorskip("superopt.io")
    from superopt.capture import read_manifest
    capture_tensors([TT.empty(4, 8).softmax(1), TT.empty(4, 8).softmax(1), TT.empty(4, 8).sum(1)], tmp_path)
    m = read_manifest(tmp_path)
    counts = sorted(e["count"] for e in m["kernels"])
    # softmax: max, sum(exp), divide; twice; the plain row sum shares no key with softmax's sums
    assert sum(counts) == 7 and len(m["kernels"]) == 4


# ---- export to tinygrad's BEAM cache -------------------------------------------------------
@pytest.fixture
def beam_cache(tmp_path):
    """Point tinygrad's disk cache at a temporary file for the test."""
    import tinygrad.helpers as th
    saved = th.CACHEDB, th._db_connection
    th.CACHEDB, th._db_connection = str(tmp_path / "tinygrad-cache.db"), None
    th._db_tables.clear()
    yield
    if th._db_connection is not None: th._db_connection.close()
    th.CACHEDB, th._db_connection = saved
    th._db_tables.clear()


def _cpu_schedule(k, tiles: dict):
    """A CPU schedule: per axis (grid, loop, upcast/unroll) sizes."""
    from superopt.ir.schedule import Level, Schedule, Split
    sp = []
    for a, ax in enumerate(k.axes):
        g, inner = tiles.get(a, (1, 1))
        lv = Level.UNROLL if ax.reduce else Level.UPCAST
        sp.append(tuple(x for x in (Split(Level.GRID, g), Split(Level.LOOP, ax.size // (g * inner)), Split(lv, inner))
                        if x.size > 1) or (Split(Level.LOOP, ax.size),))
    return Schedule(tuple(sp), workers=max(g for g, _ in tiles.values()))


@pytest.mark.parametrize("what", ["matmul", "conv"])
def test_exported_opts_are_what_tinygrad_runs(what, beam_cache):
    from tinygrad import Device
    from tinygrad.codegen.opt.postrange import apply_opts
    from tinygrad.helpers import Context
    from superopt.backends.base import get
    from superopt.ir.schedule import check
    from superopt.search.machine import load
    from superopt.tinygrad_export import export_beam
    from superopt.verify import verify
    a = rng.standard_normal((64, 48) if what == "matmul" else (1, 2, 8, 8)).astype(np.float32)
    b = rng.standard_normal((48, 32) if what == "matmul" else (4, 2, 3, 3)).astype(np.float32)
    f = (lambda x, y: x @ y) if what == "matmul" else (lambda x, y: x.conv2d(y, padding=1))
    [sink] = kernel_asts(f(TT(a).realize(), TT(b).realize()).schedule_linear())
    k = from_ast(sink)
    tiles = {0: (2, 4), 1: (1, 4), 2: (1, 4)} if what == "matmul" else {0: (2, 1), 2: (1, 4), 5: (1, 3)}
    s = _cpu_schedule(k, tiles)
    assert check(k, s, load("cpu")) == []
    be = get("cpu")
    try:
        assert verify(k, s, be).ok                       # our backend computes it right with this schedule
    finally:
        be.close()
    opts, _ = export_beam(sink, s, "CPU", beam=2)
    assert opts and {o.op.name for o in opts} >= {"UPCAST", "UNROLL", "THREAD"}
    with Context(BEAM=2):
        assert list(apply_opts(sink, Device["CPU"].renderer, beam=2).arg.applied_opts) == opts  # read from the cache
        got = f(TT(a), TT(b)).numpy()
    want = a @ b if what == "matmul" else f(TT(a), TT(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_inexpressible_schedules_are_refused(beam_cache):
    from tinygrad import Device
    from superopt.ir.schedule import Level, Schedule, Split
    from superopt.tinygrad_export import to_opts
    [sink] = kernel_asts((TT.empty(16, 8) @ TT.empty(8, 12)).schedule_linear())
    ren = Device["CPU"].renderer
    padded = Schedule(((Split(Level.LOOP, 5), Split(Level.UPCAST, 4)), (Split(Level.LOOP, 12),), (Split(Level.LOOP, 8),)))
    with pytest.raises(ValueError, match="padded"):
        to_opts(sink, padded, ren)
    outer_upcast = Schedule(((Split(Level.UPCAST, 4), Split(Level.LOOP, 4)), (Split(Level.LOOP, 12),), (Split(Level.LOOP, 8),)))
    with pytest.raises(ValueError, match="innermost"):
        to_opts(sink, outer_upcast, ren)


def test_tinygrad_matmul_and_conv_tune_and_verify_on_cpu(tmp_path, capsys):
    from superopt.cli import main
    from superopt.engine import tune as tune_kernel
    for name, t in (("matmul", TT.empty(64, 48) @ TT.empty(48, 32)),
                    ("conv", TT.empty(2, 4, 10, 10).conv2d(TT.empty(8, 4, 3, 3), padding=1))):
        [sink] = kernel_asts(t.schedule_linear())
        k = from_ast(sink, name)
        m = tune_kernel(k, "cpu", budget_s=2)
        assert m.verified and m.measured_s > 0, m.reason
        p = tmp_path / f"{name}.pkl"
        p.write_bytes(pickle.dumps(sink))
        assert main(["tune", str(p), "--json"]) == 0       # the CLI takes the tinygrad pickle directly
        out = capsys.readouterr().out
        assert f'"kernel": "{k.key}"' in out and '"verified": true' in out


def test_capture_tinygrad_program_counts_kernels(tmp_path, capsys):
    from superopt.capture import read_manifest
    from superopt.cli import main
    from superopt.tinygrad_import import capture_tinygrad
    x = TT(rng.standard_normal((8, 16)).astype(np.float32)).realize()
    w = TT(rng.standard_normal((16, 16)).astype(np.float32)).realize()
    with capture_tinygrad(tmp_path / "k") as cap:
        outs = [(x @ w).relu().numpy() for _ in range(3)]
    assert cap.launches == 3 and list(cap.counts.values()) == [3]
    [k] = cap.kernels.values()
    xs, ws = x.numpy(), w.numpy()
    np.testing.assert_allclose(run_by_size(k, [xs, ws]).reshape(8, 16), outs[0], rtol=1e-5, atol=1e-5)
    assert read_manifest(tmp_path / "k")["kernels"][0]["count"] == 3
    script = tmp_path / "tg.py"
    script.write_text("import numpy as np\nfrom tinygrad import Tensor\n"
                      "x = Tensor(np.ones((4, 8), np.float32))\nprint(x.softmax(1).numpy().sum())\n")
    assert main(["capture", str(script), "-o", str(tmp_path / "k2"), "--tinygrad"]) == 0
    assert "captured 3 distinct kernels" in capsys.readouterr().out

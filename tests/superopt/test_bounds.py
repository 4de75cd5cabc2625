"""Bounds proofs of masked loads and gathers (superopt/validate.py ``check_load_bounds``):
a masked load is in bounds where its mask is true, a gather's loaded index is clamped or
masked into range; every shipped kernel passes, hostile ones are refused with one line, also
through the file loader."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from superopt.io import KernelFileError, load_steps, save_kernel
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Axis, Buffer, Kernel
from superopt.ir.node import TRUE, Node, Ops, alu, and_, const, lt, not_, var
from superopt.validate import ValidationError, validate_kernel

N, T, D, V = 16, 6, 4, 10
ROOT = Path(__file__).resolve().parents[2]


def _load(i: int, d: dt.DType, idx: Node, ok: Node = TRUE) -> Node: return Node(Ops.LOAD, d, (idx, ok), i)


def _sum(x: Node, axes: tuple[int, ...]) -> Node: return Node(Ops.REDUCE, x.dtype, (x,), ("sum", axes))


def conv1d(hi_bound: int = N, lo_check: bool = True, n_in: int = N) -> Kernel:
    """out[x] = sum_k in[x + k - 1] with zero padding: the mask is 0 <= x+k-1 < hi_bound."""
    x, k = var(0, N), var(1, 3)
    i = x + k - 1
    ok = lt(i, hi_bound)
    if lo_check: ok = and_(not_(lt(i, 0)), ok)
    body = _sum(_load(0, dt.float32, i, ok), (1,))
    return Kernel("conv1d", (Axis(N), Axis(3, True)), (Buffer("a", dt.float32, (n_in,)),),
                  Buffer("out", dt.float32, (N,)), body, x)


def causal(width: int = N) -> Kernel:
    """out[q] = sum_{j <= q} a[q * width + j] (a causal mask over a square)."""
    q, j = var(0, N), var(1, N)
    ok = lt(j, q + 1)
    body = _sum(_load(0, dt.float32, q * width + j, ok), (1,))
    return Kernel("causal", (Axis(N), Axis(N, True)), (Buffer("a", dt.float32, (N * N,)),),
                  Buffer("out", dt.float32, (N,)), body, q)


def embedding(mode: str, ids: dt.DType = dt.int32, rows: int = V) -> Kernel:
    """out[t, d] = table[ids[t], d]: the id unclamped, clamped, or masked into [0, rows)."""
    t, d = var(0, T), var(1, D)
    tok = _load(0, ids, t)
    if ids is not dt.int32: tok = alu(Ops.CAST, tok, dtype=dt.int32)
    ok = TRUE
    if mode == "clamp":
        tok = alu(Ops.MAX, alu(Ops.NEG, alu(Ops.MAX, alu(Ops.NEG, tok), const(-(rows - 1), dt.int32))), const(0, dt.int32))
    elif mode == "mask":
        ok = and_(not_(lt(tok, 0)), lt(tok, rows))
    body = _load(1, dt.float32, tok * D + d, ok)
    return Kernel("embed", (Axis(T), Axis(D)), (Buffer("ids", ids, (T,)), Buffer("table", dt.float32, (rows * D,))),
                  Buffer("out", dt.float32, (T * D,)), body, t * D + d)


def test_padded_conv_and_causal_mask_pass_and_compute():
    for k in (conv1d(), causal()):
        validate_kernel(k)
    a = np.arange(1, N + 1, dtype=np.float32)
    got = run_kernel(conv1d(), [a]).astype(np.float64)
    ref = np.convolve(np.pad(a.astype(np.float64), 1), np.ones(3), "valid")
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("k, words", [
    (lambda: conv1d(hi_bound=N + 1), "where its mask is true"),       # one past the end
    (lambda: conv1d(lo_check=False), "index range [-1"),               # no lower guard
    (lambda: conv1d(n_in=N - 1), "outside the buffer (15 elements)"),  # buffer too small for the mask
    (lambda: causal(width=N + 1), "where its mask is true"),           # row stride past the square
])
def test_out_of_range_masked_loads_refused(k, words):
    with pytest.raises(ValidationError) as e:
        validate_kernel(k())
    assert words in str(e.value) and "\n" not in str(e.value)


def test_gathers_need_a_clamp_or_a_mask():
    with pytest.raises(ValidationError, match="gather .*not clamped or masked"):
        validate_kernel(embedding("none"))
    with pytest.raises(ValidationError, match="gather"):
        validate_kernel(embedding("none", ids=dt.uint8, rows=V))          # 0..255 > 10 rows
    validate_kernel(embedding("none", ids=dt.uint8, rows=256))            # the dtype bounds it
    for mode in ("clamp", "mask"):
        k = embedding(mode)
        validate_kernel(k)
        ids = np.array([3, -2, 9, 12, 0, 7], dtype=np.int32)
        table = np.arange(V * D, dtype=np.float32)
        got = run_kernel(k, [ids, table]).reshape(T, D)
        pick = np.clip(ids, 0, V - 1) if mode == "clamp" else ids
        ref = np.where(((ids >= 0) & (ids < V))[:, None] | (mode == "clamp"),
                       table.reshape(V, D)[np.clip(pick, 0, V - 1)], 0)
        np.testing.assert_array_equal(got, ref)


def test_never_true_mask_is_never_read():
    x = var(0, N)
    k = Kernel("dead", (Axis(N),), (Buffer("a", dt.float32, (4,)),), Buffer("o", dt.float32, (N,)),
               _load(0, dt.float32, x + 100, and_(lt(x, 3), not_(lt(x, 5)))), x)
    validate_kernel(k)


def test_hostile_files_refused_by_the_loader(tmp_path):
    for i, k in enumerate([conv1d(hi_bound=N + 1), causal(width=N + 1), embedding("none")]):
        for suffix in (".json", ".pkl"):
            p = tmp_path / f"k{i}{suffix}"
            save_kernel(k, p)
            with pytest.raises(KernelFileError) as e:
                load_steps(p)
            assert "\n" not in str(e.value) and "outside the buffer" in str(e.value)


def test_every_shipped_kernel_passes():
    from superopt.kernels import Workload, registry
    from superopt.kernels.suites import all_workloads
    ks = [k for small in (True, False) for w in all_workloads(small=small) for k in w.kernels]
    ks += [k for name in registry.KINDS for k in Workload.make(name).kernels]
    masked = 0
    for k in ks:
        validate_kernel(k)
        masked += sum(ld.src[1] is not TRUE for ld in k.loads)
    assert masked >= 20          # the masked loads of convs and attention are really checked
    for p in sorted(glob.glob(str(ROOT / "kernels" / "examples" / "*.*"))):
        if p.endswith((".json", ".pkl")): load_steps(p)

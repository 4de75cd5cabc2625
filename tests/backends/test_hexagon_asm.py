"""The hvx_gemm family end to end on the Hexagon backend: int8 GEMM and NHWC convolutions
(3x3, 5x5, 1x1, stride 2, padding, requantized output) as solver-packed HVX assembly,
legal for llvm-mc, bit-exact under qemu against numpy, counted by qemu's c20."""
import shutil

import numpy as np
import pytest

from superopt.backends.hexagon import HexagonBackend, asm_gemm, tools
from superopt.engine.measure import measure
from superopt.ir import dtypes as dt, hvx
from superopt.ir.lower import lower
from superopt.kernels.registry import Workload
from superopt.search.families import hvx as fam

I8 = dt.int8
needs_tools = pytest.mark.skipif(tools.find_tools() is None or asm_gemm.check_packets("") == "llvm-mc not found",
                                 reason="clang, ld.lld, qemu-hexagon and llvm-mc needed")


def _conv(**kw):
    p = dict(N=1, C=8, H=6, W=6, K=32, R=3, S=3, stride=1, pad=1, layout="nhwc", dtype=I8)
    p.update(kw)
    return Workload.make("conv2d", **p)


CASES = {
    "gemm": lambda: Workload.make("matmul", M=4, N=64, K=32, dtype=I8),
    "3x3": lambda: _conv(H=4, W=4),
    "5x5": lambda: _conv(C=4, H=7, W=7, R=5, S=5, pad=2),
    "7x7": lambda: _conv(C=8, H=4, W=4, R=7, S=7, pad=3),
    "1x1": lambda: _conv(C=32, H=4, W=4, K=64, R=1, S=1, pad=0),
    "3x3 stride 2": lambda: _conv(H=9, W=9, stride=2),
    "3x3 stride 2 no pad": lambda: _conv(H=9, W=9, stride=2, pad=0),
    "5x5 stride 2": lambda: _conv(C=16, H=11, W=9, R=5, S=5, stride=2, pad=2),   # 6 x 5 outputs
    "requant": lambda: Workload.make("qconv2d", N=1, C=8, H=5, W=5, K=32, R=3, S=3, stride=1, pad=1),
    "requant 4x4": lambda: Workload.make("qconv2d", N=1, C=8, H=4, W=4, K=32, R=3, S=3, stride=1, pad=1),
    "requant 64": lambda: Workload.make("qconv2d", N=1, C=8, H=4, W=4, K=64, R=3, S=3, stride=1, pad=1),
}


def test_prepack_layout():
    g = hvx.match(CASES["gemm"]().kernel)
    w = np.arange(32 * 64).astype(np.int8)                      # B[k][n] = w[k*64 + n]
    p = asm_gemm.prepack(g, w).reshape(2, 8, 32, 4)            # [N/32][K/4][lane][k]
    assert p[1, 1, 3, 2] == np.uint8(int(w[(1 * 4 + 2) * 64 + 32 + 3]) + 128)


def test_body_keeps_multipliers_and_loads_within_the_rules():
    pk = fam.packets(fam.body(4, 2))
    assert sum(map(len, pk)) == len(fam.body(4, 2))
    assert all(sum("vrmpy" in t for t in p) <= 2 for p in pk)   # one multiplier each, two a packet
    assert all(sum("vmem" in t for t in p) <= 1 for p in pk)    # one HVX load a packet
    assert len(pk) == (4 * 2 + 4) // 2                          # 12 vrmpy: the multipliers bound it


def _measured(work, s, be):
    """Verified on the workload's full-range inputs (int8 -128..127; a qconv's bias and
    multiplier ranges) and on the special sets, then counted."""
    m = measure(work.kernel, s, be, "z3", seed=3, inputs=work.random_inputs(3))
    assert m.verified, m.reason
    return m


@needs_tools
def test_solved_pick_end_to_end():
    """solve -> lower -> the backend's template -> qemu, bit-exact, llvm-mc on every packet."""
    work = CASES["3x3"]()
    be = HexagonBackend()
    solved = fam.FAMILY.solve(work.kernel, be.machine, timeout_s=30, top=1)
    s = solved.candidates[0].schedule
    g, p = hvx.match(work.kernel), dict(s.params)
    assert "hvx_kernel" in be.render(lower(work.kernel, s, be.machine))
    assert asm_gemm.check_packets(asm_gemm.emit(g, p)) is None
    _check_counts(g, p, _measured(work, s, be).extra)


@needs_tools
@pytest.mark.parametrize("name, params", [
    ("gemm", dict(rows=4, blocks=2, corr=0, unroll=1, fuse=0, late=0)), ("gemm", dict(rows=2, blocks=2, corr=1, unroll=2, fuse=0, late=0)),
    ("3x3", dict(rows=4, blocks=1, corr=0, unroll=1, fuse=0, late=0)), ("3x3", dict(rows=4, blocks=1, corr=1, unroll=2, fuse=0, late=0)),
    ("5x5", dict(rows=7, blocks=1, corr=0, unroll=1, fuse=0, late=0)), ("7x7", dict(rows=4, blocks=1, corr=1, unroll=2, fuse=0, late=0)),
    ("1x1", dict(rows=4, blocks=2, corr=0, unroll=1, fuse=0, late=0)), ("1x1", dict(rows=4, blocks=2, corr=1, unroll=2, fuse=0, late=0)),
    ("3x3 stride 2", dict(rows=5, blocks=1, corr=1, unroll=1, fuse=0, late=0)), ("3x3 stride 2 no pad", dict(rows=4, blocks=1, corr=0, unroll=1, fuse=0, late=0)),
    ("requant", dict(rows=5, blocks=1, corr=0, unroll=1, fuse=0, late=0)), ("requant", dict(rows=5, blocks=1, corr=1, unroll=2, fuse=0, late=0)),
    ("requant 4x4", dict(rows=4, blocks=1, corr=1, unroll=2, fuse=1, late=0)), ("requant 4x4", dict(rows=8, blocks=1, corr=1, unroll=1, fuse=1, late=0)),
    ("requant 64", dict(rows=2, blocks=2, corr=1, unroll=2, fuse=1, late=0)),
    ("3x3", dict(rows=8, blocks=1, corr=1, unroll=2, fuse=0, late=1)), ("gemm", dict(rows=4, blocks=2, corr=1, unroll=2, fuse=0, late=1)),
    ("3x3 stride 2", dict(rows=5, blocks=1, corr=1, unroll=2, fuse=0, late=1)),
    ("5x5 stride 2", dict(rows=5, blocks=1, corr=1, unroll=2, fuse=0, late=1)),   # correction rows at odd offsets
    ("requant 4x4", dict(rows=4, blocks=1, corr=1, unroll=2, fuse=1, late=1))])
def test_bit_exact_under_qemu_and_counted(name, params):
    work = CASES[name]()
    be = HexagonBackend()
    s = fam.schedule(work.kernel, **params)
    assert not fam.FAMILY.legal(work.kernel, s, be.machine)
    g = hvx.match(work.kernel)
    assert asm_gemm.check_packets(asm_gemm.emit(g, params)) is None   # every packet legal (v66 HVX-128)
    _check_counts(g, params, _measured(work, s, be).extra)


def _check_counts(g, p, counted):
    kernel_only = fam.modeled_packets(g, p) - fam.pad_packets(g) - (fam.corr_packets(g) if p["corr"] else 0) \
        - fam.requant_packets(g, p)
    assert counted["packets"] >= kernel_only                     # the assembly is exactly the model's packets
    assert counted["hvx_instructions"] >= fam.macs(g) // 128     # at least one vrmpy per 128 MACs


def test_illegal_packet_rejected():
    if asm_gemm.check_packets("") == "llvm-mc not found": pytest.skip("llvm-mc needed")
    bad = ".text\n{ v0.w += vrmpy(v1.ub,r1.b); v2.w += vrmpy(v1.ub,r1.b); v3.w += vrmpy(v1.ub,r1.b) }\n"
    assert asm_gemm.check_packets(bad) is not None

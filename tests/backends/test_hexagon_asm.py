"""int8 GEMM as solver-packed HVX assembly: legal packets, bit-exact under qemu, counted."""
import shutil

import numpy as np
import pytest

from superopt.backends.hexagon import asm_gemm as g
from superopt.backends.hexagon import tools

needs_tools = pytest.mark.skipif(tools.find_tools() is None or shutil.which("llvm-mc") is None,
                                 reason="clang, ld.lld, qemu-hexagon and llvm-mc needed")


def test_prepack_layout():
    b = np.arange(8 * 64, dtype=np.int64).reshape(8, 64).astype(np.int8)
    p = g.prepack_b(b).reshape(2, 2, 32, 4)          # [N/32][K/4][lane][k]
    assert p[1, 1, 3, 2] == np.uint8(int(b[1 * 4 + 2, 32 + 3]) + 128)


def test_body_uses_two_vrmpy_per_packet_at_most():
    pk, res = g.pack_body(g.Blocking(2, 2))
    assert sum(len(p) for p in pk) == len(g.body_instrs(g.Blocking(2, 2)))
    assert all(sum("vrmpy" in t for t in p) <= 2 for p in pk)
    assert len(pk) >= 2                               # 4 vrmpy, one multiplier each, two per packet


@needs_tools
@pytest.mark.parametrize("bl", [g.Blocking(4, 2), g.Blocking(2, 1)])
def test_gemm_asm_bit_exact_and_counted(bl):
    m, n, k = 32, 64, 64
    pk, _ = g.pack_body(bl)
    asm = g.emit_asm(bl, m, n, k, pk)
    assert g.check_packets(asm) is None               # every emitted packet legal for v66 HVX-128
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    r = g.run(a, b, asm)
    assert not isinstance(r, tools.Failure), r
    c, cnt = r
    assert (c == a.astype(np.int64) @ b.astype(np.int64)).all()
    modeled = g.modeled_packets(bl, m, n, k, len(pk))
    assert cnt[0] >= modeled                          # the model ignores stalls and the call itself
    assert cnt[2] >= (m * n * k) // 128               # at least one vrmpy per 32x4 MACs


def test_illegal_packet_rejected():
    if shutil.which("llvm-mc") is None: pytest.skip("llvm-mc needed")
    bad = ".text\n{ v0.w += vrmpy(v1.ub,r1.b); v2.w += vrmpy(v1.ub,r1.b); v3.w += vrmpy(v1.ub,r1.b) }\n"
    assert g.check_packets(bad) is not None

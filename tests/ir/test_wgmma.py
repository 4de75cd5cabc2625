"""wgmma geometry (ir/wgmma.py): descriptors encoded bit for bit as the PTX ISA's "Matrix
Descriptor Format" lays them out, the swizzled panel layout equal to the hardware's XOR
swizzle of byte addresses, the emulator's descriptor decoding selecting exactly the
elements the layout stored, and the legality check."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from superopt.backends.emu.wgmma import acc_coords, element_addresses
from superopt.ir import tensorcore as tcm
from superopt.ir import wgmma as wg
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.kernels.registry import Workload
from superopt.search.machine import H100, host_cpu, nvidia_at
from superopt.search.wgmma_space import make


def test_descriptor_fields_by_hand():
    # start 0x400 >> 4 = 0x40 in bits 0-13; LBO 128 >> 4 = 8 in bits 16-29; SBO 256 >> 4 = 16 in 32-45
    assert wg.encode(0x400, 128, 256, 0) == 0x0000_0010_0008_0040
    # 128B swizzle (mode 1 in bits 62-63), LBO 16 ("unused, 1"), SBO 1024 = 64 << 4
    assert wg.encode(0, 16, 1024, 1) == 0x4000_0040_0001_0000
    # 64B = mode 2, 32B = mode 3; start 0x3FFF0 is the largest 16-byte address of the 14-bit field
    assert wg.encode(0x3FFF0, 0, 512, 2) == 0x8000_0020_0000_3FFF
    assert wg.encode(0, 0, 256, 3) >> 62 == 3
    assert wg.encode(0, 0, 0, 0, base_offset=5) == 5 << 49
    for d in (wg.encode(0x1230, 8192, 1024, 1), wg.encode(0x40, 16, 512, 2, 3)):
        start, lbo, sbo, base, mode = wg.decode(d)
        assert wg.encode(start, lbo, sbo, mode, base) == d
    with pytest.raises(ValueError): wg.encode(8, 16, 16, 1)        # not a 16-byte multiple
    with pytest.raises(ValueError): wg.encode(1 << 18, 16, 16, 1)  # past the 18-bit shared window
    with pytest.raises(ValueError): wg.encode(0, 16, 16, 4)


@pytest.mark.parametrize("width", [16, 32, 64, 128, 256])
def test_panel_layout_is_the_hardware_swizzle(width):
    rows = 16
    p = wg.panel(width)
    mode = wg.MODE[p]
    seen = set()
    for r in range(rows):
        for c in range(width):
            off = wg.smem_offset(r, c, rows, width)
            seen.add(off)
            # unswizzled byte address inside the panel, then the 128B/64B/32B XOR of bits 4.. by bits 7..
            plain = (c // p) * rows * p * 2 + r * 2 * p + (c % p) * 2
            mask = wg.swizzle_width(mode) // 16 - 1
            assert 2 * off == plain ^ (((plain >> 7) & mask) << 4), (r, c)
    assert seen == set(range(rows * width))


@pytest.mark.parametrize("k_major", [False, True])
@pytest.mark.parametrize("width,rows", [(16, 64), (32, 64), (64, 64), (128, 32), (256, 16), (64, 128)])
def test_decoded_descriptors_select_the_stored_elements(k_major, width, rows):
    """For every wgmma of a tile (each 16-deep K step x each slice of the outer axis), the
    emulator's decoding of the descriptor lands on the elements the layout put there."""
    op = tcm.Operand(0, None, 0, k_major)
    d = wg.operand_desc(op, rows, width)
    assert d.trans == k_major
    K, outer = (rows, width) if k_major else (width, rows)   # the tile in its global orientation
    slice_ = wg.panel(width) if k_major else 8                 # MN-major slices whole panels
    for o0 in range(0, outer, max(slice_, 8)):
        for k0 in range(0, K, 16):
            n = min(64, outer - o0) if not k_major else wg.panel(width)
            start = 2 * wg.operand_start(op, rows, width, o0, k0)
            got = element_addresses(d.fields | (start >> 4), n, d.trans)
            for i in range(n):
                for kk in range(16):
                    r, c = (k0 + kk, o0 + i) if k_major else (o0 + i, k0 + kk)
                    assert got[i, kk] == 2 * wg.smem_offset(r, c, rows, width), (o0, k0, i, kk)


def test_accumulator_layout_covers_the_tile_once():
    for n in (16, 64, 256):
        r, c = acc_coords(n)
        assert r.shape == (128, n // 2)
        assert sorted(zip(r.ravel(), c.ravel())) == [(i, j) for i in range(64) for j in range(n)]
    r, c = acc_coords(8 * 2)
    # thread 37 = warp 1, lane 5 (group 1, t 1): element 5 is row 16+1, col 8+2+1; element 6 row 16+1+8, col 8+2
    assert (r[37, 5], c[37, 5], r[37, 6], c[37, 6]) == (17, 11, 25, 10)


def _mm(M=128, N=128, K=64, dtype="float16"):
    return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]


def test_check_accepts_legal_and_rejects_illegal_wgmma_schedules():
    k = _mm()
    m = tcm.match(k)
    s = make(k, m, 128, 128, 64, 2, 1, 3)
    assert check(k, s, H100) == []
    assert Schedule.from_json(s.to_json()) == s
    assert any("sm_90" in e for e in check(k, s, nvidia_at(H100, 80)))
    assert any("GPUs only" in e for e in check(k, s, host_cpu()))
    bad_layout = replace(s, staging=(replace(s.staging[0], pad=8), s.staging[1]))
    assert any("descriptor needs layout" in e for e in check(k, bad_layout, H100))
    not_groups = s.with_axis(m.m, (Split(Level.THREAD, 2), Split(Level.UPCAST, 64)))   # 2 warps along M
    assert any("warpgroups of 4" in e for e in check(k, not_groups, H100))
    assert any("accumulators" in e for e in check(_mm(N=256), make(_mm(N=256), tcm.match(_mm(N=256)), 128, 256, 64, 1, 1, 2), H100))
    assert any("bf16" in e or "bfloat16" in e for e in check(_mm(dtype="bfloat16"), replace(s), H100))
    assert any("shared memory" in e for e in check(_mm(K=512), make(_mm(K=512), tcm.match(_mm(K=512)), 128, 128, 256, 2, 1, 4), H100))
    # an MN-major B slice (64-wide panels) split between two warpgroups of 32 columns
    k2 = _mm(N=64)
    assert any("splits a 64-wide panel" in e for e in check(k2, make(k2, tcm.match(k2), 64, 64, 64, 1, 2, 1), H100))

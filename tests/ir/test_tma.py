"""TMA copies of wgmma operands (ir/tma.py, ``Staging.tma``): the tensor-map geometry of
GEMM and batched-GEMM operands, the boxes of a stage, the schedule's JSON round trip and
the legality check's reasons."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from superopt import Tensor
from superopt.ir import tensorcore as tcm
from superopt.ir import tma
from superopt.ir import wgmma as wg
from superopt.ir.kernelize import kernelize
from superopt.ir.node import const
from superopt.ir.schedule import Schedule, check
from superopt.kernels.registry import Workload
from superopt.search.machine import H100, nvidia_at
from superopt.search.tc_space import make as make_mma
from superopt.search.wgmma_space import make


def _gemm(kind="matmul", M=128, N=256, K=128, dtype="float16", batch=2):
    if kind == "matmul": return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]
    return Workload.make("bmm", B=batch, M=M, N=N, K=K, b_layout=kind[4:], dtype=dtype).kernels[0]


def _views(k, s):
    m, t = tcm.match_tc(k, s.tensor_core), tcm.tiles(k, s, H100.warp)
    return [tma.view(k, m, t, op) for op in (m.a, m.b)]


def test_matmul_maps_one_box_a_panel():
    k = _gemm(M=128, N=256, K=128)                        # A [M,K] K-major, B [K,N] MN-major
    s = make(k, tcm.match(k), 128, 256, 64, 2, 1, 3, tma=True)
    assert check(k, s, H100) == []
    va, vb = _views(k, s)
    # A: dims (K, M), the tile 128 rows x 64 K: one 128-byte panel, one box
    assert (va.map.dims, va.map.strides, va.map.box, va.map.swizzle, va.map.offset) == ((128, 128), (1, 128), (64, 128), 128, 0)
    # B: dims (N, K), the tile 64 K rows x 256 N: four 64-wide panels, one box each
    assert (vb.map.dims, vb.map.strides, vb.map.box, vb.map.swizzle) == ((256, 128), (1, 256), (64, 64), 128)
    mt = tcm.match(k)
    got = tma.boxes(vb, 64, 256, lambda j: {mt.n: const(512 + 64 * j, tcm.dt.int32), mt.k: const(64, tcm.dt.int32)})
    assert [off for off, _ in got] == [0, 4096, 8192, 12288]            # a panel is 64 rows x 64 elements
    assert [tuple(c.arg for c in coords) for _, coords in got] == [(512, 64), (576, 64), (640, 64), (704, 64)]


@pytest.mark.parametrize("kind,dims,strides", [("bmm_nk", (64, 128, 2), (1, 64, 128 * 64)),   # B [b,N,K]: K-major
                                               ("bmm_kn", (128, 64, 2), (1, 128, 64 * 128))])  # B [b,K,N]: MN-major
def test_batched_operands_are_rank3_maps(kind, dims, strides):
    k = _gemm(kind, M=64, N=128, K=64)
    s = make(k, tcm.match(k), 64, 128, 32, 1, 1, 2, tma=True)
    assert check(k, s, H100) == []
    _, vb = _views(k, s)
    assert (vb.map.dims, vb.map.strides) == (dims, strides) and vb.map.rank == 3 and vb.map.box[2] == 1
    b = tcm.match(k).batch[0]
    assert vb.dims[2] == (b,) and vb.offsets == (0, 0, 0)
    mt, zero = tcm.match(k), const(0, tcm.dt.int32)
    got = tma.boxes(vb, *tcm.tile_shape(mt.b, 128, 32), lambda j: {mt.n: zero + 64 * j, mt.k: zero, b: const(1, tcm.dt.int32)})
    assert len(got) == (2 if kind == "bmm_kn" else 1)                 # MN-major: 128 columns are two 64-wide panels
    assert all(coords[2].arg == 1 for _, coords in got)               # the block's batch index


@pytest.mark.parametrize("width,span", [(16, 32), (32, 64), (64, 128), (256, 128)])
def test_swizzle_span_is_the_panel_row(width, span):
    assert tma.swizzle_span(width) == span == 2 * wg.panel(width)


def test_json_round_trip_and_unchanged_json_without_tma():
    k = _gemm()
    plain = make(k, tcm.match(k), 128, 256, 64, 2, 1, 3)
    s = make(k, tcm.match(k), 128, 256, 64, 2, 1, 3, tma=True)
    assert Schedule.from_json(s.to_json()) == s and Schedule.from_json(plain.to_json()) == plain
    assert [x.get("tma") for x in s.to_dict()["staging"]] == [True, True]
    assert "tma" not in plain.to_json()                              # schedules without TMA keep their JSON
    assert s.to_dict()["version"] == plain.to_dict()["version"] == 1
    d = s.to_dict()
    d["staging"][0]["tma"] = "yes"
    with pytest.raises(ValueError, match="tma"):
        Schedule.from_dict(d)
    assert " tma" in s.describe(k) and " tma" not in plain.describe(k)
    assert json.loads(s.to_json())["staging"][0]["swizzle"] == 3


def _reasons(k, s, machine=H100) -> str:
    errs = check(k, s, machine)
    assert errs
    return " | ".join(errs)


def test_check_rejects_tma_where_it_cannot_work():
    k = _gemm()
    m = tcm.match(k)
    s = make(k, m, 128, 256, 64, 2, 1, 3, tma=True)
    # not sm_90, not wgmma
    assert "sm_90" in _reasons(k, s, nvidia_at(H100, 80))
    mma = make_mma(k, m, 128, 128, 32, 4, 2, 3)
    mma = replace(mma, staging=tuple(replace(x, tma=True) for x in mma.staging))
    assert "feed wgmma schedules only" in _reasons(k, mma)
    # a box of 512 rows (four warpgroups along M, two m64 tiles each)
    big = _gemm(M=512, N=64, K=64)
    assert "512 rows" in _reasons(big, make(big, tcm.match(big), 512, 64, 64, 4, 1, 1, tma=True))
    # B [K, N] with N = 68: rows of 136 bytes, not a 16-byte multiple
    odd = _gemm(M=64, N=68, K=64)
    assert "strides 136 bytes" in _reasons(odd, make(odd, tcm.match(odd), 64, 64, 64, 1, 1, 1, tma=True))
    # shared memory counts the stages' mbarriers
    assert s.stages * wg.MBAR_BYTES > 0 and not check(k, s, replace(H100, smem_per_block=3 * (128 * 64 + 64 * 256) * 2 + 1024 + 24))
    assert "shared memory" in _reasons(k, replace(s), replace(H100, smem_per_block=3 * (128 * 64 + 64 * 256) * 2 + 1024 + 23))


def _strided_gemm(step: int, offset: int, M=64, N=64, K=64, row: int = 0):
    """x[:, offset::step][:, :K] @ w: A read with stride ``step`` along K from element
    ``offset`` of rows of ``row`` elements (default: just enough)."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((M, row or K * step + offset)).astype(np.float16))
    w = Tensor(rng.standard_normal((K, N)).astype(np.float16))
    a = x.shrink(((0, M), (offset, offset + K * step)))
    if step > 1: a = a.reshape(M, K, step).shrink(((0, M), (0, K), (0, 1))).reshape(M, K)
    (st,) = kernelize((a @ w).node)
    return st.kernel


def test_check_rejects_strided_and_misaligned_operands():
    k = _strided_gemm(2, 0)                      # A along K every other element: no contiguous tile row
    s = make(k, tcm.match(k), 64, 64, 64, 1, 1, 1, tma=True)
    assert "not contiguous" in _reasons(k, s)
    k = _strided_gemm(1, 1, K=64)                # A from element 1 of rows of 65 elements: 130-byte rows
    s = make(k, tcm.match(k), 64, 64, 64, 1, 1, 1, tma=True)
    assert "input 0: TMA copy impossible: a dimension strides 130 bytes" in _reasons(k, s)
    k = _strided_gemm(1, 1, K=64, row=72)        # rows of 144 bytes, but the first element at byte 2
    s = make(k, tcm.match(k), 64, 64, 64, 1, 1, 1, tma=True)
    assert "first element is not 16-byte aligned" in _reasons(k, s)
    s = replace(s, staging=(replace(s.staging[0], tma=False), s.staging[1]))   # B alone by TMA: legal
    assert check(k, s, H100) == []


def _conv(layout: str, **p):
    q = dict(N=2, C=64, H=8, W=56, K=64, R=3, S=3, stride=1, pad=1)
    return Workload.make("conv2d", layout=layout, dtype="float16", **{**q, **p}).kernels[0]


def _conv_schedule(k, ext, view_m=None):
    """A wgmma schedule of ``k`` over the GEMM view with M along ``view_m`` (default: the
    output column), flattened over the other pixel axes as ``ext`` says (outer -> inner)."""
    from superopt.search import tc_space
    import math
    m0 = next(v for v in tc_space.orientations(k) if view_m is None or v.m == view_m)
    m = next(m for m, e in tc_space.m_tilings(k, m0) if e == ext)
    return m, make(k, m, math.prod(ext), 64, 64, math.prod(ext) // 64, 1, 2, ext, tma=True)


def test_nhwc_conv_operands_are_windowed_boxes():
    k = _conv("nhwc")                      # x (N,H,W,C), w (K,R,S,C): both K-major along C
    m, s = _conv_schedule(k, (2, 64))      # M: 2 output rows x 64 columns (56 + 8 padded)
    assert check(k, s, H100) == []
    va, vb = _views(k, s)
    oh, ow = m.m_axes[-2:]
    ky, kx = m.window
    # A: dims (C, W, H, N) with the padding's -1 on the pixel dimensions, box 64 C x 64 columns x 2 rows
    assert (va.map.dims, va.map.strides, va.map.box, va.map.offset) == ((64, 56, 8, 2), (1, 64, 56 * 64, 8 * 56 * 64), (64, 64, 2, 1), 0)
    assert va.dims[1] == tuple(sorted((ow, kx))) and va.dims[2] == tuple(sorted((oh, ky))) and va.offsets == (0, -1, -1, 0)
    # B (K, R, S, C): dims (C, S, R, K), the window's of one element a box
    assert vb.map.strides == (1, 64, 3 * 64, 9 * 64) and vb.map.box == (64, 1, 1, 64) and vb.offsets == (0, 0, 0, 0)
    z = const(0, tcm.dt.int32)
    at = {a: z for a in range(len(k.axes))}
    (off, coords), = tma.boxes(va, 128, 64, lambda j: {**at, oh: z + 6, ky: z + 2, ow: z, kx: z})
    assert off == 0 and [c.arg for c in coords] == [0, -1, 7, 0]     # column -1 and rows 7, 8: outside (zeros)


def test_nchw_conv_operands_are_not_boxes():
    """The NCHW input moves along its contiguous column by the filter column (``x + kx - 1``):
    boxes off 16-byte boundaries, which faulted on the H100; the filter (K,C,R,S) is not
    contiguous along C."""
    k = _conv("nchw")
    m, s = _conv_schedule(k, (2, 64), view_m=3)
    errs = check(k, s, H100)
    assert len(errs) == 2 and f"input {m.a.input}: TMA copy impossible: axes" in errs[0] and "by single elements" in errs[0]
    assert errs[1] == f"input {m.b.input}: TMA copy impossible: axis {m.k} (the tile's rows) is not contiguous in memory"


def test_check_rejects_masks_tma_cannot_reproduce():
    import math
    k = _conv("nhwc", stride=2, H=16, W=16)  # the mask bounds 2*y + ky: no dimension's own bounds
    from superopt.search import tc_space
    m, ext = next((m, e) for m, e in tc_space.m_tilings(k, tcm.match(k)) if math.prod(e) == 64)
    s = make(k, m, 64, 64, 16, 1, 1, 2, ext, tma=True)
    assert "TMA copy impossible" in _reasons(k, s)

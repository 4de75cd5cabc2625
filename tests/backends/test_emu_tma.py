"""TMA (bulk tensor copies) with mbarriers feeding wgmma (sm_90a) end to end: lower -> emu
against the interpreter (matmul, bmm with B [K,N] and [N,K], fp16 and bf16, 1-5 stages,
padded M and N read as zeros outside the tensor, one operand by TMA and the other by
cp.async or element copies), the emulator's box copy and swizzle against a plain loop,
the emulator catching a wrong parity, a missing wait or init, a wrong byte count and a
wrong swizzle, the CUDA source holding the PTX and compiling for sm_90a without spills,
the cuTensorMapEncodeTiled arguments as data, and on a GPU the kernels computing numpy's
answer (skipped without one)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.cuda import tma as cuda_tma
from superopt.backends.cuda.render import render
from superopt.backends.emu import run_program
from superopt.backends.emu import tma as emu_tma
from superopt.backends.emu.executor import EmuError
from superopt.ir import tensorcore as tcm
from superopt.ir.lower import lower
from superopt.ir.program import MbarArriveTx, MbarInit, MbarWait, TensorMap, TmaLoad, tensor_maps
from superopt.ir.schedule import check
from superopt.search.machine import H100
from superopt.search.wgmma_space import make
from gemm_cases import (close16, emu_values as _emu, gemm_kernel, normal_inputs as _inputs,  # noqa: E402 - same folder
                        gpu_values, gpu_wrong, mutate as _mutate, reference_values as _ref,
                        wgmma_shapes)


def _schedule(k, bm, bn, bk, wgm, wgn, stages, which=(0, 1)):
    """The wgmma schedule with operands ``which`` (0: A, 1: B) copied by TMA."""
    s = make(k, tcm.match(k), bm, bn, bk, wgm, wgn, stages)
    s = replace(s, staging=tuple(replace(x, tma=i in which) for i, x in enumerate(s.staging)))
    errs = check(k, s, H100)
    assert not errs, errs
    return s





CASES = [  # kind, dtype, M, N, K, bm, bn, bk, wgm, wgn, stages, TMA operands
    ("matmul", "float16", 64, 64, 32, 64, 64, 32, 1, 1, 1, (0, 1)),       # one stage: phase parity flips every step
    ("matmul", "bfloat16", 128, 256, 128, 128, 256, 64, 2, 1, 3, (0, 1)),  # 4 boxes of B (MN-major panels)
    ("bmm_nk", "float16", 64, 128, 128, 64, 128, 64, 1, 1, 3, (0, 1)),    # rank-3 maps
    ("bmm_nk", "bfloat16", 128, 64, 64, 128, 64, 16, 1, 1, 2, (0, 1)),    # 32-byte swizzle
    ("bmm_kn", "float16", 128, 128, 64, 128, 128, 32, 1, 2, 2, (0, 1)),   # 64-byte swizzle of A
    ("matmul", "float16", 96, 64, 64, 64, 64, 64, 1, 1, 2, (0, 1)),       # M padded: rows past 96 read as zeros
    ("matmul", "float16", 64, 200, 64, 64, 64, 32, 1, 1, 3, (0, 1)),      # N padded to 256: columns past 200 zeros
    ("matmul", "float16", 64, 64, 256, 64, 64, 32, 1, 1, 4, (0, 1)),      # 4 stages: 3 tiles ahead (no wgmma group kept in flight)
    ("bmm_nk", "bfloat16", 64, 64, 256, 64, 64, 16, 1, 1, 5, (0, 1)),     # 5 stages, 3 tiles ahead
    ("matmul", "float16", 128, 128, 128, 128, 128, 64, 2, 1, 3, (0,)),    # A by TMA, B by cp.async
    ("bmm_kn", "bfloat16", 64, 128, 128, 64, 128, 32, 1, 1, 4, (1,)),     # B by TMA, A by cp.async
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}-s{c[10]}-tma{''.join(map(str, c[11]))}" for c in CASES])
def test_tma_gemms_match_the_interpreter(case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages, which = case
    k = gemm_kernel(kind, d, M, N, K)
    s = _schedule(k, bm, bn, bk, wgm, wgn, stages, which)
    ins = _inputs(k)
    p = lower(k, s, H100)
    r, got = _emu(p, ins, k)
    assert r.written.all() and close16(got, _ref(k, ins), d), p.describe()
    assert r.counters.races == 0
    assert r.counters.bank_conflicts == 0 and r.counters.instructions["st.shared.tma"] > 0
    batch = k.axes[0].size if kind != "matmul" else 1
    blocks = -(-M // bm) * -(-N // bn) * batch
    m = tcm.match(k)
    panels = sum(max(1, tcm.tile_shape(op, outer, bk)[1] // 64) for i, (op, outer) in enumerate(((m.a, bm), (m.b, bn)))
                 if i in which)
    assert r.counters.instructions["tma"] == blocks * panels * (K // bk)     # one box a panel a step
    assert r.counters.instructions["wgmma"] == blocks * wgn * (bm // 64) * (K // 16)


def test_one_operand_by_tma_the_other_by_element_copies():
    """A read from rows of 72 elements at element 1 (not 16-byte aligned: element copies),
    B by TMA."""
    from superopt import Tensor
    from superopt.ir.kernelize import kernelize
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((64, 72)).astype(np.float16))
    w = Tensor(rng.standard_normal((64, 128)).astype(np.float16))
    (step,) = kernelize((x.shrink(((0, 64), (1, 65))) @ w).node)
    k = step.kernel
    s = make(k, tcm.match(k), 64, 128, 32, 1, 1, 2)
    s = replace(s, staging=(s.staging[0], replace(s.staging[1], tma=True)))
    assert check(k, s, H100) == [] and tcm.match(k).a.vec == 1
    ins = _inputs(k, 1)
    r, got = _emu(lower(k, s, H100), ins, k)
    assert r.written.all() and close16(got, _ref(k, ins), "float16") and r.counters.races == 0


def test_tma_programs_keep_no_wgmma_group_in_flight():
    """Where the same tiles copied by threads keep a group in flight, TMA ones wait for
    every group (kept in flight they summed wrongly on the H100: ir/lower_wgmma.wgmma_in_flight)."""
    from superopt.ir.program import WgmmaWait, walk
    k = gemm_kernel("matmul", "float16", 256, 256, 512)
    threads = lower(k, make(k, tcm.match(k), 64, 128, 32, 1, 1, 4), H100)
    assert 1 in [x.pending for x in walk(threads.body) if isinstance(x, WgmmaWait)]
    for which in ((0, 1), (0,), (1,)):
        p = lower(k, _schedule(k, 64, 128, 32, 1, 1, 4, which), H100)
        assert {x.pending for x in walk(p.body) if isinstance(x, WgmmaWait)} == {0}


@st.composite
def tma_case(draw):
    which = draw(st.sampled_from([(0, 1), (0,), (1,)]))
    return *draw(wgmma_shapes(n_tiles=2, k_steps=4, max_stages=4)), which


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(tma_case(), st.integers(0, 2**31 - 1))
def test_random_tma_schedules_match_the_interpreter(case, seed):
    d, kind, M, N, K, bm, bn, bk, wgm, wgn, stages, which = case
    k = gemm_kernel(kind, d, M, N, K)
    s = make(k, tcm.match(k), bm, bn, bk, wgm, wgn, stages)
    s = replace(s, staging=tuple(replace(x, tma=i in which) for i, x in enumerate(s.staging)))
    assume(not check(k, s, H100))   # e.g. an MN-major B slice narrower than its panel
    ins = _inputs(k, seed)
    r, got = _emu(lower(k, s, H100), ins, k, max_blocks=4)
    ref = _ref(k, ins)
    assert close16(got[r.written], ref[r.written], d) and r.counters.races == 0 and r.counters.bank_conflicts == 0


# ---- the emulator's copy semantics ------------------------------------------------------
def test_box_elements_against_a_plain_loop():
    m = TensorMap(0, 8, (40, 20, 3), (1, 48, 48 * 20), (16, 8, 1), 32)   # origin 8, rows of 48 elements
    coords = np.array([[32, 15, 1], [-8, 0, 2]])                       # both partly outside the tensor
    g, ok = emu_tma.box_elements(m, coords)
    for n, c in enumerate(coords):
        for e, (y, x) in enumerate((y, x) for y in range(8) for x in range(16)):   # row-major, dimension 0 fastest
            at = (c[0] + x, c[1] + y, c[2])
            inside = all(0 <= a < dim for a, dim in zip(at, m.dims))
            assert ok[n, e] == inside and (not inside or g[n, e] == 8 + at[0] + 48 * at[1] + 960 * at[2])


@pytest.mark.parametrize("width", [16, 32, 64])
def test_a_swizzled_box_lands_where_the_wgmma_layout_puts_the_panel(width):
    """Box element (column c, row r) of a ``width``-wide panel at a 1024-byte aligned
    address lands at the element ``ir.wgmma.smem_offset`` gives (checked against the
    hardware's descriptor swizzle in tests/ir/test_wgmma.py)."""
    from superopt.ir import wgmma as wg
    rows, base = 64, 3 * 1024
    e = np.arange(rows * width)
    landed = (emu_tma.swizzle(base + 2 * e, 2 * width) - base) // 2
    want = [wg.smem_offset(int(i) // width, int(i) % width, rows, width) for i in e]
    assert landed.tolist() == want


@pytest.fixture(scope="module")
def pipeline():
    k = gemm_kernel("matmul", "float16", 128, 128, 256)
    s = _schedule(k, 128, 128, 64, 2, 1, 3)
    p, ins = lower(k, s, H100), _inputs(k)
    ref = _ref(k, ins)
    r, got = _emu(p, ins, k)
    assert close16(got, ref, "float16") and r.counters.races == 0
    return k, p, ins, ref


def test_a_wrong_parity_passes_before_the_copy_lands(pipeline):
    k, p, ins, ref = pipeline
    flipped = _mutate(p, lambda x: replace(x, parity=(x.parity + 1) % 2) if isinstance(x, MbarWait) else x)
    r, got = _emu(flipped, ins, k)
    assert r.counters.races > 0 and not close16(got, ref, "float16")


def test_a_missing_wait_reads_copies_in_flight(pipeline):
    k, p, ins, ref = pipeline
    r, got = _emu(_mutate(p, lambda x: None if isinstance(x, MbarWait) else x), ins, k)
    assert r.counters.races > 0 and not close16(got, ref, "float16")


def test_wrong_byte_counts_and_a_missing_init_are_caught(pipeline):
    k, p, ins, _ = pipeline
    more = _mutate(p, lambda x: replace(x, bytes=x.bytes + 16) if isinstance(x, MbarArriveTx) else x)
    with pytest.raises(EmuError, match="hang"):
        run_program(more, ins)
    fewer = _mutate(p, lambda x: replace(x, bytes=x.bytes - 16) if isinstance(x, MbarArriveTx) else x)
    with pytest.raises(EmuError, match="more than it expected"):
        run_program(fewer, ins)
    no_arrive = _mutate(p, lambda x: None if isinstance(x, MbarArriveTx) else x)
    with pytest.raises(EmuError, match="hang"):
        run_program(no_arrive, ins)
    no_init = _mutate(p, lambda x: None if isinstance(x, MbarInit) else x)
    with pytest.raises(EmuError, match="before mbarrier.init"):
        run_program(no_init, ins)


def test_a_wrong_swizzle_or_destination_gives_wrong_numbers_or_an_error(pipeline):
    k, p, ins, ref = pipeline
    plain = _mutate(p, lambda x: replace(x, map=replace(x.map, swizzle=0)) if isinstance(x, TmaLoad) else x)
    assert not close16(_emu(plain, ins, k)[1], ref, "float16")          # unswizzled boxes: the descriptors read others
    shifted = _mutate(p, lambda x: replace(x, dst=x.dst + 8) if isinstance(x, TmaLoad) else x)
    with pytest.raises(EmuError, match="aligned"):
        run_program(shifted, ins)


# ---- CUDA: source, compile, tensor-map arguments ------------------------------------------
def test_cuda_source_spells_tma_and_mbarriers():
    k = gemm_kernel("matmul", "bfloat16", 128, 256, 128)
    s = _schedule(k, 128, 256, 64, 2, 1, 3)
    p = lower(k, s, H100)
    src, smem = render(p)
    for ins in ("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
                "mbarrier.try_wait.parity.shared::cta.b64", "mbarrier.arrive.expect_tx.shared::cta.b64",
                "mbarrier.init.shared::cta.b64", "const __grid_constant__ CUtensorMap tmap0",
                "const __grid_constant__ CUtensorMap tmap1", "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16",
                f"mbar_arrive_tx(&full[0], {(128 * 64 + 64 * 256) * 2}u);"):
        assert ins in src, ins
    assert "cp.async.cg" not in src and "cp.async.wait_group" not in src
    assert src.count("cp.async.bulk.tensor") == 3 * (1 + 4)    # prologue 2 stages + refill: 1 box of A, 4 of B
    assert smem == 3 * (128 * 64 + 64 * 256) * 2 + 3 * 8 + 1024   # stages, the mbarriers, the alignment slack
    plain = render(lower(k, make(k, tcm.match(k), 128, 256, 64, 2, 1, 3), H100))[0]
    assert "CUtensorMap" not in plain and "mbarrier" not in plain


def test_tensor_map_arguments_as_data():
    k = gemm_kernel("bmm_nk", "bfloat16", 128, 256, 192, batch=3)
    p = lower(k, _schedule(k, 128, 256, 64, 2, 1, 3), H100)
    a, b = cuda_tma.specs(p)
    assert a == {"arg": 1, "dtype": "bfloat16", "offset": 0, "dims": [192, 128, 3], "strides": [1, 192, 128 * 192],
                 "box": [64, 128, 1], "swizzle": 128}
    assert b["arg"] == 2 and b["dims"] == [192, 256, 3] and b["box"] == [64, 256, 1]
    assert [m.input for m in tensor_maps(p)] == [0, 1]
    got = cuda_tma.encode_args(b, 0x7F0000000000)
    assert got == {"tensorDataType": "CU_TENSOR_MAP_DATA_TYPE_BFLOAT16", "tensorRank": 3, "globalAddress": 0x7F0000000000,
                   "globalDim": [192, 256, 3], "globalStrides": [192 * 2, 256 * 192 * 2], "boxDim": [64, 256, 1],
                   "elementStrides": [1, 1, 1], "interleave": "CU_TENSOR_MAP_INTERLEAVE_NONE",
                   "swizzle": "CU_TENSOR_MAP_SWIZZLE_128B", "l2Promotion": "CU_TENSOR_MAP_L2_PROMOTION_L2_256B",
                   "oobFill": "CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE"}
    assert cuda_tma.encode_args({**b, "offset": 8}, 0x1000)["globalAddress"] == 0x1000 + 16
    bad = {"misaligned address": ({**b, "offset": 1}, "16-byte aligned"), "stride": ({**b, "strides": [1, 100, 25600]}, "200"),
           "box": ({**b, "box": [64, 512, 1]}, "box dimension 512"), "swizzle": ({**b, "swizzle": 32}, "exceed the 32-byte"),
           "rank": ({**b, "dims": [1] * 6, "strides": [1] * 6, "box": [1] * 6}, "rank 6")}
    for what, (spec, msg) in bad.items():
        with pytest.raises(ValueError, match=msg):
            cuda_tma.encode_args(spec, 0x1000)


def test_tensor_map_enum_names_exist_in_the_driver_bindings():
    drv = pytest.importorskip("cuda.bindings.driver", reason="cuda-python is not installed")
    args = cuda_tma.encode_args({"arg": 1, "dtype": "float16", "offset": 0, "dims": [64, 64], "strides": [1, 64],
                                 "box": [64, 64], "swizzle": 128}, 0x1000)
    for kind, key in (("CUtensorMapDataType", "tensorDataType"), ("CUtensorMapInterleave", "interleave"),
                      ("CUtensorMapSwizzle", "swizzle"), ("CUtensorMapL2promotion", "l2Promotion"),
                      ("CUtensorMapFloatOOBfill", "oobFill")):
        assert hasattr(getattr(drv, kind), args[key]), (kind, args[key])
    for name in set(cuda_tma.DATA_TYPE.values()) | set(cuda_tma.SWIZZLE.values()):
        assert hasattr(drv.CUtensorMapDataType, name) or hasattr(drv.CUtensorMapSwizzle, name), name


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("case", [("matmul", (128, 256, 64, 2, 1, 3)), ("matmul", (64, 128, 32, 1, 1, 4)),
                                  ("bmm_nk", (128, 128, 64, 2, 1, 4))], ids=["3-stages", "in-flight", "rank3"])
def test_cuda_source_compiles_for_sm90a_without_spills(tmp_path, case):
    kind, tiles = case
    k = gemm_kernel(kind, "float16", 4096, 4096, 4096) if kind == "matmul" else gemm_kernel(kind, "float16", 1024, 1024, 1024, 4)
    src, _ = render(lower(k, _schedule(k, *tiles), H100))
    (tmp_path / "k.cu").write_text(src)
    base = [NVCC, "-arch=sm_90a", "-std=c++17", str(tmp_path / "k.cu")]
    r = subprocess.run(base[:-1] + ["-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), base[-1]],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 bytes spill stores" in r.stderr and "serialized" not in r.stderr, r.stderr[-3000:]
    r = subprocess.run(base[:-1] + ["-ptx", "-o", str(tmp_path / "k.ptx"), base[-1]], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ptx = (tmp_path / "k.ptx").read_text()
    assert "cp.async.bulk.tensor" in ptx and "mbarrier.try_wait" in ptx and "cp.async.cg" not in ptx


# ---- on a GPU: simplest first, so the first failure says which part is wrong -------------
GPU_CASES = [  # kind, dtype, M, N, K, bm, bn, bk, wgm, wgn, stages, TMA operands
    ("bmm_nk", "float16", 64, 64, 16, 64, 64, 16, 1, 1, 1, (0, 1)),       # one wgmma, one box each, 32B swizzle
    ("bmm_nk", "float16", 64, 64, 64, 64, 64, 64, 1, 1, 1, (0, 1)),       # 128B swizzle
    ("matmul", "float16", 64, 64, 256, 64, 64, 64, 1, 1, 1, (0, 1)),      # B MN-major, parity flipping each step
    ("matmul", "float16", 128, 128, 256, 128, 128, 64, 2, 1, 3, (0,)),    # A alone by TMA
    ("matmul", "float16", 128, 128, 256, 128, 128, 64, 2, 1, 3, (1,)),    # B alone by TMA (two boxes a stage)
    ("matmul", "float16", 192, 200, 512, 128, 128, 64, 2, 1, 3, (0, 1)),  # M and N padded: zeros outside the tensor
    ("bmm_kn", "bfloat16", 128, 128, 512, 64, 128, 32, 1, 1, 4, (0, 1)),  # rank 3, 4 stages
    ("matmul", "bfloat16", 256, 512, 1024, 128, 256, 64, 2, 1, 3, (0, 1)),  # the 4096^3 tile shape
]


def test_gpu_tma_cases_are_legal_and_right_on_emu():
    for kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages, which in GPU_CASES:
        k = gemm_kernel(kind, d, M, N, K)
        ins = _inputs(k)
        r, got = _emu(lower(k, _schedule(k, bm, bn, bk, wgm, wgn, stages, which), H100), ins, k, max_blocks=8)
        assert close16(got[r.written], _ref(k, ins)[r.written], d) and r.counters.races == 0


@pytest.mark.parametrize("case", GPU_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}-tma{''.join(map(str, c[11]))}" for c in GPU_CASES])
def test_tma_wgmma_gemms_on_the_gpu(cuda, case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages, which = case
    k = gemm_kernel(kind, d, M, N, K)
    p = lower(k, _schedule(k, bm, bn, bk, wgm, wgn, stages, which), H100)
    ins = _inputs(k)
    bad, why = gpu_wrong(*gpu_values(cuda, p, k, ins), _ref(k, ins))
    assert not bad.any(), f"{why}\n{p.describe()[:4000]}"

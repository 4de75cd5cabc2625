"""wgmma (sm_90a) GEMM schedules end to end: lower -> emu against the interpreter (matmul
A[M,K] B[K,N], bmm with B stored [K,N] and [N,K], fp16 and bf16, 1-5 stages, one or two
warpgroups each way, padded M, 3x3 convolutions as implicit GEMM), conflict-free copies into the swizzled layout, the
emulator catching a wrong descriptor / missing fence / missing wait, the CUDA source
holding the instructions (and compiling for sm_90a where nvcc is installed), and on a
GPU the kernels computing numpy's answer (skipped without one)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.cuda.cuda_backend import probe
from superopt.backends.cuda.render import render
from superopt.backends.cuda.wgmma import arch_for
from superopt.backends.emu import run_program
from superopt.backends.emu.executor import EmuError
from superopt.ir import tensorcore as tcm
from superopt.ir import wgmma as wg
from superopt.ir.lower import lower
from superopt.ir.program import SharedFence, Wgmma, WgmmaFence, WgmmaWait
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search.machine import H100
from superopt.search.wgmma_space import make
from gemm_cases import (close16, emu_values as _emu, gemm_kernel, normal_inputs as _inputs,  # noqa: E402 - same folder
                        gpu_values, gpu_wrong, mutate as _mutate, reference_values as _ref,
                        wgmma_shapes)

HAVE_GPU, WHY = probe()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {WHY}")


def _schedule(k, bm, bn, bk, wgm, wgn, stages):
    s = make(k, tcm.match(k), bm, bn, bk, wgm, wgn, stages)
    errs = check(k, s, H100)
    assert not errs, errs
    return s





CASES = [  # kind, dtype, M, N, K, bm, bn, bk, wgm, wgn, stages
    ("matmul", "float16", 64, 64, 32, 64, 64, 32, 1, 1, 1),
    ("matmul", "bfloat16", 128, 128, 64, 128, 128, 64, 2, 1, 2),
    ("bmm_nk", "float16", 64, 128, 128, 64, 128, 64, 1, 1, 3),
    ("bmm_nk", "bfloat16", 128, 64, 64, 128, 64, 16, 1, 1, 2),   # two m64 tiles a warpgroup, 32B swizzle
    ("bmm_kn", "float16", 128, 128, 64, 128, 128, 32, 1, 2, 2),  # B MN-major split over 2 warpgroups
    ("matmul", "float16", 128, 256, 128, 128, 256, 64, 2, 1, 4),  # the 4096^3 tile shape: N = 256
    ("matmul", "float16", 96, 64, 64, 64, 64, 64, 1, 1, 2),       # M padded to 128 (guarded copies/stores)
    ("matmul", "float16", 64, 64, 256, 64, 64, 32, 1, 1, 4),      # one wgmma group kept in flight, 2 tiles ahead
    ("bmm_nk", "bfloat16", 64, 64, 256, 64, 64, 16, 1, 1, 5),     # ... 3 tiles ahead
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}-s{c[10]}" for c in CASES])
def test_wgmma_gemms_match_the_interpreter(case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    s = _schedule(k, bm, bn, bk, wgm, wgn, stages)
    ins = _inputs(k)
    p = lower(k, s, H100)
    r, got = _emu(p, ins, k)
    assert r.written.all() and close16(got, _ref(k, ins), d), p.describe()
    assert r.counters.races == 0
    assert r.counters.bank_conflicts == 0              # the 16-byte copies into the swizzled panels
    batch = k.axes[0].size if kind != "matmul" else 1
    blocks = -(-M // bm) * (N // bn) * batch
    # per block: each warpgroup column covers all bm rows in m64 tiles, one wgmma a 16-deep K step
    assert r.counters.instructions["wgmma"] == blocks * wgn * (bm // 64) * (K // 16)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(wgmma_shapes(), st.integers(0, 2**31 - 1))
def test_random_wgmma_schedules_match_the_interpreter(case, seed):
    d, kind, M, N, K, bm, bn, bk, wgm, wgn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    s = make(k, tcm.match(k), bm, bn, bk, wgm, wgn, stages)
    assume(not check(k, s, H100))   # e.g. an MN-major B slice narrower than its panel, too few copies a thread
    ins = _inputs(k, seed)
    r, got = _emu(lower(k, s, H100), ins, k, max_blocks=4)
    ref = _ref(k, ins)
    assert close16(got[r.written], ref[r.written], d) and r.counters.races == 0 and r.counters.bank_conflicts == 0


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_wgmma_convolutions_as_implicit_gemm(layout):
    """3x3 conv, pad 1: masked (zero-filled) copies, window steps, flattened M tiles
    (NHWC: 16-byte copies; NCHW: element copies, synchronous)."""
    import math
    from superopt.search import tc_space
    k = Workload.make("conv2d", N=2, C=16, H=8, W=8, K=64, R=3, S=3, stride=1, pad=1, layout=layout,
                      dtype="float16").kernels[0]
    m, ext = next((m, e) for m, e in tc_space.m_tilings(k, tcm.match(k)) if math.prod(e) == 64)
    s = make(k, m, 64, 64, 16, 1, 1, 2, ext)
    assert not check(k, s, H100)
    ins = _inputs(k)
    r, got = _emu(lower(k, s, H100), ins, k)
    assert r.written.all() and close16(got, _ref(k, ins), "float16")
    assert r.counters.races == 0 and r.counters.bank_conflicts == 0


def test_the_emulator_decodes_descriptors_so_wrong_ones_give_wrong_numbers():
    k = gemm_kernel("matmul", "float16", 128, 128, 64)
    s = _schedule(k, 128, 128, 64, 2, 1, 2)
    p, ins = lower(k, s, H100), _inputs(k)
    ref = _ref(k, ins)
    assert close16(_emu(p, ins, k)[1], ref, "float16")
    start, lbo, sbo, base, mode = wg.decode(next(x for x in p.walk() if isinstance(x, Wgmma)).a_desc)
    wrong = {
        "A SBO": lambda x: replace(x, a_desc=wg.encode(0, lbo, sbo // 2, mode)),
        "A swizzle 64B": lambda x: replace(x, a_desc=wg.encode(0, lbo, sbo, 2)),
        "A no swizzle": lambda x: replace(x, a_desc=wg.encode(0, lbo, sbo, 0)),
        "B transpose bit": lambda x: replace(x, b_trans=not x.b_trans),
        "B LBO": lambda x: replace(x, b_desc=x.b_desc + (1 << 16)),
        "A start +16 bytes": lambda x: replace(x, a_start=x.a_start + 8),
    }
    for what, f in wrong.items():
        bad = _mutate(p, lambda x: f(x) if isinstance(x, Wgmma) else x)
        assert not close16(_emu(bad, ins, k)[1], ref, "float16"), what


def test_the_emulator_catches_missing_fences_and_waits():
    k = gemm_kernel("matmul", "float16", 64, 64, 64)
    s = _schedule(k, 64, 64, 32, 1, 1, 2)
    p, ins = lower(k, s, H100), _inputs(k)
    no_fence = _mutate(p, lambda x: None if isinstance(x, WgmmaFence) else x)
    with pytest.raises(EmuError, match="wgmma.fence"):
        run_program(no_fence, ins)
    no_proxy_fence = _mutate(p, lambda x: None if isinstance(x, SharedFence) else x)
    with pytest.raises(EmuError, match="fence.proxy.async"):
        run_program(no_proxy_fence, ins)
    no_wait = _mutate(p, lambda x: None if isinstance(x, WgmmaWait) else x)
    r, got = _emu(no_wait, ins, k)     # the epilogue reads accumulators still in flight
    assert not np.isfinite(got).all()


def test_keeping_too_many_wgmmas_in_flight_reads_overwritten_stages():
    k = gemm_kernel("matmul", "float16", 64, 64, 256)
    s = _schedule(k, 64, 64, 32, 1, 1, 4)
    p, ins = lower(k, s, H100), _inputs(k)
    ref = _ref(k, ins)
    waits = [x.pending for x in p.walk() if isinstance(x, WgmmaWait)]
    assert waits == [1, 0]                                     # in the loop, then before the epilogue
    r, got = _emu(p, ins, k)
    assert close16(got, ref, "float16") and r.counters.races == 0
    # 3 groups in flight: the copies of step kt (2 tiles ahead, into stage (kt+2)%4) overwrite the stage
    # wgmma(kt-2) may still read
    loose = _mutate(p, lambda x: WgmmaWait(3) if isinstance(x, WgmmaWait) and x.pending == 1 else x)
    assert _emu(loose, ins, k)[0].counters.races > 0


def test_cuda_source_spells_the_wgmma_pipeline():
    k = gemm_kernel("matmul", "bfloat16", 128, 256, 128)
    s = _schedule(k, 128, 256, 64, 2, 1, 3)
    src, smem = render(lower(k, s, H100))
    for ins in ("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16", "wgmma.fence.sync.aligned;",
                "wgmma.commit_group.sync.aligned;", "wgmma.wait_group.sync.aligned 0;", "fence.proxy.async.shared::cta;",
                "cp.async.cg.shared.global", "cp.async.wait_group 1;", "__cvta_generic_to_shared(smem_raw_) & 1023"):
        assert ins in src, ins
    assert src.count("wgmma.mma_async") == 64 // 16           # one per 16-deep K step (one m64 tile a warpgroup)
    a_fields = wg.operand_desc(tcm.match(k).a, 128, 64).fields
    assert f"{a_fields:#x}ULL" in src
    assert smem == 3 * (128 * 64 + 64 * 256) * 2 + 1024      # stages of both tiles + the alignment slack
    assert arch_for(src, "sm_90") == "sm_90a" and arch_for("mma.sync", "sm_90") == "sm_90" and arch_for(src, "sm_80") == "sm_80"


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("tiles", [(128, 256, 64, 2, 1, 3), (64, 128, 32, 1, 1, 4)])
def test_cuda_source_compiles_for_sm90a_without_spills(tmp_path, tiles):
    """Waiting for every group (3 stages), and one group kept in flight (4 stages, bk 32,
    one warpgroup: see ir/lower_wgmma.wgmma_in_flight)."""
    k = gemm_kernel("matmul", "float16", 4096, 4096, 4096)
    s = _schedule(k, *tiles)
    src, _ = render(lower(k, s, H100))
    (tmp_path / "k.cu").write_text(src)
    r = subprocess.run([NVCC, "-arch=sm_90a", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                        str(tmp_path / "k.cu")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 bytes spill stores" in r.stderr and "serialized" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("M, producer", [(256, True), (128, False)], ids=["warp-specialized", "cp.async"])
def test_the_hand_rule_takes_wgmma_where_measured_and_its_epilogue_verifies_on_emu(M, producer):
    """Hopper GEMMs whose M, N, K a measured tile divides get the wgmma rule (search/hand.py
    WGMMA_TILES: the warp-specialized 256x128 tile, else 128x128 with cp.async), a fused bias
    + relu + fp16 cast epilogue included; other shapes keep mma.sync."""
    from superopt import Tensor
    from superopt.backends.base import get
    from superopt.ir.kernelize import kernelize
    from superopt.search.hand import WGMMA_TILES, gpu
    from superopt.verify import verify
    rng = np.random.default_rng(4)
    x, w, b = (Tensor(rng.uniform(-1, 1, sh).astype(np.float16)) for sh in ((M, 256), (256, 128), (128,)))
    (step,) = kernelize(((x @ w) + b).relu().node)
    k = step.kernel
    s = gpu(k, H100)
    tile = next(t for t, p in WGMMA_TILES if p == producer)
    assert s.tensor_core.instr.startswith("wgmma") and s.tensor_core.producer == producer and s.stages == tile[-1]
    r = verify(k, s, get("emu"), seed=5)
    assert r.ok, r.reason
    odd = gemm_kernel("matmul", "float16", 192, 128, 64)             # M not a multiple of 128
    assert gpu(odd, H100).tensor_core.instr.startswith("mma")


# ---- on a GPU: simplest first, so the first failure says which part is wrong -------------
GPU_CASES = [
    ("bmm_nk", "float16", 64, 64, 16, 64, 64, 16, 1, 1, 1),      # one wgmma, both K-major, 32B swizzle
    ("bmm_nk", "float16", 64, 64, 64, 64, 64, 64, 1, 1, 1),      # both K-major, 128B swizzle, 4 K steps in a row
    ("matmul", "float16", 64, 64, 64, 64, 64, 64, 1, 1, 1),      # B MN-major (transpose bit)
    ("matmul", "float16", 128, 128, 128, 128, 128, 64, 1, 2, 2),  # two m64 tiles, two warpgroups along N, cp.async
    ("matmul", "float16", 128, 128, 256, 128, 128, 32, 2, 1, 4),  # two warpgroups: none kept in flight
    ("matmul", "float16", 128, 256, 1024, 64, 128, 32, 1, 1, 4),  # one warpgroup: one group kept in flight
    ("matmul", "bfloat16", 256, 256, 256, 128, 256, 64, 2, 1, 3),  # the 4096^3 tile shape
    ("matmul", "float16", 256, 512, 1024, 128, 256, 32, 2, 1, 4),  # was wrong on the H100 with one kept in flight
]


def test_gpu_cases_are_legal_and_right_on_emu():
    for kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages in GPU_CASES:
        k = gemm_kernel(kind, d, M, N, K)
        ins = _inputs(k)
        r, got = _emu(lower(k, _schedule(k, bm, bn, bk, wgm, wgn, stages), H100), ins, k)
        assert r.written.all() and close16(got, _ref(k, ins), d)


def _where_wrong(bad: np.ndarray) -> str:
    """Which rows (mod 64: warp = row // 16 % 4) and columns (mod 8) of the output are wrong."""
    b = bad.reshape(-1, *bad.shape[-2:]).any(axis=0)
    rows = sorted({int(r) % 64 for r in np.nonzero(b.any(axis=1))[0]})
    cols = sorted({int(c) % 8 for c in np.nonzero(b.any(axis=0))[0]})
    return f"rows mod 64 {rows[:16]}{'...' if len(rows) > 16 else ''}, columns mod 8 {cols}"


@needs_gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}" for c in GPU_CASES])
def test_wgmma_gemms_on_the_gpu(cuda, case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    s = _schedule(k, bm, bn, bk, wgm, wgn, stages)
    p = lower(k, s, H100)
    ins = _inputs(k)
    c, got = gpu_values(cuda, p, k, ins)
    ref = _ref(k, ins)
    emu = _emu(p, ins, k)[1]
    bad, why = gpu_wrong(c, got, ref)
    assert not bad.any(), f"{why}; {_where_wrong(bad)}; emu agrees with the reference: {close16(emu, ref, d)}\n{p.describe()}"

"""Shared-memory staged SIMT fp32 GEMMs (ir/lower_staged.py) on the emulator: random
sizes (multiples of the tiles and padded M/N), tiles, pipeline depths, both batched B
layouts and 3x3 convolutions (NHWC, NCHW) compute the reference; the hand rule's
layouts (a B stored N x K XOR-swizzled) read and write shared memory without bank
conflicts (a padded alternative: its documented count) and without races;
the legality check names what is not supported; the CUDA source compiles for sm_90
without spills with 16-byte shared reads (where nvcc is installed) and verifies on a GPU
(where there is one)."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt.backends.cuda.render import render
from superopt.backends.emu import run_program
from superopt.ir import lower_staged
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import LoweringError, lower
from superopt.ir.program import CopyWait, SharedCopy
from superopt.ir.schedule import Level, Schedule, Split, Staging, check
from superopt.kernels.registry import Workload
from superopt.search.hand import STAGED_TILES, staged_simt, staged_variants
from superopt.search.machine import H100, host_cpu
from gemm_cases import gemm_kernel  # noqa: E402 - same folder (on sys.path under pytest)

G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
NVCC = shutil.which("nvcc")


def _kernel(kind: str, M: int, N: int, K: int, batch: int = 2, dtype: str = "float32"):
    return gemm_kernel(kind, dtype, M, N, K, batch)


def _run(k, s, seed=0, max_blocks=64):
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal(b.shape).astype(np.float32) for b in k.inputs]
    p = lower(k, s, H100)
    r = run_program(p, ins, max_blocks=max_blocks)
    ref = run_kernel(k, ins).astype(np.float64).reshape(-1)
    return p, r, r.output.astype(np.float64).reshape(-1), ref


def _close(got, ref, K: int) -> bool:
    # fp32 accumulation in another order: error grows like sqrt(K) ulps of the partial sums
    return bool(np.all(np.abs(got - ref) <= 1e-5 * np.sqrt(K) * np.maximum(1.0, np.abs(ref))))


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["matmul", "bmm_kn", "bmm_nk"]))
    tm, tn = draw(st.sampled_from([(4, 4), (8, 4), (4, 8), (8, 8)]))
    wm, wn = draw(st.sampled_from([(8, 8), (4, 16), (16, 8)]))
    bm, bn = tm * wm, tn * wn
    bk = draw(st.sampled_from([4, 8, 16]))
    M = draw(st.integers(1, 3)) * bm - draw(st.sampled_from([0, 0, 3, bm // 4]))   # padded M/N where drawn
    N = draw(st.integers(1, 2)) * bn - draw(st.sampled_from([0, 0, 4, bn // 4]))
    K = bk * draw(st.integers(1, 4))
    swizzle = draw(st.booleans()) and kind == "bmm_nk" and bk >= 8   # else a pad of 4 on an N x K B
    return kind, M, N, K, bm, bn, tm, tn, bk, draw(st.integers(1, 3)), swizzle


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_staged_gemms_compute_the_reference(case):
    kind, M, N, K, bm, bn, tm, tn, bk, stages, swizzle = case
    k = _kernel(kind, M, N, K)
    s = _schedule(k, lower_staged.match(k), bm, bn, tm, tn, bk, stages, pad_b=4 if kind == "bmm_nk" and not swizzle else 0)
    if swizzle: s = replace(s, staging=(s.staging[0], replace(s.staging[1], swizzle=(bk // 4).bit_length() - 1, shift=3)))
    errs = check(k, s, H100)
    if errs:  # the copies of a small tile do not spread evenly over its threads
        assert all("copies per thread" in e for e in errs), errs
        return
    p, r, got, ref = _run(k, s)
    assert r.written.all() and _close(got, ref, K), s.describe(k)
    assert r.counters.races == 0


def _schedule(k, m, bm, bn, tm, tn, bk, stages, pad=0, pad_b=None) -> Schedule:
    M, N, K = (k.axes[a].size for a in (m.m, m.n, m.k))
    sp = [(Split(G, ax.size),) for ax in k.axes]
    sp[m.m] = (Split(G, -(-M // bm)), Split(T, bm // tm), Split(U, tm))
    sp[m.n] = (Split(G, -(-N // bn)), Split(T, bn // tn), Split(U, tn))
    sp[m.k] = (Split(L, K // bk), Split(R, bk))
    pad_b = pad if pad_b is None else pad_b
    return Schedule(tuple(sp), staging=(Staging(m.a.input, pad, vector=m.a.vec), Staging(m.b.input, pad_b, vector=m.b.vec)),
                    stages=stages)


def test_matmul_and_bmm_with_every_pipeline_depth():
    for kind, M, N, K in (("matmul", 256, 128, 64), ("bmm_kn", 64, 128, 32), ("bmm_nk", 128, 64, 48), ("matmul", 100, 72, 24)):
        k = _kernel(kind, M, N, K)
        for stages in (1, 2, 3):
            s = staged_simt(k, H100, stages=stages)
            p, r, got, ref = _run(k, s)
            assert r.written.all() and _close(got, ref, K), (kind, stages)
            waits = [x for x in p.walk() if isinstance(x, CopyWait)]
            copies = [x for x in p.walk() if isinstance(x, SharedCopy)]
            assert all(c.async_ == (stages > 1) for c in copies) and bool(waits) == (stages > 1)


def test_fused_epilogue_bias_relu():
    """The kernel body around the reduction (a bias and a ReLU fused by kernelize) runs in
    the epilogue on each accumulator, its loads at the tile's rows and columns."""
    from superopt.ir.tensor import Tensor
    a, b, c = Tensor.empty(96, 64, name="a"), Tensor.empty(64, 128, name="b"), Tensor.empty(128, name="c")
    (step,) = ((a @ b) + c).relu().schedule()
    k = step.kernel
    assert len(k.inputs) == 3 and k.kind == "gemm"
    p, r, got, ref = _run(k, staged_simt(k, H100))
    assert r.written.all() and _close(got, ref, 64) and (got >= 0).all() and r.counters.races == 0


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_convolutions_as_implicit_gemm(layout, tmp_path):
    """The filter window loops around the K tiles; copies honour the padding mask (NCHW:
    one 4-byte element a copy along the masked pixel row)."""
    k = Workload.make("conv2d", N=2, C=16, H=8, W=8, K=32, R=3, S=3, stride=1, pad=1, layout=layout, dtype="float32").kernels[0]
    for stages in (1, 3):
        s = staged_simt(k, H100, stages=stages)
        assert s is not None and check(k, s, H100) == []
        p, r, got, ref = _run(k, s)
        assert r.written.all() and _close(got, ref, 16 * 9) and r.counters.races == 0, (layout, stages)
        assert r.counters.bank_conflicts == 0
    if NVCC is not None:
        src, _ = render(p)
        assert "0 bytes spill stores" in _nvcc(src, tmp_path, "-cubin")


def test_a_pipeline_that_waits_too_little_reads_stale_tiles():
    k = _kernel("matmul", 128, 128, 64)
    s = staged_simt(k, H100, stages=3)
    p = lower(k, s, H100)

    def drop(body):
        from superopt.ir.program import If, Loop
        out = []
        for x in body:
            if isinstance(x, CopyWait): x = CopyWait(x.pending + 1)
            elif isinstance(x, Loop): x = Loop(x.var, tuple(drop(x.body)), x.unroll)
            elif isinstance(x, If): x = If(x.cond, tuple(drop(x.body)))
            out.append(x)
        return out
    bad = replace(p, body=tuple(drop(p.body)))
    rng = np.random.default_rng(1)
    ins = [rng.standard_normal(b.shape).astype(np.float32) for b in k.inputs]
    got = run_program(bad, ins).output.reshape(-1)
    assert not _close(got, run_kernel(k, ins).reshape(-1), 64)


@pytest.mark.parametrize("tile", STAGED_TILES)
def test_hand_layouts_read_shared_memory_without_conflicts_or_races(tile):
    k = _kernel("matmul", 256, 256, 64)
    s = staged_simt(k, H100, *tile)
    p, r, got, ref = _run(k, s, max_blocks=2)
    w = r.written.reshape(-1)
    assert _close(got[w], ref[w], 64)
    assert r.counters.bank_conflicts == 0 and r.counters.races == 0, r.counters
    # the fragments are read as 16-byte vectors: bk/4 A reads of tm rows, bk B reads of tn/4 strips a step
    bm, bn, tm, tn, bk, _ = tile
    warps = bm // tm * (bn // tn) // 32
    per_step = (bk // 4) * tm + bk * tn // 4
    assert r.counters.instructions["ld.shared"] == 2 * warps * (64 // bk) * per_step


@pytest.mark.parametrize("bk", [8, 16])
def test_b_stored_n_by_k_is_swizzled_and_conflict_free(bk):
    """A B tile whose rows run along K: 8 threads of a quarter warp read 16 bytes at 8 rows
    each. The hand rule XOR-swizzles its 16-byte units within 128 bytes: reads and cp.async
    writes conflict-free. A pad of 4 floats instead serves the reads but costs each quarter
    warp's copy (4 rows x 2 units of 12-float rows) one extra wavefront: the documented count."""
    k = _kernel("bmm_nk", 128, 128, 64)
    s = staged_simt(k, H100, bk=bk)
    b = next(x for x in s.staging if x.input == 1)
    assert (b.swizzle, b.shift, b.pad) == ({8: 1, 16: 2}[bk], 3, 0)
    p, r, got, ref = _run(k, s, max_blocks=2)
    assert _close(got, ref, 64) and r.counters.races == 0 and r.counters.bank_conflicts == 0
    if bk != 8: return
    padded = replace(s, staging=(s.staging[0], Staging(1, pad=4, vector=4)))
    p, r, got, ref = _run(k, padded, max_blocks=2)
    assert _close(got, ref, 64) and r.counters.races == 0
    b_copies = sum(1 for x in p.walk() if isinstance(x, SharedCopy) and x.name == "sb")  # prologue + loop body
    warps, steps = p.threads // 32, 64 // 8
    assert r.counters.bank_conflicts == 2 * warps * 4 * (b_copies // 2) * steps  # 2 blocks run


def test_check_names_what_is_not_supported():
    k = _kernel("matmul", 256, 256, 64)
    m = lower_staged.match(k)
    good = _schedule(k, m, 128, 128, 8, 8, 8, 2)
    assert check(k, good, H100) == []
    assert any("GPUs only" in e for e in check(k, good, host_cpu()))
    big = _schedule(k, m, 128, 128, 8, 8, 64, 8)
    assert any("shared memory" in e and "per block" in e for e in check(k, big, H100))
    assert any("pad 2" in e for e in check(k, _schedule(k, m, 128, 128, 8, 8, 8, 2, pad=2), H100))
    assert any("not a bijection" in e for e in check(k, replace(good, staging=tuple(replace(x, swizzle=1) for x in good.staging)), H100))
    assert check(k, replace(good, staging=tuple(replace(x, swizzle=1, shift=3) for x in good.staging)), H100) == []
    few = _schedule(k, m, 32, 32, 8, 8, 4, 2)   # 16 threads, 32x4 A tile = 32 copies: fine; 4 x 32 B: 32: fine
    assert check(k, few, H100) == []
    odd = _schedule(k, m, 128, 128, 8, 8, 4, 2)  # 256 threads, 128x4 A tile = 128 copies of 4: not one a thread
    assert any("copies per thread" in e for e in check(k, odd, H100))
    k_odd = _kernel("matmul", 256, 256, 60)
    bad_k = replace(good, splits=good.splits[:2] + ((Split(L, 8), Split(R, 8)),))
    assert any("divide 60 exactly" in e for e in check(k_odd, bad_k, H100))
    half = _kernel("matmul", 256, 256, 64, dtype="float16")
    assert any("float32" in e for e in check(half, good, H100))
    rowsum = Workload.make("rowsum", M=64, N=64).kernels[0]
    errs = check(rowsum, Schedule(((Split(G, 64),), (Split(L, 64),)), staging=(Staging(0),)), H100)
    assert any("covers GEMMs" in e for e in errs), errs
    with pytest.raises(LoweringError, match="shared memory"):
        lower(k, big, H100)


def test_hand_variants_are_legal_and_distinct_on_the_bench_shapes():
    shapes = [("matmul", 2048, 2048, 2048), ("matmul", 8192, 1024, 1024), ("matmul", 8192, 1024, 4096),
              ("bmm_nk", 512, 512, 64), ("bmm_kn", 512, 64, 512)]
    for kind, M, N, K in shapes:
        k = _kernel(kind, M, N, K, batch=256)
        vs = staged_variants(k, H100)
        assert len(vs) >= 3 and len(set(vs)) == len(vs), k.name
        assert all(check(k, s, H100) == [] for s in vs)
    assert staged_simt(_kernel("matmul", 64, 64, 64, dtype="float16"), H100) is None
    assert staged_simt(_kernel("matmul", 64, 64, 64), host_cpu()) is None


def _nvcc(src: str, tmp_path, what: str) -> str:
    (tmp_path / "k.cu").write_text(src)
    r = subprocess.run([NVCC, "-arch=sm_90", what, "-std=c++17", "-Xptxas", "-v", "-o", str(tmp_path / "k.out"),
                        str(tmp_path / "k.cu")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("tile", STAGED_TILES)
def test_cuda_source_compiles_for_sm90_without_spills_and_reads_vectors(tmp_path, tile):
    k = _kernel("matmul", 2048, 2048, 2048)
    s = staged_simt(k, H100, *tile)
    src, _ = render(lower(k, s, H100))
    log = _nvcc(src, tmp_path, "-cubin")
    assert "0 bytes spill stores" in log and "0 bytes spill loads" in log, log[-2000:]
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    assert regs * (tile[0] // tile[2]) * (tile[1] // tile[3]) <= H100.regs_per_sm, log[-2000:]  # a block fits an SM
    _nvcc(src, tmp_path, "-ptx")
    ptx = (tmp_path / "k.out").read_text()
    # every fragment read is a 16-byte vector: bk/4 runs of tm A rows and bk x tn/4 B strips a K step
    per_step = tile[4] // 4 * tile[2] + tile[4] * tile[3] // 4
    n = len(re.findall(r"ld\.shared\.v4\.[bfu]32", ptx))
    assert not re.search(r"ld\.shared\.[bfu]32", ptx) and n > 0 and n % per_step == 0, (n, per_step)


def test_staged_gemms_verify_on_cuda(cuda):
    from superopt.verify import verify
    bad = []
    for kind, M, N, K in (("matmul", 256, 256, 64), ("matmul", 100, 72, 24), ("bmm_nk", 128, 64, 48), ("bmm_kn", 64, 128, 32)):
        k = _kernel(kind, M, N, K)
        for s in staged_variants(k, cuda.machine):
            r = verify(k, s, cuda, seed=3)
            if not r.ok: bad.append(f"{k.name} {s.describe(k)}: {r.reason}")
    assert not bad, "\n".join(bad)

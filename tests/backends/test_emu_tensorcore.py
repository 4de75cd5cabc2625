"""Tensor-core GEMM schedules on the emulator: ldmatrix / mma.sync fragments with the
PTX lane layouts compute the reference (random sizes, tiles, operand layouts, dtypes,
pipeline depths, solver-chosen shared layouts), the bank counter reads zero for the
solver's layouts and agrees with the solver's own count, and a pipeline that waits too
little reads stale shared memory."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.emu import run_program
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import LoweringError, lower
from superopt.ir.program import CopyWait, Loop, Program
from superopt.ir.schedule import Level, Schedule, Split, Staging, TensorCore, check
from superopt.kernels.registry import Workload
from superopt.search import banks
from superopt.search.machine import H100, host_cpu as cpu_machine
from gemm_cases import close16, gemm_kernel  # noqa: E402 - same folder (on sys.path under pytest)

G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
INSTR = {"float16": "mma.m16n8k16.f16.f32", "bfloat16": "mma.m16n8k16.bf16.f32"}


def _schedule(k, dtype: str, bm: int, bn: int, bk: int, wm: int, wn: int, stages: int) -> Schedule:
    from superopt.ir import tensorcore as tcm
    mt = tcm.match(k)
    M, N, K = (k.axes[a].size for a in (mt.m, mt.n, mt.k))
    sp = [(Split(G, ax.size),) for ax in k.axes]
    sp[mt.m] = (Split(G, M // bm), Split(T, wm), Split(U, bm // wm))
    sp[mt.n] = (Split(G, N // bn), Split(T, wn), Split(U, bn // wn))
    sp[mt.k] = (Split(L, K // bk), Split(R, bk))
    s = Schedule(tuple(sp), tensor_core=TensorCore(INSTR[dtype], mt.m, mt.n, mt.k), stages=stages)
    return replace(s, staging=banks.staging(k, s, H100.warp)[0])


def _run(k, s, seed=0, max_blocks=64):
    rng = np.random.default_rng(seed)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    p = lower(k, s, H100)
    r = run_program(p, ins, max_blocks=max_blocks)
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    got = dt.to_values(r.output, k.output.dtype).astype(np.float64)
    return p, r, got, ref


@st.composite
def gemm_case(draw):
    d = draw(st.sampled_from(["float16", "bfloat16"]))
    kind = draw(st.sampled_from(["matmul", "bmm_kn", "bmm_nk"]))
    wm, wn = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    tm, tn = 16 * draw(st.integers(1, 2)), 16 * draw(st.integers(1, 2))
    bk = draw(st.sampled_from([16, 32]))
    bm, bn = wm * tm, wn * tn
    M, N, K = bm * draw(st.integers(1, 2)), bn * draw(st.integers(1, 2)), bk * draw(st.integers(1, 3))
    return d, kind, M, N, K, bm, bn, bk, wm, wn, draw(st.integers(1, 3))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(gemm_case(), st.integers(0, 2**31 - 1))
def test_tensor_core_schedules_match_the_interpreter(case, seed):
    d, kind, M, N, K, bm, bn, bk, wm, wn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    s = _schedule(k, d, bm, bn, bk, wm, wn, stages)
    assume(not check(k, s, H100))  # a tile with fewer 16-byte copies than threads
    p, r, got, ref = _run(k, s, seed)
    assert r.written.all() and close16(got, ref, d), p.describe()
    assert r.counters.races == 0
    assert r.counters.bank_conflicts == 0          # the solver's layout, confirmed by the counter
    assert r.counters.instructions["mma"] == (M // 16) * (N // 8) * (K // 16) * (k.axes[0].size if kind != "matmul" else 1)


@pytest.mark.parametrize("shape", [(64, 64, 64), (128, 64, 32)])
@pytest.mark.parametrize("d", ["float16", "bfloat16"])
def test_named_small_gemms(shape, d):
    M, N, K = shape
    k = gemm_kernel("matmul", d, M, N, K)
    s = _schedule(k, d, 64, 64, 32, 2, 2, 2)
    _, r, got, ref = _run(k, s)
    assert close16(got, ref, d) and r.counters.bank_conflicts == 0 and r.counters.races == 0


def test_batched_matmul_both_b_layouts():
    for kind in ("bmm_kn", "bmm_nk"):
        k = gemm_kernel(kind, "float16", 32, 32, 64, batch=3)
        s = _schedule(k, "float16", 32, 32, 32, 1, 2, 2)
        _, r, got, ref = _run(k, s)
        assert close16(got, ref, "float16") and r.counters.bank_conflicts == 0


def test_unswizzled_layout_conflicts_and_the_solver_count_agrees():
    k = gemm_kernel("matmul", "float16", 128, 128, 64)
    s = _schedule(k, "float16", 128, 128, 32, 2, 2, 1)
    plain = replace(s, staging=tuple(Staging(x.input, vector=8) for x in s.staging))
    _, r, got, ref = _run(k, plain, max_blocks=1)
    assert close16(got, ref, "float16") and r.counters.bank_conflicts > 0
    for which in ("a", "b"):
        rows, width, ph = banks.operand_phases(k, s, which, H100.warp)
        assert banks.conflicts(rows, width, ph, 0, 0, 0) > 0
        lay = banks.solve(rows, width, ph)
        assert lay.conflicts == 0 and lay.proved and banks.conflicts(rows, width, ph, lay.pad, lay.swizzle, lay.shift) == 0


def test_a_pipeline_that_waits_too_little_reads_stale_data():
    k = gemm_kernel("matmul", "float16", 64, 64, 128)
    s = _schedule(k, "float16", 64, 64, 32, 2, 2, 3)
    p, r, got, ref = _run(k, s)
    assert close16(got, ref, "float16")

    def loosen(stmts):
        return tuple(CopyWait(s.stages - 1) if isinstance(x, CopyWait) else
                     Loop(x.var, loosen(x.body), x.unroll) if isinstance(x, Loop) else x for x in stmts)
    bad = Program(p.name, p.inputs, p.output, p.blocks, p.threads, p.lanes, p.workers, loosen(p.body), p.kernel, p.schedule)
    rng = np.random.default_rng(0)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    out = dt.to_values(run_program(bad, ins).output, k.output.dtype).astype(np.float64)
    assert not close16(out, ref, "float16")


def test_tensor_core_schedules_are_gpu_only_and_checked():
    k = gemm_kernel("matmul", "float16", 64, 64, 64)
    s = _schedule(k, "float16", 64, 64, 32, 2, 2, 1)
    assert not check(k, s, H100)
    errs = check(k, s, cpu_machine())
    assert any("GPUs only" in e for e in errs)
    with pytest.raises(LoweringError):
        lower(k, s, cpu_machine())
    from superopt.backends.base import Failure, get
    got = get("cpu").compile(lower(k, s, H100))   # a GPU program handed to the CPU backend
    assert isinstance(got, Failure) and got.kind == "compile"
    bad_tile = s.with_axis(0, (Split(G, 2), Split(T, 4), Split(U, 8)))
    assert any("16x16x16" in e for e in check(k, bad_tile, H100))
    bad_swizzle = replace(s, staging=(replace(s.staging[0], swizzle=3, shift=1), s.staging[1]))
    assert any("bijection" in e for e in check(k, bad_swizzle, H100))
    assert Schedule.from_json(s.to_json()) == s
    fp32 = Workload.make("matmul", M=64, N=64, K=64, dtype="float32").kernels[0]
    assert any("fp16 or both bf16" in e for e in check(fp32, replace(s), H100))


def test_smem_offset_on_nodes_equals_ints_and_is_a_bijection():
    from superopt.ir import tensorcore as tcm
    from superopt.ir.node import const, special, substitute
    r, u = special("r", 32), special("u", 4)
    for pad, swz, sh in ((0, 0, 0), (8, 0, 0), (0, 2, 3), (0, 3, 4), (8, 3, 3)):
        node = tcm.smem_offset(r, u, 32, pad, swz, sh)
        seen = set()
        for row in range(32):
            for unit in range(4):
                v = substitute(node, {r: const(row, dt.int32), u: const(unit, dt.int32)})
                assert v.arg == tcm.smem_offset(row, unit, 32, pad, swz, sh)
                seen.add(v.arg)
        assert len(seen) == 128 and max(seen) < 32 * (32 + pad)

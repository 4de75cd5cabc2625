"""Tensor-core search pieces: the Z3 bank-conflict layouts (proved conflict-free, re-counted
with the lowering's formula, on random tile geometries), the hand rule's choice of tensor
cores, and the tensor-core time model's bounds."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from superopt.ir.schedule import Level, Schedule, Split, TensorCore, check
from superopt.kernels.registry import Workload
from superopt.search import banks, cost
from superopt.search.hand import gpu
from superopt.search.machine import H100

G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["kn", "nk"]), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]), st.sampled_from([16, 32, 64]),
       st.sampled_from([16, 32, 64]), st.sampled_from([16, 32, 64]))
def test_solver_layouts_are_conflict_free_by_the_lowering_formula(layout, wm, wn, tm, tn, bk):
    k = Workload.make("bmm", B=2, M=wm * tm, N=wn * tn, K=bk, b_layout=layout, dtype="float16").kernels[0]
    s = Schedule(((Split(G, 2),), (Split(T, wm), Split(U, tm)), (Split(T, wn), Split(U, tn)), (Split(R, bk),)),
                 tensor_core=TensorCore("mma.m16n8k16.f16.f32", 1, 2, 3))
    for which in ("a", "b"):
        rows, width, ph = banks.operand_phases(k, s, which)
        lay = banks.solve(rows, width, ph)
        assert lay.proved
        assert banks.conflicts(rows, width, ph, lay.pad, lay.swizzle, lay.shift) == lay.conflicts == 0
        if lay.pad or lay.swizzle:  # the solver only pays for a layout when the plain one conflicts
            assert banks.conflicts(rows, width, ph, 0, 0, 0) > 0


def test_hand_rule_uses_tensor_cores_for_16_bit_gemms_only():
    for d in ("float16", "bfloat16"):
        k = Workload.make("matmul", M=256, N=256, K=128, dtype=d).kernels[0]
        s = gpu(k, H100)
        assert s.tensor_core is not None and s.tensor_core.instr == ("mma.m16n8k16.bf16.f32" if d == "bfloat16" else "mma.m16n8k16.f16.f32")
        assert not check(k, s, H100) and s.stages > 1
    k32 = Workload.make("matmul", M=256, N=256, K=128, dtype="float32").kernels[0]
    assert gpu(k32, H100).tensor_core is None
    ragged = Workload.make("matmul", M=100, N=64, K=64, dtype="float16").kernels[0]
    assert gpu(ragged, H100).tensor_core is None   # sizes must tile exactly


def test_tensor_core_model_is_bounded_by_peak_and_traffic():
    for M, N, K in ((4096, 4096, 4096), (8192, 1024, 1024), (512, 512, 64)):
        k = Workload.make("matmul", M=M, N=N, K=K, dtype="float16").kernels[0]
        t = cost.modeled_time(k, gpu(k, H100), H100)
        assert t >= k.flops / H100.flops_tc_fp16 and t >= k.min_bytes / H100.dram_bw
        if M >= 4096: assert t < k.flops / H100.flops_fp32   # large GEMMs: tensor cores beat the fp32 FMA roof


def test_solver_offers_tensor_core_schedules_that_compute_the_reference():
    import numpy as np
    from superopt.backends.emu import run_program
    from superopt.ir import dtype as dt
    from superopt.ir.interpret import run_kernel
    from superopt.ir.lower import lower
    from superopt.search import z3opt
    from superopt.search.machine import host_cpu
    k = Workload.make("matmul", M=128, N=128, K=64, dtype="bfloat16").kernels[0]
    r = z3opt.solve(k, H100, top_k=2, timeout_s=2.0)
    s = r.best
    assert s.tensor_core is not None and not check(k, s, H100)
    assert r.modeled_s == cost.modeled_time(k, s, H100) <= cost.modeled_time(k, gpu(k, H100), H100)
    rng = np.random.default_rng(1)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    out = run_program(lower(k, s, H100), ins)
    got = dt.to_values(out.output, k.output.dtype).astype(np.float64)
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    assert np.all(np.abs(got - ref) <= 1.6e-2 * np.maximum(1, np.abs(ref))) and out.counters.bank_conflicts == 0
    assert all(c.schedule.tensor_core is None for c in z3opt.solve(k, host_cpu(), top_k=2, timeout_s=2.0).candidates)


def test_space_points_are_legal_and_ranked():
    from superopt.search import tc_space
    k = Workload.make("matmul", M=512, N=256, K=128, dtype="float16").kernels[0]
    pts = tc_space.points(k, H100)
    assert pts and [t for t, _ in pts] == sorted(t for t, _ in pts)
    assert all(not check(k, s, H100) and s.tensor_core is not None for _, s in pts)
    assert all(s.stages <= 4 and s.threads() <= 256 for _, s in pts)

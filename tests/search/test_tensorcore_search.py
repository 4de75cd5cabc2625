"""Tensor-core search pieces: the Z3 bank-conflict layouts (proved conflict-free, re-counted
with the lowering's formula, on random tile geometries), the hand rule's choice of tensor
cores, and the tensor-core time model's bounds."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from superopt.ir.schedule import Level, Schedule, Split, TensorCore, check
from superopt.kernels.registry import Workload
from superopt.search import banks, cost
from superopt.search.hand import gpu
from superopt.search.machine import H100, nvidia_at

G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["kn", "nk"]), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]), st.sampled_from([16, 32, 64]),
       st.sampled_from([16, 32, 64]), st.sampled_from([16, 32, 64]))
def test_solver_layouts_are_conflict_free_by_the_lowering_formula(layout, wm, wn, tm, tn, bk):
    k = Workload.make("bmm", B=2, M=wm * tm, N=wn * tn, K=bk, b_layout=layout, dtype="float16").kernels[0]
    s = Schedule(((Split(G, 2),), (Split(T, wm), Split(U, tm)), (Split(T, wn), Split(U, tn)), (Split(R, bk),)),
                 tensor_core=TensorCore("mma.m16n8k16.f16.f32", 1, 2, 3))
    for which in ("a", "b"):
        rows, width, ph = banks.operand_phases(k, s, which, H100.warp)
        lay = banks.solve(rows, width, ph)
        assert lay.proved
        assert banks.conflicts(rows, width, ph, lay.pad, lay.swizzle, lay.shift) == lay.conflicts == 0
        if lay.pad or lay.swizzle:  # the solver only pays for a layout when the plain one conflicts
            assert banks.conflicts(rows, width, ph, 0, 0, 0) > 0


def test_hand_rule_uses_tensor_cores_for_16_bit_gemms_only():
    for d in ("float16", "bfloat16"):
        k = Workload.make("matmul", M=256, N=256, K=128, dtype=d).kernels[0]
        s = gpu(k, H100)
        # wgmma on the H100 (a producer warp's stages run across tiles, so K = 128 takes it too)
        assert s.tensor_core is not None and s.tensor_core.instr == ("wgmma.m64nNk16.bf16.f32" if d == "bfloat16" else "wgmma.m64nNk16.f16.f32")
        assert not check(k, s, H100) and s.stages > 1
    k32 = Workload.make("matmul", M=256, N=256, K=128, dtype="float32").kernels[0]
    assert gpu(k32, H100).tensor_core is None
    no_k16 = Workload.make("matmul", M=64, N=64, K=40, dtype="float16").kernels[0]
    assert gpu(no_k16, H100).tensor_core is None   # K must tile by 16


def test_ragged_gemm_pads_its_tiles_and_computes_the_reference():
    """M = 100: the hand rule pads M to 16-row tiles (guarded copies and stores)."""
    import numpy as np
    from superopt.backends.emu import run_program
    from superopt.ir import dtype as dt
    from superopt.ir.interpret import run_kernel
    from superopt.ir.lower import lower
    k = Workload.make("matmul", M=100, N=64, K=64, dtype="float16").kernels[0]
    s = gpu(k, H100)
    assert s.tensor_core is not None and not check(k, s, H100)
    rng = np.random.default_rng(2)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    r = run_program(lower(k, s, H100), ins)
    got = dt.to_values(r.output, k.output.dtype).astype(np.float64)
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    assert r.written.all() and np.all(np.abs(got - ref) <= 2e-3 * np.maximum(1, np.abs(ref)))
    assert r.counters.bank_conflicts == 0 and r.counters.races == 0


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
    # (a 128x128x64 GEMM is all launch: there a split-reduce SIMT kernel models 0.1 us faster)
    k = Workload.make("matmul", M=128, N=256, K=256, dtype="bfloat16").kernels[0]
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
    # a producer warp (warp specialization) comes on top of at most 8 warps and pipelines up to 6 stages
    ws = [s for _, s in pts if s.tensor_core.producer]
    assert ws and all(s.stages <= 6 and s.threads(H100.warp) == H100.warp * (s.threads(H100.warp) // H100.warp) <= 288 for s in ws)
    assert all(s.stages <= 4 and s.threads(H100.warp) <= 256 for _, s in pts if not s.tensor_core.producer)


# ---- convolutions as implicit GEMM -----------------------------------------------------
def _resnet_conv(layout: str, d: str = "float16"):
    return Workload.make("conv2d", N=32, C=64, H=56, W=56, K=64, stride=1, pad=1, layout=layout, dtype=d).kernel


def test_conv_match_maps_pixels_channels_and_window():
    from superopt.ir import tensorcore as tcm
    nhwc = tcm.match(_resnet_conv("nhwc"))
    # out[n, y, x, k] = sum over c, ky, kx: M = x (pixels), N = k, K = c, window (ky, kx)
    assert (nhwc.m, nhwc.n, nhwc.k, nhwc.window, nhwc.batch) == (2, 3, 4, (5, 6), (0, 1))
    assert nhwc.a.vec == nhwc.b.vec == 8 and not nhwc.a.k_major        # channels contiguous: 16-byte copies
    nchw = tcm.match(_resnet_conv("nchw"), m_axis=3)
    assert (nchw.m, nchw.n, nchw.k) == (3, 1, 4) and nchw.a.k_major and nchw.a.vec == 1   # x +- 1 shifts: unaligned
    assert "not a reduce axis" in tcm.match(_resnet_conv("nhwc"), k_axis=2)
    s2 = Workload.make("conv2d", N=1, C=32, H=9, W=9, K=32, stride=2, pad=1, layout="nhwc", dtype="float16").kernel
    assert tcm.match(s2).a.vec == 8                                      # stride 2 keeps channel rows aligned


def test_hand_rule_gives_the_resnet_conv_tensor_cores():
    from dataclasses import replace
    from superopt.ir import tensorcore as tcm
    sm80 = nvidia_at(H100, 80)   # no wgmma: the mma.sync rule
    for layout in ("nchw", "nhwc"):
        for d in ("float16", "bfloat16"):
            k = _resnet_conv(layout, d)
            s = gpu(k, sm80)
            assert s.tensor_core is not None and not check(k, s, sm80), layout
            t = tcm.tiles(k, s, H100.warp)
            # M: 2 images x 8 rows x 8 columns flattened (no padding of the 56x56 map), N: 64 channels
            assert (t.bm, t.bn, t.m_ext, t.steps) == (128, 64, (2, 8, 8), 9 * 64 // t.bk) and s.stages == 3
            assert t.gm * t.bm == 32 * 56 * 56 and len(s.tensor_core.m_outer) == 2
            for which in ("a", "b"):   # the layouts are conflict-free by the solver's own count
                rows, width, ph = banks.operand_phases(k, s, which, H100.warp)
                mt = tcm.match_tc(k, s.tensor_core)
                st = next(x for x in s.staging if x.input == (mt.a if which == "a" else mt.b).input)
                assert banks.conflicts(rows, width, ph, st.pad, st.swizzle, st.shift) == 0
            # sm_90: wgmma, warp-specialized where TMA boxes both operands (NHWC), else 4 whole rows a tile
            s = gpu(k, H100)
            assert s.tensor_core.instr.startswith("wgmma.") and not check(k, s, H100)
            t = tcm.tiles(k, s, H100.warp)
            if layout == "nhwc":
                assert s.tensor_core.producer and all(x.tma for x in s.staging)
                assert (t.bm, t.bn, t.bk, t.m_ext, s.stages, s.threads(H100.warp)) == (128, 64, 64, (2, 8, 8), 4, 160)
            else:
                assert not s.tensor_core.producer and not any(x.tma for x in s.staging)
                assert (t.bm, t.bn, t.bk, t.m_ext, s.stages, s.threads(H100.warp)) == (256, 64, 64, (4, 64), 3, 256)
    fp32 = Workload.make("conv2d", N=1, C=16, H=8, W=8, K=16, dtype="float32").kernel
    assert gpu(fp32, H100).tensor_core is None


def test_conv_space_is_legal_ranked_and_bounded():
    from superopt.search import tc_space
    for layout in ("nchw", "nhwc"):
        k = Workload.make("conv2d", N=4, C=32, H=28, W=28, K=32, stride=1, pad=1, layout=layout, dtype="float16").kernel
        pts = tc_space.points(k, H100)
        assert pts and [t for t, _ in pts] == sorted(t for t, _ in pts)
        assert all(not check(k, s, H100) and s.tensor_core is not None for _, s in pts[:50])
        assert len({s.tensor_core.m_axis for _, s in pts}) > 1              # several GEMM views
        (t, s), = tc_space.best(k, H100, top_k=1)
        assert not check(k, s, H100) and t == cost.modeled_time(k, s, H100)
        assert t >= k.flops / H100.flops_tc_fp16 and t >= k.min_bytes / H100.dram_bw
        assert t <= cost.modeled_time(k, gpu(k, H100), H100)


def test_tile_fits_bounds_the_padding():
    from superopt.search.tc_space import tile_fits
    assert tile_fits(56, 64) and tile_fits(56, 16) and not tile_fits(56, 128)
    assert tile_fits(128, 128) and tile_fits(12, 16) and not tile_fits(40, 32)

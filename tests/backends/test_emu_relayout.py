"""Relayout plans (ir/relayout.py, search/plan.relayout) on the emulator: an NCHW
convolution computed as channels-last copies of its input and filter, then the kernel
reading them (warp-specialized TMA boxes, its staged epilogue writing the NCHW output in
16-byte pieces along the output rows), against the interpreter, with no races and no bank
conflicts; the model plans the ResNet conv so and keeps small or NHWC convs whole; the
runtime runs a plan's steps; the final kernel compiles for sm_90a."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt import Tensor, runtime
from superopt.ir import dtype as dt
from superopt.ir import tensorcore as tcm
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.ir.lower_wgmma import pieces_along_m
from superopt.kernels import reference as ref
from superopt.kernels.registry import Workload
from superopt.search import plan as plans
from superopt.search import wgmma_space
from superopt.search.machine import H100
from gemm_cases import close16, emu_plan  # noqa: E402 - same folder (on sys.path under pytest)


def _conv(layout="nchw", **p):
    q = dict(N=1, C=64, H=4, W=56, K=64, R=3, S=3, stride=1, pad=1)
    return Workload.make("conv2d", layout=layout, dtype=p.pop("dtype", "float16"), **{**q, **p}).kernel


def _ws_final(k, pick: int = 0):
    """k's relayout plan with its last step the ``pick``-th (cyclically) warp-specialized
    variant whose M tile ends along the output row (the output's contiguous axis), or None."""
    from dataclasses import replace
    p = plans.relayout_plan(k, H100, plans.k_last_orders(k))
    f = p.final
    col = next(a for a in f.kernel.output_axes if tcm.axis_stride(f.kernel.store, a, f.kernel.axes[a].size) == 1)
    ws = [s for key, s in wgmma_space.variants(f.kernel, H100) if "ws" in key and key[-1]["m_axes"][-1] == col]
    if not ws: return None
    return plans.Plan(p.kind, (*p.steps[:-1], replace(f, schedule=ws[pick % len(ws)])), p.modeled_s, p.whole_s, p.detail)


def test_the_model_relayouts_the_resnet_nchw_conv_only():
    k = Workload.make("conv2d", N=32, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, layout="nchw", dtype="float16").kernel
    p = plans.best(k, H100)
    assert p is not None and p.kind == "relayout" and p.modeled_s < p.whole_s
    assert [x.kernel.kind for x in p.steps] == ["elementwise", "elementwise", "conv"]
    f = p.final
    assert f.inputs == (-1, -2) and f.schedule.tensor_core.producer and all(x.tma for x in f.schedule.staging)
    assert f.kernel.output == k.output and f.kernel.inputs[0].shape == (32, 56, 56, 64) and f.kernel.inputs[1].shape == (64, 3, 3, 64)
    nhwc = Workload.make("conv2d", N=32, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, layout="nhwc", dtype="float16").kernel
    assert plans.k_last_orders(nhwc) == {} and plans.best(nhwc, H100) is None
    assert plans.best(_conv(), H100) is None          # launch-bound: the copies cost more than they save


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["float16", "bfloat16"]), st.integers(1, 2), st.integers(3, 5), st.sampled_from([56, 64]),
       st.sampled_from([0, 1]), st.integers(0, 9), st.integers(0, 99))
def test_relayout_plans_compute_the_nchw_conv(d, n, h, w, pad, pick, seed):
    k = _conv(N=n, H=h, W=w, pad=pad, dtype=d)
    p = _ws_final(k, pick)
    assume(p is not None)
    rng = np.random.default_rng(seed)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    got, counters = emu_plan(k, p, ins)
    want = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    assert close16(got, want, d)
    assert all(c.races == 0 and c.bank_conflicts == 0 for c in counters), counters


def test_the_epilogue_writes_pieces_along_the_output_rows():
    p = _ws_final(_conv())
    f = p.final
    m, t = tcm.match_tc(f.kernel, f.schedule.tensor_core), tcm.tiles(f.kernel, f.schedule, H100.warp)
    assert pieces_along_m(f.kernel, m, t)
    gemm = Workload.make("matmul", M=256, N=256, K=256, dtype="float16").kernel
    (_, s), = [(t, s) for t, s in wgmma_space.variants(gemm, H100) if "ws" in t][:1]
    assert not pieces_along_m(gemm, tcm.match_tc(gemm, s.tensor_core), tcm.tiles(gemm, s, H100.warp))


def test_the_runtime_runs_a_relayout_plan(tmp_path):
    """A plan put in the runtime's table (the model plans only large convs, too slow to emulate)
    runs as its three kernels on the emulator and gives the conv."""
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-1, 1, (1, 64, 4, 56)).astype(np.float16), rng.uniform(-1, 1, (64, 64, 3, 3)).astype(np.float16)
    y = Tensor(x).conv2d(Tensor(w), padding=1)
    (step,) = y.schedule()
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        rt.plans[step.kernel.key] = _ws_final(step.kernel)
        got = y.numpy().astype(np.float64)
        assert rt.stats["relayout"] == 1 and rt.stats["plan"] == 3 and rt.stats["interpreter"] == 0
    want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), 1, 1)
    assert close16(got, want, "float16")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc for the PTX check")
def test_the_plan_compiles_for_sm90a(tmp_path):
    from superopt.backends.cuda.render import render
    from superopt.backends.cuda.wgmma import arch_for
    k = Workload.make("conv2d", N=32, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, layout="nchw", dtype="float16").kernel
    for x in plans.best(k, H100).steps:
        src, _ = render(lower(x.kernel, x.schedule, H100))
        (tmp_path / "k.cu").write_text(src)
        r = subprocess.run(["nvcc", f"-arch={arch_for(src, 'sm_90')}", "-cubin", "-Xptxas", "-warn-spills", "-o", str(tmp_path / "k.cubin"),
                            str(tmp_path / "k.cu")], capture_output=True, text=True)
        assert r.returncode == 0 and "spill" not in r.stderr, r.stderr[-3000:]


# ---- on a GPU ------------------------------------------------------------------------------
def test_relayout_plan_on_the_gpu(cuda):
    """The ResNet conv at batch 2 as a relayout plan (the copies at the solver's optimum, a
    warp-specialized final kernel over whole output rows) gives the reference."""
    from gemm_cases import gpu_values, gpu_wrong, normal_inputs, reference_values
    k = Workload.make("conv2d", N=2, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, layout="nchw", dtype="float16").kernel
    p = _ws_final(k, 0)
    ins = normal_inputs(k)
    outs = []
    for x in p.steps:
        c, got = gpu_values(cuda, lower(x.kernel, x.schedule, cuda.machine), x.kernel, x.operands(ins, outs))
        outs.append(dt.to_storage(got.reshape(x.kernel.output.shape), x.kernel.output.dtype))
    bad, why = gpu_wrong(c, got.reshape(k.output.shape), reference_values(k, ins).reshape(k.output.shape))
    assert not bad.any(), why

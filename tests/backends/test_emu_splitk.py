"""Split-K (ir/splitk.py, search/plan.split_k) on the emulator: the partial GEMM on
tensor cores and the combine kernel, run one after the other, compute the original
kernel (epilogue included) for random small GEMMs, batched GEMMs, dtypes and splits; the
model splits only grids that underfill the SMs; bad splits are refused."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt import Tensor
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.ir.splitk import split_k
from superopt.kernels.registry import Workload
from superopt.search.plan import split_k as split_plan_of, split_plan
from superopt.search.machine import H100
from gemm_cases import close16, emu_plan  # noqa: E402 - same folder (on sys.path under pytest)



def _run_plan(k, plan, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Run partial then combine on the emulator (all blocks); (got, reference, counters)."""
    rng = np.random.default_rng(seed)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    got, counters = emu_plan(k, plan, ins)
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    return got, ref, counters


def _gemm_with_epilogue(M: int, N: int, K: int, name: str):
    d = dt.dtype_by_name(name)
    a, b = Tensor.empty(M, K, dtype=d, name="a"), Tensor.empty(K, N, dtype=d, name="b")
    bias = Tensor.empty(N, dtype=d, name="bias")
    (step,) = (a @ b + bias.reshape(1, N).expand(M, N)).relu().schedule()
    return step.kernel


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["matmul", "bmm", "epilogue"]), st.sampled_from(["float16", "bfloat16"]),
       st.sampled_from([2, 4]), st.integers(1, 2), st.integers(1, 2), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_split_plans_compute_the_original_kernel(kind, d, n, mm, nn, kk, seed):
    M, N, K = 32 * mm, 32 * nn, 64 * kk * n
    k = (Workload.make("matmul", M=M, N=N, K=K, dtype=d).kernel if kind == "matmul" else
         Workload.make("bmm", B=2, M=M, N=N, K=K, dtype=d).kernel if kind == "bmm" else _gemm_with_epilogue(M, N, K, d))
    plan = split_plan(k, H100, n)
    assert plan is not None and plan.steps[0].schedule.tensor_core is not None
    got, ref, (c1, _) = _run_plan(k, plan, seed)
    assert close16(got, ref, d)
    assert c1.bank_conflicts == 0 and c1.races == 0
    assert plan.steps[0].schedule.blocks() % n == 0   # the split axis is on the grid


def test_the_model_splits_underfilled_grids_only():
    small = Workload.make("matmul", M=64, N=64, K=2048, dtype="float16").kernel
    plan = split_plan_of(small, H100)
    assert plan is not None and plan.modeled_s < plan.whole_s and plan.steps[0].schedule.blocks() > 1
    got, ref, _ = _run_plan(small, plan, 0)
    assert np.all(np.abs(got - ref) <= 2e-3 * np.maximum(1.0, np.abs(ref)))
    big = Workload.make("matmul", M=4096, N=4096, K=1024, dtype="float16").kernel
    assert split_plan_of(big, H100) is None       # 1024 blocks already fill 132 SMs


def test_split_k_refuses_what_it_cannot_split():
    k = Workload.make("matmul", M=32, N=32, K=96, dtype="float16").kernel
    with pytest.raises(ValueError, match="do not divide"):
        split_k(k, 5)
    with pytest.raises(ValueError, match="not a reduce axis"):
        split_k(k, 2, axis=0)
    conv = Workload.make("conv2d", N=1, C=16, H=6, W=6, K=16, dtype="float16").kernel
    with pytest.raises(ValueError, match="several axes"):
        split_k(conv, 2, axis=conv.reduce_axes[0])
    part, comb = split_k(k, 3)
    assert part.output.shape == (3, 32, 32) and part.axes[0].size == 3 and comb.axes[-1].size == 3
    assert part.flops == k.flops and comb.inputs[-1] == part.output


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="no nvcc for the PTX check")
def test_split_plan_programs_compile_for_sm90(tmp_path):
    """The 1024x1024x8192 plan's partial (tensor cores, the split on the grid) and combine
    programs pass nvcc/ptxas for sm_90 (sm_90a where the partial is a wgmma kernel; no GPU needed)."""
    import subprocess
    from superopt.backends.cuda.render import render
    from superopt.backends.cuda.wgmma import arch_for
    k = Workload.make("matmul", M=1024, N=1024, K=8192, dtype="float16").kernel
    plan = split_plan(k, H100, 4)
    for x in plan.steps:
        src, _ = render(lower(x.kernel, x.schedule, H100))
        (tmp_path / "k.cu").write_text(src)
        r = subprocess.run(["nvcc", f"-arch={arch_for(src, 'sm_90')}", "-cubin", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]

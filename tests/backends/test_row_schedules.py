"""Row kernels (softmax, layernorm in one kernel) x random legal schedules compute the
reference on ``cpu`` and on ``emu`` (race-free, conflict-free where the layout allows);
the CUDA renderer keeps the barriers its warp shuffles need."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt import Tensor
from superopt.backends.emu import run_program
from superopt.ir.interpret import run_kernel
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import lower
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.search import space
from superopt.search.hand import hand_schedule
from superopt.search.machine import H100, load
from superopt.verify import random_inputs, verify

CPU = load("cpu")
OPS = ["softmax", "layernorm", "rmsnorm", "shift"]


def _row_kernel(op: str, shape: tuple[int, ...], axis: int):
    x = Tensor.empty(*shape, name="x")
    t = {"softmax": lambda: x.softmax(axis), "layernorm": lambda: x.layernorm(axis), "rmsnorm": lambda: x.rmsnorm(axis),
         "shift": lambda: (x - x.max(axis, keepdim=True)) * (x * x).sum(axis, keepdim=True)}[op]()
    steps = kernelize(t.node)
    assert len(steps) == 1 and steps[0].kernel.kind == "row"
    return steps[0].kernel


@st.composite
def row_kernel_and_schedule(draw, machine):
    shape = tuple(draw(st.lists(st.integers(2, 40), min_size=2, max_size=3)))
    k = _row_kernel(draw(st.sampled_from(OPS)), shape, draw(st.integers(0, len(shape) - 1)))
    sp = space.build(k, machine)
    choice = [draw(st.integers(0, len(o) - 1)) for o in sp.axis_options]
    s = sp.schedule(choice, draw(st.sampled_from(sp.vectors)), draw(st.sampled_from(sp.workers)))
    assume(not check(k, s, machine))
    return k, s


def _close(got, want) -> bool:
    return bool(np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-4, atol=2e-5))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(row_kernel_and_schedule(H100), st.integers(0, 2**31 - 1))
def test_random_row_schedules_on_emu(ks, seed):
    k, s = ks
    ins = random_inputs(k, np.random.default_rng(seed))
    p = lower(k, s, H100)
    r = run_program(p, ins, max_blocks=p.blocks)
    assert r.written.all() and _close(r.output, run_kernel(k, ins)), s.describe(k)
    assert r.counters.races == 0, s.describe(k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(row_kernel_and_schedule(CPU), st.integers(0, 2**31 - 1))
def test_random_row_schedules_on_cpu(cpu_backend, ks, seed):
    k, s = ks
    assert verify(k, s, cpu_backend, seed=seed).ok, s.describe(k)


@pytest.mark.parametrize("threads", [8, 32, 128, 256])
def test_block_wide_rows_fold_in_two_stages_without_races(threads):
    """Up to a warp: shuffles; beyond: warps' totals through shared memory, then a broadcast."""
    from superopt.backends.cuda.render import render
    k = _row_kernel("layernorm", (4, 1024), 1)
    s = Schedule(((Split(Level.GRID, 4),), (Split(Level.LOOP, 1024 // (threads * 4)), Split(Level.THREAD, threads),
                                            Split(Level.UPCAST, 4))), vector=4)
    assert check(k, s, H100) == []
    ins = random_inputs(k, np.random.default_rng(1))
    p = lower(k, s, H100)
    r = run_program(p, ins, max_blocks=p.blocks)
    c = r.counters
    assert _close(r.output, run_kernel(k, ins))
    assert c.races == 0 and c.bank_conflicts == 0 and c.coalescing == 1.0, c.to_dict()
    assert "shfl" in c.instructions
    src = render(p)[0]
    # per REDUCE: the barrier after the shuffled warp totals (when warps meet in shared memory) and after the broadcast
    per_reduce = 2 if threads > 32 else 1
    assert src.count("__syncthreads();") == per_reduce * 2 and src.count("__shfl_xor_sync") > 0


@pytest.mark.parametrize("op", OPS)
def test_hand_rules_verify_on_both_machines(cpu_backend, op):
    k = _row_kernel(op, (24, 96), 1)
    assert verify(k, hand_schedule(k, CPU), cpu_backend, seed=2).ok
    ins = random_inputs(k, np.random.default_rng(2))
    r = run_program(lower(k, hand_schedule(k, H100), H100), ins)
    assert _close(r.output, run_kernel(k, ins)) and r.counters.races == 0


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="no nvcc to compile the CUDA source")
def test_row_and_index_kernels_compile_for_sm90_without_spills(tmp_path):
    """The CUDA source of the membound row kernels and the embedding kernel at full size
    (hand rules) passes nvcc/ptxas for sm_90, with no local-memory spills (no GPU needed)."""
    import re
    import subprocess
    from superopt.backends.cuda.render import render
    from superopt.kernels.registry import Workload
    for w in (Workload.make("softmax", M=8192, N=8192), Workload.make("layernorm", M=8192, N=1024),
              Workload.make("rmsnorm", M=2048, N=4096, dtype="float16"), Workload.make("embedding", T=8192, V=30522, D=1024)):
        k = w.kernel
        src, _ = render(lower(k, hand_schedule(k, H100), H100))
        (tmp_path / "k.cu").write_text(src)
        r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                            str(tmp_path / "k.cu")], capture_output=True, text=True)
        assert r.returncode == 0, (w.name, r.stderr[-3000:])
        spills = [int(x) for x in re.findall(r"(\d+) bytes spill stores", r.stderr)]
        assert spills and max(spills) == 0, (w.name, r.stderr[-2000:])


def _gpu():
    from superopt.backends.cuda.cuda_backend import probe
    return probe()


@pytest.mark.skipif(not _gpu()[0], reason="no CUDA device")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(row_kernel_and_schedule(H100), st.integers(0, 2**31 - 1))
def test_random_row_schedules_on_cuda(cuda, ks, seed):
    k, s = ks
    assert verify(k, s, cuda, seed=seed).ok, s.describe(k)


@pytest.mark.skipif(not _gpu()[0], reason="no CUDA device")
def test_full_size_row_and_index_kernels_verify_on_cuda(cuda):
    from superopt.kernels.registry import Workload
    for w in (Workload.make("softmax", M=8192, N=8192), Workload.make("layernorm", M=8192, N=1024),
              Workload.make("rmsnorm", M=2048, N=4096, dtype="float16"), Workload.make("embedding")):
        r = verify(w.kernel, hand_schedule(w.kernel, H100), cuda, seed=3)
        assert r.ok, (w.name, r.reason)

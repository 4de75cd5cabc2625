"""The CUDA backend. Without a GPU: the renderer's output parses as C++ (g++ with a small
stand-in header for the CUDA builtins) and asking for the backend says no device is
present. With a GPU (and cuda-python): kernels verify against the interpreter, failures
(compile error, illegal address, hang) are reported per candidate and the process goes on,
and calibration measures sane ceilings."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from superopt.backends.base import Failure, get
from superopt.backends.cuda.cuda_backend import probe
from superopt.backends.cuda.render import render
from superopt.ir import dtypes as dt
from superopt.ir.kernel import Buffer
from superopt.ir.lower import lower
from superopt.ir.node import Node, Ops, TRUE, const, special
from superopt.ir.program import Program, Store
from superopt.kernels.suites import suite
from superopt.search.hand import gpu
from superopt.search.machine import H100
from superopt.verify import verify

from test_emu import kernel_and_schedule  # noqa: E402 - same folder (pytest prepends it to sys.path)

HAVE_GPU, WHY = probe()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {WHY}")

STUB = r"""
#include <cstring>
#include <cmath>
#include <algorithm>
using std::max; using std::min; using std::isnan;
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(x)
#define __shared__ static
#define __align__(x) __attribute__((aligned(x)))
#define asm(...) (void)0
struct dim3_ { unsigned x, y, z; }; static dim3_ blockIdx, threadIdx;
struct uint2 { unsigned x, y; }; struct uint4 { unsigned x, y, z, w; };
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline void __syncthreads() {}
template <class T> T __shfl_xor_sync(unsigned, T v, int) { return v; }
"""


def _parses(src: str, tmp_path) -> str:
    f = tmp_path / "k.cpp"
    f.write_text(STUB + src.replace("asm volatile(", "asm("))  # inline PTX is NVRTC's to check
    r = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-w", str(f)], capture_output=True, text=True)
    return r.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the syntax check")
def test_hand_schedules_of_every_small_suite_render_valid_cpp(tmp_path):
    for name in ("bert", "resnet", "llm", "membound", "dsp"):
        for w in suite(name, small=True):
            for k in w.kernels:
                src, _ = render(lower(k, gpu(k, H100), H100))
                assert not _parses(src, tmp_path), f"{k.name}:\n{src}"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the syntax check")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])
@given(kernel_and_schedule())
def test_random_schedules_render_valid_cpp(tmp_path, ks):
    k, s = ks
    src, _ = render(lower(k, s, H100))
    assert not _parses(src, tmp_path), src


def test_split_reduce_within_a_warp_uses_shuffles():
    from superopt import Tensor
    from superopt.ir.schedule import Level, Schedule, Split
    k = Tensor.empty(64, 256, name="a").sum(axis=1).schedule()[-1].kernel
    warp = Schedule(((Split(Level.GRID, 8), Split(Level.THREAD, 8)), (Split(Level.LOOP, 8), Split(Level.THREAD, 32))))
    block = Schedule(((Split(Level.GRID, 64),), (Split(Level.LOOP, 4), Split(Level.THREAD, 64))))
    src_w, _ = render(lower(k, warp, H100))
    src_b, _ = render(lower(k, block, H100))
    assert "__shfl_xor_sync" in src_w and "__syncthreads" not in src_w and "__shared__" not in src_w
    assert "__shfl_xor_sync" not in src_b and "__syncthreads" in src_b   # 64 threads span two warps


@pytest.mark.parametrize("d,conv", [("float16", "f2h"), ("bfloat16", "f2b")])
def test_a_16_bit_result_is_rounded_once(d, conv):
    """The epilogue's cast to the output type is the store's conversion (the casts are inline
    asm the compiler cannot fold: rounding, widening, rounding again cost a tensor-core GEMM
    three instructions an element)."""
    from superopt.kernels.registry import Workload
    k = Workload.make("matmul", M=256, N=256, K=256, dtype=d).kernel
    src, _ = render(lower(k, gpu(k, H100), H100))
    widen = {"f2h": "h2f", "f2b": "b2f"}[conv]
    assert f"{conv}((float)" in src and f"{conv}({widen}(" not in src


def test_vector_access_only_when_aligned():
    lane = special("lane", 4)
    t = special("thread", 32)
    mk = lambda idx: Program("v", (Buffer("x", dt.float32, (256,)),), Buffer("out", dt.float32, (256,)), 1, 32, 4, 1,  # noqa: E731
                             (Store(t * 4 + lane, Node(Ops.LOAD, dt.float32, (idx, TRUE), 0)),))
    aligned, _ = render(mk(t * 4 + lane))
    shifted, _ = render(mk(t * 4 + lane + 1))
    vload = re.compile(r"const uint4 t\d+ = ")
    assert vload.search(aligned) and "uint4*>(out" in aligned    # one 16-byte load and one 16-byte store
    assert not vload.search(shifted) and "in0[" in shifted        # a misaligned load stays scalar
    assert "uint4*>(out" in shifted                               # the store is still aligned


def test_errors_a_kernel_reports_end_the_worker_process():
    """After any error reported by a kernel's execution the context is unusable (the H100
    reported an out-of-range store as INVALID_ADDRESS_SPACE); compile and memory errors are not."""
    from superopt.backends.cuda.runtime import EXECUTION, CudaError
    assert CudaError("launch", "x failed", "CUDA_ERROR_INVALID_ADDRESS_SPACE").sticky
    assert CudaError("launch", f"{EXECUTION} (cuCtxSynchronize) failed: E", "CUDA_ERROR_SOMETHING_NEW").sticky
    assert not CudaError("compile", "cuModuleLoadData failed: E", "CUDA_ERROR_INVALID_PTX").sticky
    assert not CudaError("compile", f"NVRTC could not compile {EXECUTION}", "NVRTC").sticky


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present")
def test_no_device_is_said_clearly():
    with pytest.raises(RuntimeError, match="no CUDA device is present"):
        get("cuda")


# ---- on a GPU -------------------------------------------------------------------------


@needs_gpu
def test_small_suites_verify_on_cuda(cuda):
    bad = []
    for name in ("bert", "resnet", "llm", "membound", "dsp"):
        for w in suite(name, small=True):
            for k in w.kernels:
                r = verify(k, gpu(k, cuda.machine), cuda, seed=1)
                if not r.ok: bad.append(f"{k.name}: {r.reason}")
    assert not bad, "\n".join(bad)


@needs_gpu
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(kernel_and_schedule())
def test_random_schedules_verify_on_cuda(cuda, ks):
    k, s = ks
    r = verify(k, s, cuda, seed=0)
    assert r.ok, f"{r.reason}\n{s.describe(k)}"


def _store_program(index: Node) -> Program:
    t = special("thread", 32)
    return Program("st", (Buffer("x", dt.float32, (32,)),), Buffer("out", dt.float32, (32,)), 1, 32, 1, 1,
                   (Store(index, Node(Ops.LOAD, dt.float32, (t, TRUE), 0)),))


@needs_gpu
def test_illegal_address_is_a_failure_and_the_backend_goes_on(cuda):
    t = special("thread", 32)
    bad = cuda.compile(_store_program(t + const(2_000_000_000, dt.int32)))
    assert not isinstance(bad, Failure)
    r = cuda.run(bad, [np.ones(32, np.float32)], np.zeros(32, np.float32))
    assert isinstance(r, Failure) and r.kind in ("launch", "crash"), r
    good = cuda.compile(_store_program(t))
    x = np.arange(32, dtype=np.float32)
    out = cuda.run(good, [x], np.zeros(32, np.float32))
    assert isinstance(out, np.ndarray) and np.array_equal(out, x)


def test_cuda_refuses_more_shared_memory_than_a_block_has(cuda):
    """A layernorm with 1024 threads x 8 rows x 4 vector lanes (its partials need 271 KB of
    shared memory; the H100 fidelity sample drew it as a neighbour and its launch failed with
    CUDA_ERROR_INVALID_VALUE): the legality check refuses it, and its program, lowered past
    the check, fails to compile saying why; the backend goes on."""
    from superopt.ir.lower import _Lowerer
    from superopt.ir.schedule import Schedule, check
    from superopt.kernels.registry import Workload
    k = Workload.make("layernorm", M=8192, N=1024, dtype="float32").kernels[-1]
    s = Schedule.from_dict({"version": 1, "splits": [[["grid", 256], ["thread", 4], ["upcast", 8]], [["thread", 256], ["upcast", 4]]],
                            "vector": 4})
    assert any("shared memory" in e for e in check(k, s, cuda.machine))
    c = cuda.compile(_Lowerer(k, s, cuda.machine).program())
    assert isinstance(c, Failure) and c.kind == "compile" and "shared memory" in c.message, c
    assert verify(k, gpu(k, cuda.machine), cuda).ok


@needs_gpu
def test_compile_error_and_hang_are_failures():
    from superopt.backends.cuda.worker import Worker, WorkerFailed
    w = Worker(timeout_s=60)
    resp, _ = w.request({"op": "compile", "source": "extern \"C\" __global__ void k() { undefined_thing(); }", "name": "k"})
    assert not resp["ok"] and resp["stage"] == "compile" and "undefined_thing" in resp["error"]
    spin = ('extern "C" __global__ void spin(long long* o) { long long t0 = clock64(), t = t0;'
            ' while (t - t0 >= 0) t = clock64(); o[0] = t; }')  # runs for ~centuries of clock ticks
    with pytest.raises(WorkerFailed, match="no answer"):
        resp = w.request({"op": "run", "source": spin, "name": "spin", "grid": [1], "block": [1], "buffers": [{"nbytes": 8}],
                          "outputs": [0]}, timeout_s=5)
        print("the spinning kernel returned:", resp)
    resp, _ = w.request({"op": "info"})  # a fresh worker answers
    assert resp["ok"] and resp["info"]["sms"] > 0
    w.close()


@needs_gpu
def test_timing_and_calibration_are_sane(cuda):
    from superopt.backends.cuda.calibrate import measure
    from superopt.kernels.suites import suite as s
    w = s("membound", small=True)[-1]
    k = w.kernels[0]
    c = cuda.compile(lower(k, gpu(k, cuda.machine), cuda.machine))
    t = cuda.time(c, w.random_inputs(), np.zeros(k.output.size, k.output.dtype.np), runs=10)
    assert not isinstance(t, Failure) and 0 < t.median_s < 0.01 and len(t.samples) >= 5
    m = measure(reps=5)
    assert 1e11 < m["copy_bytes_per_s"] < 2e13 and 1e12 < m["fma_flops_per_s"] < 2e14
    assert 1e12 < m["smem_bytes_per_s"] and 0 < m["launch_s"] < 1e-3


def test_l2_flush_mode_comes_from_the_environment(monkeypatch):
    from superopt.backends.cuda.runtime import flush_mode
    monkeypatch.delenv("SUPEROPT_L2_FLUSH", raising=False)
    assert flush_mode() == "write"
    monkeypatch.setenv("SUPEROPT_L2_FLUSH", "clean")
    assert flush_mode() == "clean"
    monkeypatch.setenv("SUPEROPT_L2_FLUSH", "read")
    with pytest.raises(ValueError, match="SUPEROPT_L2_FLUSH='read'"):
        flush_mode()


@needs_gpu
def test_a_clean_flush_times_a_copy_no_slower_than_a_dirty_one(cuda, monkeypatch):
    """The clean flush reads the dirty lines out before the timed launch: a copy of a few MB
    (whose time the write-back would dominate) never gets slower for it."""
    from superopt.backends.cuda.calibrate import copy_times
    from superopt.backends.cuda.runtime import median
    monkeypatch.delenv("SUPEROPT_L2_FLUSH", raising=False)
    dirty = median(copy_times(8 << 20, reps=20))
    monkeypatch.setenv("SUPEROPT_L2_FLUSH", "clean")
    clean = median(copy_times(8 << 20, reps=20))
    assert 0 < clean <= dirty * 1.05, (clean, dirty)


@needs_gpu
def test_tensor_core_rate_is_calibrated_from_our_own_gemm():
    from superopt.commands.calibrate import tensor_core_rate
    r = tensor_core_rate(reps=5, size=2048)
    assert isinstance(r, float) and 5e13 < r < 2e15, r   # an H100 GEMM of ours: some 100s of TFLOP/s


@needs_gpu
def test_tune_measures_the_split_k_plan_of_an_underfilled_gemm(cuda):
    """128x128 outputs are one tile for 132 SMs: tune measures the model's split-K plan too and
    keeps its parts for the cache exactly when they ran faster."""
    from superopt.engine import tune as tune_kernel
    from superopt.kernels.registry import Workload
    k = Workload.make("matmul", M=128, N=128, K=4096, dtype="float16").kernels[0]
    m = tune_kernel(k, cuda, budget_s=2, method="hand")
    sk = m.extra["split_k"]
    assert sk["verified"] and sk["time_s"] > 0 and sk["steps"] == 2 and bool(m.plan_parts) == sk["faster"], sk


@needs_gpu
def test_tensor_core_gemms_verify_on_cuda(cuda):
    """mma.sync / ldmatrix / cp.async kernels (fp16, bf16, batched with both B layouts,
    1 and 3 stages) compute the reference."""
    from dataclasses import replace
    from superopt.kernels.registry import Workload
    cases = [Workload.make("matmul", M=128, N=128, K=64, dtype="float16"),
             Workload.make("matmul", M=256, N=128, K=96, dtype="bfloat16"),
             Workload.make("bmm", B=3, M=64, N=64, K=64, b_layout="nk", dtype="float16"),
             Workload.make("bmm", B=2, M=128, N=64, K=128, b_layout="kn", dtype="bfloat16")]
    bad = []
    for w in cases:
        k = w.kernels[0]
        s = gpu(k, cuda.machine)
        assert s.tensor_core is not None, k.name
        for stages in (1, s.stages):
            r = verify(k, replace(s, stages=stages), cuda, seed=3)
            if not r.ok: bad.append(f"{k.name} stages {stages}: {r.reason}")
    assert not bad, "\n".join(bad)

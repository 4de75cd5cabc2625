"""Measure a GPU's ceilings with small CUDA kernels: copy bandwidth, fp32 FMA rate,
shared-memory bandwidth, launch overhead. Same timing method as every kernel (events,
L2 flushed, median). The tensor-core rate is our own GEMM's (superopt/commands/calibrate.py
``tensor_core_rate``), measured through the backend."""
from __future__ import annotations

import time

from .runtime import Device, median

SOURCE = r"""
extern "C" __global__ void copy4(float4* __restrict__ dst, const float4* __restrict__ src, long long n) {
  // 4 independent 16-byte loads in flight per thread before any store
  long long i = blockIdx.x * (long long)blockDim.x * 4 + threadIdx.x;
  float4 v[4];
  #pragma unroll
  for (int j = 0; j < 4; ++j) if (i + j * blockDim.x < n) v[j] = src[i + j * blockDim.x];
  #pragma unroll
  for (int j = 0; j < 4; ++j) if (i + j * blockDim.x < n) dst[i + j * blockDim.x] = v[j];
}
extern "C" __global__ void fma_chains(float* out, int iters, float b, float c) {
  float a0 = threadIdx.x, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7;
  for (int i = 0; i < iters; ++i) {
    #pragma unroll
    for (int j = 0; j < 16; ++j) {
      a0 = fmaf(a0, b, c); a1 = fmaf(a1, b, c); a2 = fmaf(a2, b, c); a3 = fmaf(a3, b, c);
      a4 = fmaf(a4, b, c); a5 = fmaf(a5, b, c); a6 = fmaf(a6, b, c); a7 = fmaf(a7, b, c);
    }
  }
  float s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  if (s == 1234.5f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;  // keeps the chains alive
}
extern "C" __global__ void smem_read(float* out, int iters) {
  __shared__ float4 buf[1024];
  for (int i = threadIdx.x; i < 1024; i += blockDim.x) buf[i] = make_float4(i, i + 1, i + 2, i + 3);
  __syncthreads();
  float4 acc = make_float4(0, 0, 0, 0);
  int k = threadIdx.x;
  for (int i = 0; i < iters; ++i) {
    #pragma unroll
    for (int j = 0; j < 8; ++j) {
      float4 v = buf[(k + j * 32) & 1023];  // a warp reads 512 contiguous bytes: no conflicts
      acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
    }
    k = (k + 256) & 1023;
  }
  float s = acc.x + acc.y + acc.z + acc.w;
  if (s == 1234.5f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
extern "C" __global__ void empty() {}
"""


def measure(dev: Device | None = None, reps: int = 30) -> dict:
    """Ceilings of the current device: bytes/s, flop/s, seconds per launch."""
    dev = dev or Device.get()
    fn = {n: dev.compile(SOURCE, n) for n in ("fma_chains", "smem_read", "empty")}
    res: dict = {"device": dev.info()}

    t = median(copy_times(1 << 30, reps, dev))  # 1 GiB each way
    res["copy_bytes_per_s"] = 2 * (1 << 30) / t
    res["copy_s"] = t
    sink = dev.alloc(dev.sms * 8 * 256 * 4)

    iters, blocks, threads = 512, dev.sms * 8, 256
    t = median(dev.time(lambda i: dev.launch(fn["fma_chains"], [blocks], [threads], [sink, iters, 0.999, 0.001]),
                        reps=reps, flush=False))
    res["fma_flops_per_s"] = 2 * 8 * 16 * iters * blocks * threads / t

    iters = 256
    t = median(dev.time(lambda i: dev.launch(fn["smem_read"], [blocks], [threads], [sink, iters]), reps=reps, flush=False))
    res["smem_bytes_per_s"] = 16 * 8 * iters * blocks * threads / t

    n = 2000
    dev.launch(fn["empty"], [1], [32], []); dev.synchronize()  # noqa: E702
    t = median(dev.time(lambda i: [dev.launch(fn["empty"], [1], [32], []) for _ in range(n)], reps=5, flush=False))
    res["launch_s"] = t / n  # back-to-back launches: the GPU-side cost of one
    h0 = time.perf_counter()
    for _ in range(n): dev.launch(fn["empty"], [1], [32], [])
    dev.synchronize()
    res["launch_host_s"] = (time.perf_counter() - h0) / n
    dev.free(sink)
    res["tensor_core_fp16"] = "not measured here (superopt calibrate measures it through the backend)"
    return res


def copy_times(nbytes: int, reps: int = 30, dev: Device | None = None) -> list[float]:
    """Seconds per copy of ``nbytes`` (rounded up to 16) from one device buffer to another by
    the calibration's copy kernel, timed as every kernel is (L2 flushed before each): the
    best a kernel moving ``2 * nbytes`` can do at that size, fixed costs included."""
    dev = dev or Device.get()
    fn = dev.compile(SOURCE, "copy4")
    n4 = -(-nbytes // 16)
    src, dst = dev.alloc(n4 * 16), dev.alloc(n4 * 16)
    try:
        src.fill_bytes(0x3F)
        grid = -(-n4 // (256 * 4))
        return dev.time(lambda i: dev.launch(fn, [grid], [256], [dst, src, _ll(n4)]), reps=reps)
    finally:
        dev.free(src); dev.free(dst)  # noqa: E702


def _ll(v: int):
    import ctypes
    return ctypes.c_int64(v)

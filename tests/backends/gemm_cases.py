"""GEMM workloads and the 16-bit closeness check shared by the emulator tests of the
tensor-core, wgmma, staged and split-K paths (imported by name: pytest puts this folder
on sys.path)."""
from __future__ import annotations

import numpy as np

from superopt.kernels.registry import Workload

TOL16 = {"float16": 2e-3, "bfloat16": 1.6e-2}   # one rounding of the output, fp32 accumulation


def gemm_kernel(kind: str, dtype: str, M: int, N: int, K: int, batch: int = 2):
    """``matmul``, or ``bmm_kn`` / ``bmm_nk`` (B stored [K,N] / [N,K]) of ``batch``."""
    if kind == "matmul": return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]
    return Workload.make("bmm", B=batch, M=M, N=N, K=K, b_layout=kind[4:], dtype=dtype).kernels[0]


def close16(got, ref, d: str) -> bool:
    return bool(np.all(np.abs(got - ref) <= TOL16[d] * np.maximum(1.0, np.abs(ref))))

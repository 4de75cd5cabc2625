"""The register micro-kernel shared by the packed CPU templates (``gemm.py``, ``conv.py``).

One copy of the C: an MR x NR tile of C in vector registers (NR/V vectors a row, V the
ISA's fp32 lanes), broadcast FMAs over KC steps of a packed A panel (k-major columns of MR)
and a packed B panel (k-major rows of NR). The including template defines MR, NR, V, PF and
C's strides C_RS (between rows, the M direction) and C_CS (between columns, N). Full tiles
of a row-major C store vectors; edge tiles, and a C whose N direction is strided, go
through a local tile (only the valid part reaches C; column by column when M is C's
contiguous direction, e.g. an NCHW convolution's output).
"""
from __future__ import annotations

MICRO = r"""
#define NV (NR / V)
typedef float vf __attribute__((vector_size(V * 4)));
typedef float vfu __attribute__((vector_size(V * 4), aligned(4)));  /* unaligned C rows */

static inline __attribute__((always_inline)) void micro(long kc, const float* restrict ap, const float* restrict bp,
                                                        float* restrict c, int first, long mr, long nr) {
  vf acc[MR][NV];
  #pragma GCC unroll 32
  for (int i = 0; i < MR; i++)
    #pragma GCC unroll 8
    for (int j = 0; j < NV; j++) acc[i][j] = (vf){0};
  for (long p = 0; p < kc; p++) {
#if PF > 0
    __builtin_prefetch(ap + PF * MR, 0, 3);
#endif
    vf bv[NV];
    #pragma GCC unroll 8
    for (int j = 0; j < NV; j++) bv[j] = *(const vf*)(bp + j * V);
    #pragma GCC unroll 32
    for (int i = 0; i < MR; i++) {
      float av = ap[i];
      #pragma GCC unroll 8
      for (int j = 0; j < NV; j++) acc[i][j] += av * bv[j];
    }
    ap += MR; bp += NR;
  }
  if (mr == MR && nr == NR && C_CS == 1) {
    #pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
      #pragma GCC unroll 8
      for (int j = 0; j < NV; j++) {
        vfu* q = (vfu*)(c + i * C_RS + j * V);
        *q = first ? acc[i][j] : *q + acc[i][j];
      }
  } else {  /* the edge: through a local tile, only the valid part reaches C */
    float t[MR][NR] __attribute__((aligned(64)));
    for (int i = 0; i < MR; i++) for (int j = 0; j < NV; j++) *(vf*)&t[i][j * V] = acc[i][j];
    if (C_RS == 1 && C_CS != 1) {  /* M contiguous in C: write along columns */
      for (long j = 0; j < nr; j++)
        for (long i = 0; i < mr; i++) {
          float* q = c + i + j * C_CS;
          *q = first ? t[i][j] : *q + t[i][j];
        }
    } else {
      for (long i = 0; i < mr; i++)
        for (long j = 0; j < nr; j++) {
          float* q = c + i * C_RS + j * C_CS;
          *q = first ? t[i][j] : *q + t[i][j];
        }
    }
  }
}
"""

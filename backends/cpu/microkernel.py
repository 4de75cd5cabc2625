"""The register micro-kernel shared by the packed CPU templates (``gemm.py``, ``conv.py``).

One copy of the C: an MR x NR tile of C in vector registers (NR/V vectors a row, V the
ISA's fp32 lanes), broadcast FMAs over KC steps of a packed A panel (k-major columns of MR)
and a packed B panel (k-major rows of NR). The including template defines MR, NR, V, PF and
C's strides C_RS (between rows, the M direction) and C_CS (between columns, N). Full tiles
of a row-major C store vectors; edge tiles, and a C whose N direction is strided, go
through a local tile (only the valid part reaches C; column by column when M is C's
contiguous direction, e.g. an NCHW convolution's output).

``MICRO_INT8`` is the int8 variant: the same tile of int32 accumulators, each k step 4
bytes of a row of packed A (broadcast) against 4 bytes a column of packed B. With AVX-512
VNNI (``VNNI`` 1) those are 4 unsigned x 4 signed bytes and one ``vpdpbusd`` adds the 4
products into each int32 lane; on AVX2 they are 2 int16 each and ``vpmaddwd`` adds 2
products (exact: ``vpmaddubsw`` would saturate its 16-bit sums). ``cp`` (NR int32) is
subtracted from each row at the store: 128 * the filter's column sums when an int8 input
was stored offset by 128 (VNNI only).
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
  if (C_CS == 1)  /* C's tile towards L2 under the k loop: it was last touched a KC step (a whole pass over C) ago */
    for (long i = 0; i < mr; i++) {
      #pragma GCC unroll 8
      for (int j = 0; j < NR; j += 16) __builtin_prefetch(c + i * C_RS + j, 1, 2);
      __builtin_prefetch(c + i * C_RS + NR - 1, 1, 2);
    }
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

MICRO_INT8 = r"""
#define NV (NR / V)
#if VNNI
typedef __m512i vi;
#define VLOAD(p) _mm512_loadu_si512((const void*)(p))
#define VSET1(x) _mm512_set1_epi32(x)
#define VZERO() _mm512_setzero_si512()
#define VSUB(a, b) _mm512_sub_epi32(a, b)
#define VSTORE(p, v) _mm512_store_si512((void*)(p), v)
#define DOT(acc, a, b) _mm512_dpbusd_epi32(acc, a, b)  /* 4 u8 x s8 products into each int32 lane */
#else
typedef __m256i vi;
#define VLOAD(p) _mm256_loadu_si256((const __m256i*)(p))
#define VSET1(x) _mm256_set1_epi32(x)
#define VZERO() _mm256_setzero_si256()
#define VSUB(a, b) _mm256_sub_epi32(a, b)
#define VSTORE(p, v) _mm256_store_si256((__m256i*)(p), v)
#define DOT(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))  /* 2 s16 x s16 products a lane */
#endif

static inline __attribute__((always_inline)) void micro_int8(long kq, const ta* restrict ap, const tb* restrict bp,
                                                             int32_t* restrict c, const int32_t* restrict cp, int first,
                                                             long mr, long nr) {
  vi acc[MR][NV];
  #pragma GCC unroll 32
  for (int i = 0; i < MR; i++)
    #pragma GCC unroll 8
    for (int j = 0; j < NV; j++) acc[i][j] = VZERO();
  for (long q = 0; q < kq; q++) {
#if PF > 0
    __builtin_prefetch(ap + PF * MR * KG, 0, 3);
#endif
    vi bv[NV];
    #pragma GCC unroll 8
    for (int j = 0; j < NV; j++) bv[j] = VLOAD(bp + j * V * KG);
    #pragma GCC unroll 32
    for (int i = 0; i < MR; i++) {
      int32_t a4; memcpy(&a4, ap + KG * i, 4);  /* one row's 4 bytes: its KG elements of k */
      vi av = VSET1(a4);
      #pragma GCC unroll 8
      for (int j = 0; j < NV; j++) acc[i][j] = DOT(acc[i][j], av, bv[j]);
    }
    ap += KG * MR; bp += KG * NR;
  }
  int32_t t[MR][NR] __attribute__((aligned(64)));
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++) VSTORE(&t[i][j * V], VSUB(acc[i][j], VLOAD(cp + j * V)));
  if (C_RS == 1 && C_CS != 1) {
    for (long j = 0; j < nr; j++)
      for (long i = 0; i < mr; i++) { int32_t* q = c + i + j * C_CS; *q = first ? t[i][j] : *q + t[i][j]; }
  } else {
    for (long i = 0; i < mr; i++)
      for (long j = 0; j < nr; j++) { int32_t* q = c + i * C_RS + j * C_CS; *q = first ? t[i][j] : *q + t[i][j]; }
  }
}
"""

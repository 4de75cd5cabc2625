"""The packed, cache-blocked fp32 GEMM (the ``cpu_gemm`` schedule family) rendered as C.

GotoBLAS/BLIS structure, every block size a compile-time constant from the schedule:

    for batch:  for jc (NC columns):  for pc (KC depth):
        pack B[pc:+KC, jc:+NC] into NR-wide panels      (threads share the packing)
        for ic (MC rows, threads take whole blocks):
            pack A[ic:+MC, pc:+KC] into MR-tall panels  (each thread its own buffer)
            for jr (NR): for ir (MR): micro-kernel over KC

The micro-kernel (``microkernel.py``, one copy shared with the convolution template)
keeps an MR x NR tile of C in vector registers (NR/V vectors a row, V the ISA's fp32
lanes) and does broadcast FMAs: per k step NR/V vector loads of packed B,
MR broadcasts of packed A. Packing is inside the timed call (counted). Ragged edges:
the last panels are zero-filled in the pack buffers only (the matrices are read and
written exactly to their edge); a tile past the edge goes through a small local tile.
Operands are read through their strides (transposed operands need no copy outside the
packing). ``PF`` > 0 prefetches packed A that many k steps ahead.
"""
from __future__ import annotations

from ...ir.program import Native, Program

from .microkernel import MICRO

_TEMPLATE = r"""
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

#define MR %(MR)d
#define NR %(NR)d
#define V %(V)d
#define MC %(MC)d
#define KC %(KC)d
#define NC %(NC)d
#define PF %(PF)d
#define WORKERS %(workers)d
#define BATCH %(batch)dL
#define M %(m)dL
#define N %(n)dL
#define K %(k)dL
#define A_B %(a_b)dL
#define A_RS %(a_rs)dL
#define A_CS %(a_cs)dL
#define B_B %(b_b)dL
#define B_RS %(b_rs)dL
#define B_CS %(b_cs)dL
#define C_B %(c_b)dL
#define C_RS %(c_rs)dL
#define C_CS %(c_cs)dL
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/*MICRO*/

static float *pack_b, *pack_a[WORKERS];

static void ensure_buffers(void) {
  if (pack_b) return;
  /* whole panels: the ragged last panel is zero-filled up to MR / NR */
  pack_b = aligned_alloc(64, sizeof(float) * (size_t)KC * (((NC + NR - 1) / NR) * NR));
  for (int t = 0; t < WORKERS; t++) pack_a[t] = aligned_alloc(64, sizeof(float) * (size_t)KC * (((MC + MR - 1) / MR) * MR));
}

/* B[pc:+kc, jc+j0:+NR] -> one panel, k-major rows of NR (zero past column nc) */
static void pack_b_panel(const float* restrict b, float* restrict dst, long kc, long nr) {
  for (long p = 0; p < kc; p++) {
    const float* src = b + p * B_RS;
    if (nr == NR && B_CS == 1) memcpy(dst + p * NR, src, sizeof(float) * NR);
    else for (long j = 0; j < NR; j++) dst[p * NR + j] = j < nr ? src[j * B_CS] : 0.0f;
  }
}

/* A[ic+i0:+MR, pc:+kc] -> one panel, k-major columns of MR (zero past row mr) */
static void pack_a_panel(const float* restrict a, float* restrict dst, long kc, long mr) {
  if (mr == MR) {
    for (long p = 0; p < kc; p++)
      #pragma GCC unroll 16
      for (long i = 0; i < MR; i++) dst[p * MR + i] = a[i * A_RS + p * A_CS];
  } else {
    for (long p = 0; p < kc; p++)
      for (long i = 0; i < MR; i++) dst[p * MR + i] = i < mr ? a[i * A_RS + p * A_CS] : 0.0f;
  }
}

static void gemm(const float* restrict a, const float* restrict b, float* restrict c, int workers) {
  #pragma omp parallel num_threads(workers) if(workers > 1)
  {
    int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    float* pa = pack_a[tid];
    for (long bt = 0; bt < BATCH; bt++) {
      const float* ab = a + bt * A_B; const float* bb = b + bt * B_B; float* cb = c + bt * C_B;
      for (long jc = 0; jc < N; jc += NC) {
        long nc = MIN(NC, N - jc);
        for (long pc = 0; pc < K; pc += KC) {
          long kc = MIN(KC, K - pc);
          long npanels = (nc + NR - 1) / NR;
          for (long q = tid; q < npanels; q += nt)
            pack_b_panel(bb + pc * B_RS + (jc + q * NR) * B_CS, pack_b + q * kc * NR, kc, MIN(NR, nc - q * NR));
          #pragma omp barrier
          long mblocks = (M + MC - 1) / MC;
          for (long ib = tid; ib < mblocks; ib += nt) {
            long ic = ib * MC, mc = MIN(MC, M - ic);
            for (long ir = 0; ir < mc; ir += MR)
              pack_a_panel(ab + (ic + ir) * A_RS + pc * A_CS, pa + ir * kc, kc, MIN(MR, mc - ir));
            for (long jr = 0; jr < nc; jr += NR)
              for (long ir = 0; ir < mc; ir += MR)
                micro(kc, pa + ir * kc, pack_b + (jr / NR) * kc * NR, cb + (ic + ir) * C_RS + (jc + jr) * C_CS,
                      pc == 0, MIN(MR, mc - ir), MIN(NR, nc - jr));
          }
          #pragma omp barrier  /* the B panel is repacked next */
        }
      }
    }
  }
}

int superopt_run(void** bufs, int workers) {
  (void)workers;  /* the schedule's decision, compiled in */
  ensure_buffers();
  gemm((const float*)bufs[%(a_in)d], (const float*)bufs[%(b_in)d], (float*)bufs[2], WORKERS);
  return 0;
}

double superopt_time(void** bufs, int workers, int iters) {
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  int (*volatile run)(void**, int) = superopt_run;
  for (int i = 0; i < iters; i++) { run(bufs, workers); __asm__ volatile("" ::: "memory"); }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}
"""

GEOMETRY = ("batch", "m", "n", "k", "a_in", "a_b", "a_rs", "a_cs", "b_in", "b_b", "b_rs", "b_cs", "c_b", "c_rs", "c_cs")
PARAMS = ("MR", "NR", "V", "MC", "KC", "NC", "PF", "workers")


def source(values: dict[str, int]) -> str:
    """The C source for one geometry and decided parameters (every name in GEOMETRY and PARAMS)."""
    missing = [n for n in GEOMETRY + PARAMS if n not in values]
    if missing: raise ValueError(f"cpu_gemm: missing {', '.join(missing)}")
    return (_TEMPLATE % {n: int(values[n]) for n in GEOMETRY + PARAMS}).replace("/*MICRO*/", MICRO)


def render(p: Program) -> str:
    (st,) = p.body
    assert isinstance(st, Native) and st.family == "cpu_gemm"
    return source(dict(st.params + st.geometry))

"""The implicit-GEMM fp32 convolution (the ``cpu_conv`` schedule family) rendered as C.

The GEMM is M = OH*OW output pixels (per image) x N = c_out x K = c_in*R*S, never built:

    for image:  for jc (NC c_out):  for pc (KC of K):
        pack the filter's [pc:+KC, jc:+NC] into NR-wide panels      (threads share it)
        for ic (MC pixels, threads take whole blocks as they come free):
            pack the input window of pixels [ic:+MC] x k [pc:+KC]    (each thread its buffer)
            straight into MR-tall panels (im2col of one MC x KC block, zero for padding)
            for jr (NR): for ir (MR): the shared micro-kernel (microkernel.py) over KC

K is ordered as the input's memory (ci, r, s for NCHW; r, s, ci for NHWC), so one k step
of a panel is, for MR pixels of one output row inside the input, a strided run of the
input (contiguous at stride 1 in NCHW): the packing copies runs and tests the padding only
per run; a run touching the border goes element by element. Both packings are inside the
timed call (the filter is an input of the kernel, not a constant), the filter once per
(NC, KC) block, the input once per (MC, KC) block and NC block. Output pixels are one
linear run per image (C's row stride ``o_m``), c_out strided by ``o_k``.

A 1x1 fp32 convolution of stride 1 without padding is rendered by the GEMM template instead
(``render``; search/families/cpu_conv.as_gemm maps its geometry): with NCHW its pixels are
C's contiguous axis, which the GEMM stores as vector rows (this template, pixels as M, would
write every tile through the local tile, column by column).
"""
from __future__ import annotations

from ...ir.program import Native, Program
from ...search.families.cpu_conv import as_gemm

from . import gemm
from .affinity import PIN
from .microkernel import MICRO, MICRO_INT8

_TEMPLATE = r"""
#define _GNU_SOURCE  /* sched_getaffinity, pthread_setaffinity_np */
#include <pthread.h>
#include <sched.h>
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
#define CI %(c)dL
#define H %(h)dL
#define W %(w)dL
#define OW %(ow)dL
#define R %(r)dL
#define S %(s)dL
#define SH %(sh)dL
#define SW %(sw)dL
#define PH %(ph)dL
#define PW %(pw)dL
#define X_OFF %(x_off)dL
#define X_N %(x_n)dL
#define X_C %(x_c)dL
#define X_H %(x_h)dL
#define X_W %(x_w)dL
#define W_K %(w_k)dL
#define W_C %(w_c)dL
#define W_R %(w_r)dL
#define W_S %(w_s)dL
#define O_N %(o_n)dL
#define C_RS %(o_m)dL
#define C_CS %(o_k)dL
#define NHWC %(layout)d
#define DT %(dtype)d   /* 0: fp32; 1: uint8 input x int8 filter -> int32; 2: int8 x int8 -> int32 */
#define PS (SW * X_W)  /* input elements between neighbouring pixels of a row */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#if DT == 0
typedef float tx; typedef float tw; typedef float ta; typedef float tb; typedef float tc;
#define KG 1           /* k elements a micro-kernel step consumes */
#define XV(v) (v)
#define PADV 0.0f
#else
#include <stdint.h>
#include <immintrin.h>
typedef int32_t tc; typedef int8_t tw;
#if DT == 1
typedef uint8_t tx;
#else
typedef int8_t tx;
#endif
#if defined(__AVX512VNNI__) && V == 16
#define VNNI 1
typedef uint8_t ta; typedef int8_t tb;
#define KG 4           /* one vpdpbusd: 4 bytes of k into each int32 lane */
#if DT == 2            /* int8 input: stored offset by 128 (unsigned); 128 * the filter's sums subtracted */
#define XV(v) ((uint8_t)((uint8_t)(v) ^ 0x80))
#define PADV ((uint8_t)0x80)
#define XW 0x80808080u
#else
#define XV(v) ((uint8_t)(v))
#define PADV ((uint8_t)0)
#define XW 0u
#endif
#else
#define VNNI 0         /* AVX2: vpmaddwd of int16 pairs, exact (vpmaddubsw would saturate at 16 bits) */
typedef int16_t ta; typedef int16_t tb;
#define KG 2
#define XV(v) ((int16_t)(v))
#define PADV ((int16_t)0)
#endif
#endif
#define KCE (KC * KG)  /* k elements of one KC block */
/* element (k p, row i) of an A panel and (k p, column j) of a B panel: k-major groups of KG */
#define A_AT(p, i) ((p) / KG * (MR * KG) + (i) * KG + (p) %% KG)
#define B_AT(p, j) ((p) / KG * (NR * KG) + (j) * KG + (p) %% KG)

/*MICRO*/

static tb *pack_b; static ta *pack_a[WORKERS];
static int32_t *comp;        /* int8 x int8: per packed filter column, 128 * its sum over the block */
static long *ktab[WORKERS];  /* per k of the block: input offset, r, s, filter offset */

static void ensure_buffers(void) {
  if (pack_b) return;
  pack_b = aligned_alloc(64, sizeof(tb) * (size_t)KCE * (((NC + NR - 1) / NR) * NR));
  comp = aligned_alloc(64, sizeof(int32_t) * (size_t)(((NC + NR - 1) / NR) * NR));
  for (int t = 0; t < WORKERS; t++) {
    pack_a[t] = aligned_alloc(64, sizeof(ta) * (size_t)KCE * (((MC + MR - 1) / MR) * MR));
    ktab[t] = malloc(sizeof(long) * 4 * KCE);
  }
}

/* k -> (ci, r, s) in the input's memory order */
static void k_table(long pc, long kc, long* t) {
  for (long p = 0; p < kc; p++) {
    long kk = pc + p, ci, r, s;
#if NHWC
    ci = kk %% CI; s = (kk / CI) %% S; r = kk / (CI * S);
#else
    s = kk %% S; r = (kk / S) %% R; ci = kk / (R * S);
#endif
    t[4 * p] = ci * X_C + r * X_H + s * X_W; t[4 * p + 1] = r; t[4 * p + 2] = s;
    t[4 * p + 3] = ci * W_C + r * W_R + s * W_S;
  }
}

/* filter[jc+j0:+NR, k of the block] -> one panel (zero past c_out nr and past kc to the
   k group); int8 x int8: 128 * each column's sum into cp */
static void pack_b_panel(const tw* restrict w, tb* restrict dst, long kc, long nr, const long* t, int32_t* restrict cp) {
  long kp = (kc + KG - 1) / KG * KG;
  for (long p = 0; p < kp; p++) {
    const tw* src = w + (p < kc ? t[4 * p + 3] : 0);
    for (long j = 0; j < NR; j++) dst[B_AT(p, j)] = p < kc && j < nr ? (tb)src[j * W_K] : (tb)0;
  }
#if DT == 2 && VNNI
  for (long j = 0; j < NR; j++) {
    int32_t sum = 0;
    for (long p = 0; p < kc; p++) sum += dst[B_AT(p, j)];
    cp[j] = 128 * sum;
  }
#else
  for (long j = 0; j < NR; j++) cp[j] = 0;
#endif
}

/* the input window of pixels [m0, m0+mr) x k of the block -> one panel (zero past mr and
   past kc to the k group; padding as the value 0) */
static void pack_a_panel(const tx* restrict x, ta* restrict dst, long m0, long mr, long kc, const long* restrict t) {
  long ih0[MR], iw0[MR], base[MR], run[MR + 1], nrun = 0;
  for (long i = 0; i < mr; i++) {
    long oh = (m0 + i) / OW, ow = (m0 + i) %% OW;
    ih0[i] = oh * SH - PH; iw0[i] = ow * SW - PW;
    base[i] = oh * SH * X_H + ow * SW * X_W + X_OFF;  /* the kernel's own index at r = s = ci = 0 */
    if (i == 0 || ih0[i] != ih0[i - 1]) run[nrun++] = i;  /* runs: pixels of one output row */
  }
  run[nrun] = mr;
  long kp = (kc + KG - 1) / KG * KG;
  for (long p = kc; p < kp; p++) for (long i = 0; i < MR; i++) dst[A_AT(p, i)] = 0;
#if KG == 4
  if (nrun == 1 && mr == MR) {  /* one output row: a group of 4 k inside becomes one 32-bit word a pixel */
    const long ih = ih0[0], iwa = iw0[0], iwb = iw0[MR - 1];
    const tx* restrict xb = x + base[0];
    for (long q = 0; q < kp / 4; q++) {
      const tx* restrict s4[4]; int inside = 1;
      for (int u = 0; u < 4; u++) {
        long p = 4 * q + u, r = p < kc ? t[4 * p + 1] : 0, s = p < kc ? t[4 * p + 2] : 0;
        inside &= p < kc && (unsigned long)(ih + r) < (unsigned long)H && iwa + s >= 0 && iwb + s < W;
        s4[u] = xb + (p < kc ? t[4 * p] : 0);
      }
      if (inside) {
        uint32_t* restrict d32 = (uint32_t*)(dst + q * MR * 4);
        #pragma GCC unroll 32
        for (long i = 0; i < MR; i++)
          d32[i] = ((uint32_t)(uint8_t)s4[0][i * PS] | (uint32_t)(uint8_t)s4[1][i * PS] << 8 |
                    (uint32_t)(uint8_t)s4[2][i * PS] << 16 | (uint32_t)(uint8_t)s4[3][i * PS] << 24) ^ XW;
      } else {  /* per k of the group: beyond kc, a padding row, inside, or the border column by column */
        for (int u = 0; u < 4; u++) {
          long p = 4 * q + u;
          ta* restrict d = dst + A_AT(p, 0);
          if (p >= kc) { for (long i = 0; i < MR; i++) d[i * 4] = 0; continue; }
          long r = t[4 * p + 1], s = t[4 * p + 2];
          if ((unsigned long)(ih + r) >= (unsigned long)H) { for (long i = 0; i < MR; i++) d[i * 4] = PADV; continue; }
          if (iwa + s >= 0 && iwb + s < W) {
            #pragma GCC unroll 32
            for (long i = 0; i < MR; i++) d[i * 4] = XV(s4[u][i * PS]);
            continue;
          }
          long lo = 0, hi = MR;  /* the border: padding before lo and from hi */
          while (lo < MR && iw0[lo] + s < 0) lo++;
          while (hi > lo && iw0[hi - 1] + s >= W) hi--;
          for (long i = 0; i < lo; i++) d[i * 4] = PADV;
          for (long i = lo; i < hi; i++) d[i * 4] = XV(s4[u][i * PS]);
          for (long i = hi; i < MR; i++) d[i * 4] = PADV;
        }
      }
    }
    return;
  }
#endif
  if (nrun == 1 && mr == MR) {  /* the common case: one output row, a fixed-length copy where inside */
    const long ih = ih0[0], iwa = iw0[0], iwb = iw0[MR - 1];
    const tx* restrict xb = x + base[0];
    for (long p = 0; p < kc; p++) {
      const long off = t[4 * p], r = t[4 * p + 1], s = t[4 * p + 2];
      ta* restrict d = dst + A_AT(p, 0);
      if ((unsigned long)(ih + r) < (unsigned long)H && iwa + s >= 0 && iwb + s < W) {
        #pragma GCC unroll 32
        for (long i = 0; i < MR; i++) d[i * KG] = XV(xb[off + i * PS]);
      } else {
        for (long i = 0; i < MR; i++) {
          long iw = iw0[i] + s;
          d[i * KG] = (unsigned long)(ih + r) < (unsigned long)H && (unsigned long)iw < (unsigned long)W ? XV(x[base[i] + off]) : PADV;
        }
      }
    }
    return;
  }
  for (long p = 0; p < kc; p++) {
    const long off = t[4 * p], r = t[4 * p + 1], s = t[4 * p + 2];
    ta* d = dst + A_AT(p, 0);
    for (long q = 0; q < nrun; q++) {
      long a = run[q], b = run[q + 1];
      long ih = ih0[a] + r;
      if ((unsigned long)ih < (unsigned long)H && iw0[a] + s >= 0 && iw0[b - 1] + s < W) {
        const tx* src = x + base[a] + off;
        for (long i = a; i < b; i++) d[i * KG] = XV(src[(i - a) * PS]);
      } else {  /* the border: padding tested per element */
        for (long i = a; i < b; i++) {
          long iw = iw0[i] + s;
          d[i * KG] = (unsigned long)ih < (unsigned long)H && (unsigned long)iw < (unsigned long)W ? XV(x[base[i] + off]) : PADV;
        }
      }
    }
    for (long i = mr; i < MR; i++) d[i * KG] = 0;
  }
}

/*PIN*/

static void conv(const tx* restrict x, const tw* restrict w, tc* restrict c, int workers) {
  /* each worker on its own allowed CPU for the call: woken OpenMP threads are otherwise placed
     beside their waker by the scheduler and can share one core for a whole call */
  cpu_set_t allowed;
  int pin = workers > 1 && sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) >= workers;
  #pragma omp parallel num_threads(workers) if(workers > 1)
  {
    int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    if (pin) pin_to(&allowed, tid);
    ta* pa = pack_a[tid];
    long* t = ktab[tid];
    for (long bt = 0; bt < BATCH; bt++) {
      const tx* xb = x + bt * X_N; tc* cb = c + bt * O_N;
      for (long jc = 0; jc < N; jc += NC) {
        long nc = MIN(NC, N - jc);
        for (long pc = 0; pc < K; pc += KCE) {
          long kc = MIN(KCE, K - pc), kp = (kc + KG - 1) / KG * KG;
          k_table(pc, kc, t);
          long npanels = (nc + NR - 1) / NR;
          for (long q = tid; q < npanels; q += nt)
            pack_b_panel(w + (jc + q * NR) * W_K, pack_b + q * kp * NR, kc, MIN(NR, nc - q * NR), t, comp + q * NR);
          #pragma omp barrier
          long mblocks = (M + MC - 1) / MC;
          /* MC blocks dealt as threads come free: a worker whose core is shared takes fewer */
          #pragma omp for schedule(dynamic, 1) nowait
          for (long ib = 0; ib < mblocks; ib++) {
            long ic = ib * MC, mc = MIN(MC, M - ic);
            for (long ir = 0; ir < mc; ir += MR)
              pack_a_panel(xb, pa + ir * kp, ic + ir, MIN(MR, mc - ir), kc, t);
            for (long jr = 0; jr < nc; jr += NR)
              for (long ir = 0; ir < mc; ir += MR)
                MICRO_CALL(kp / KG, pa + ir * kp, pack_b + (jr / NR) * kp * NR, cb + (ic + ir) * C_RS + (jc + jr) * C_CS,
                           comp + jr, pc == 0, MIN(MR, mc - ir), MIN(NR, nc - jr));
          }
          #pragma omp barrier  /* the filter panel is repacked next */
        }
      }
    }
  }
  if (pin) sched_setaffinity(0, sizeof allowed, &allowed);  /* the calling thread free again */
}

int superopt_run(void** bufs, int workers) {
  (void)workers;  /* the schedule's decision, compiled in */
  ensure_buffers();
  conv((const tx*)bufs[%(x_in)d], (const tw*)bufs[%(w_in)d], (tc*)bufs[2], WORKERS);
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

GEOMETRY = ("batch", "m", "n", "k", "c", "h", "w", "ow", "r", "s", "sh", "sw", "ph", "pw", "x_off", "x_n", "x_c",
            "x_h", "x_w", "w_k", "w_c", "w_r", "w_s", "o_n", "o_m", "o_k", "layout", "dtype", "x_in", "w_in")
PARAMS = ("MR", "NR", "V", "MC", "KC", "NC", "PF", "workers")


def source(values: dict[str, int]) -> str:
    """The C source for one geometry and decided parameters (every name in GEOMETRY and PARAMS)."""
    missing = [n for n in GEOMETRY + PARAMS if n not in values]
    if missing: raise ValueError(f"cpu_conv: missing {', '.join(missing)}")
    micro = MICRO + "#define MICRO_CALL(kq, ap, bp, c, cp, first, mr, nr) micro(kq, ap, bp, c, first, mr, nr)\n" \
        if values["dtype"] == 0 else MICRO_INT8 + "#define MICRO_CALL micro_int8\n"
    return (_TEMPLATE % {n: int(values[n]) for n in GEOMETRY + PARAMS}).replace("/*MICRO*/", micro).replace("/*PIN*/", PIN)


def render(p: Program) -> str:
    """The convolution's C; a 1x1 convolution that is a plain GEMM (``as_gemm``) through the
    GEMM template, which its family prices."""
    (st,) = p.body
    assert isinstance(st, Native) and st.family == "cpu_conv"
    g, params = dict(st.geometry), dict(st.params)
    if (mm := as_gemm(g)) is not None: return gemm.source({**mm, **params})
    return source({**g, **params})

"""The packed, cache-blocked fp32 GEMM (the ``cpu_gemm`` schedule family) rendered as C.

GotoBLAS/BLIS structure, every block size a compile-time constant from the schedule:

    for each block t = (batch, jc of NC columns, pc of KC depth), in one phase:
        MC row blocks of t, dealt to the workers as they come free:
            pack A[ic:+MC, pc:+KC] into MR-tall panels  (each worker its own buffer)
            for jr (NR): for ir (MR): micro-kernel over KC
        then B[pc:+KC, jc:+NC] of block t+1 into NR-wide panels, in the other buffer
        (row groups shared by the workers)
        on to block t+1 once every item of this phase is done

B is double-buffered, so the packing of the next block needs no wait of its own; a
row-major B is packed by whole rows (contiguous reads), a B strided along N panel by panel.
Work items come from an atomic counter a phase, so a worker whose core is shared takes
fewer, and a worker waits only for items in flight (never at a barrier for a worker that
has not started).

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

from .affinity import PIN
from .microkernel import MICRO

_TEMPLATE = r"""
#define _GNU_SOURCE  /* sched_getaffinity, pthread_setaffinity_np */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <stdatomic.h>

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

static float *pack_b[2], *pack_a[WORKERS];  /* B double-buffered: block t+1 packs while block t computes */

static void ensure_buffers(void) {
  if (pack_b[0]) return;
  /* whole panels: the ragged last panel is zero-filled up to MR / NR */
  for (int i = 0; i < 2; i++) pack_b[i] = aligned_alloc(64, sizeof(float) * (size_t)KC * (((NC + NR - 1) / NR) * NR));
  for (int t = 0; t < WORKERS; t++) pack_a[t] = aligned_alloc(64, sizeof(float) * (size_t)KC * (((MC + MR - 1) / MR) * MR));
}

/* the (batch, jc, pc) blocks in order; one is packed (B) while the one before it computes */
#define NJC ((N + NC - 1) / NC)
#define NPC ((K + KC - 1) / KC)
#define NBLOCKS (BATCH * NJC * NPC)
#define MBLOCKS ((M + MC - 1) / MC)
#define ROWS 16  /* k rows of B a packing item copies (row-wise packing of a row-major B) */
typedef struct { long bt, jc, nc, pc, kc; } block_t;

static block_t block(long t) {
  block_t q;
  q.pc = t %% NPC * KC; q.jc = t / NPC %% NJC * NC; q.bt = t / (NPC * NJC);
  q.nc = MIN(NC, N - q.jc); q.kc = MIN(KC, K - q.pc);
  return q;
}

/* B packing items of a block: row groups where B's rows are contiguous, else whole panels */
static long pack_items(block_t q) { return B_CS == 1 ? (q.kc + ROWS - 1) / ROWS : (q.nc + NR - 1) / NR; }

/* rows [p0, p1) of B[pc:+kc, jc:+nc] into all panels: contiguous reads of whole rows (a
   panel-by-panel copy reads NR floats a row at B's row stride, which keeps few lines live) */
static void pack_b_rows(const float* restrict b, float* restrict dst, long kc, long nc, long p0, long p1) {
  long full = nc / NR, rem = nc - full * NR;
  for (long p = p0; p < p1; p++) {
    const float* src = b + p * B_RS;
    for (long q = 0; q < full; q++) memcpy(dst + q * kc * NR + p * NR, src + q * NR, sizeof(float) * NR);
    if (rem) {
      float* d = dst + full * kc * NR + p * NR;
      for (long j = 0; j < NR; j++) d[j] = j < rem ? src[full * NR + j] : 0.0f;
    }
  }
}

/* B[pc:+kc, jc+j0:+NR] -> one panel, k-major rows of NR (zero past column nr): B strided along N */
static void pack_b_panel(const float* restrict b, float* restrict dst, long kc, long nr) {
  for (long p = 0; p < kc; p++)
    for (long j = 0; j < NR; j++) dst[p * NR + j] = j < nr ? b[p * B_RS + j * B_CS] : 0.0f;
}

static void pack_b_item(const float* restrict b, long t, long i) {
  block_t q = block(t);
  const float* src = b + q.bt * B_B + q.pc * B_RS + q.jc * B_CS;
  float* dst = pack_b[t & 1];
  if (B_CS == 1) pack_b_rows(src, dst, q.kc, q.nc, i * ROWS, MIN(q.kc, (i + 1) * ROWS));
  else pack_b_panel(src + i * NR * B_CS, dst + i * q.kc * NR, q.kc, MIN(NR, q.nc - i * NR));
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

/* one MC block of block t: pack its A, then every micro-tile against the packed B */
static void compute_item(const float* restrict a, float* restrict c, float* restrict pa, long t, long ib) {
  block_t q = block(t);
  const float* ab = a + q.bt * A_B; float* cb = c + q.bt * C_B;
  const float* pb = pack_b[t & 1];
  long ic = ib * MC, mc = MIN(MC, M - ic);
  for (long ir = 0; ir < mc; ir += MR)
    pack_a_panel(ab + (ic + ir) * A_RS + q.pc * A_CS, pa + ir * q.kc, q.kc, MIN(MR, mc - ir));
  for (long jr = 0; jr < q.nc; jr += NR)
    for (long ir = 0; ir < mc; ir += MR)
      micro(q.kc, pa + ir * q.kc, pb + (jr / NR) * q.kc * NR, cb + (ic + ir) * C_RS + (q.jc + jr) * C_CS,
            q.pc == 0, MIN(MR, mc - ir), MIN(NR, q.nc - jr));
}

/* phase t (from -1): the MC blocks of block t, then the B packing items of block t+1 (packed
   last, it is still warm in L2 when block t+1 starts; a worker done early packs while the
   other finishes), dealt as workers come free from the phase's counter. A worker moves on
   once every item of the phase is done (phase t+1 reads B(t+1) and overwrites B(t)'s buffer):
   it waits for items in flight, never for a worker that has none (one whose core is taken
   runs through the finished phases when it starts). The wait spins briefly, then yields the
   core: OpenMP's passive barrier sleeps in the kernel and wakes late. */
static atomic_long next_item[NBLOCKS + 1], done_items[NBLOCKS + 1];

static void wait_done(const atomic_long* done, long total) {
  for (int spins = 0; atomic_load_explicit(done, memory_order_acquire) < total; spins++)
    if (spins < 256) __builtin_ia32_pause(); else sched_yield();
}

/*PIN*/

static void gemm(const float* restrict a, const float* restrict b, float* restrict c, int workers) {
  /* each worker on its own allowed CPU for the call (affinity.py says why) */
  cpu_set_t allowed;
  int pin = workers > 1 && sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) >= workers;
  for (long t = 0; t <= NBLOCKS; t++) {  /* no worker runs: the region starts below */
    atomic_store_explicit(&next_item[t], 0, memory_order_relaxed);
    atomic_store_explicit(&done_items[t], 0, memory_order_relaxed);
  }
  #pragma omp parallel num_threads(workers) if(workers > 1)
  {
    if (pin) pin_to(&allowed, omp_get_thread_num());
    float* pa = pack_a[omp_get_thread_num()];
    for (long t = -1; t < NBLOCKS; t++) {
      long npack = t + 1 < NBLOCKS ? pack_items(block(t + 1)) : 0, ncomp = t >= 0 ? MBLOCKS : 0, did = 0;
      for (long i; (i = atomic_fetch_add_explicit(&next_item[t + 1], 1, memory_order_relaxed)) < npack + ncomp; did++) {
        if (i < ncomp) compute_item(a, c, pa, t, i);
        else pack_b_item(b, t + 1, i - ncomp);
      }
      if (did) atomic_fetch_add_explicit(&done_items[t + 1], did, memory_order_release);
      if (t + 1 < NBLOCKS) wait_done(&done_items[t + 1], npack + ncomp);  /* after the last phase the region's end joins */
    }
  }
  if (pin) sched_setaffinity(0, sizeof allowed, &allowed);  /* the calling thread free again */
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
    return (_TEMPLATE % {n: int(values[n]) for n in GEOMETRY + PARAMS}).replace("/*MICRO*/", MICRO).replace("/*PIN*/", PIN)


def render(p: Program) -> str:
    (st,) = p.body
    assert isinstance(st, Native) and st.family == "cpu_gemm"
    return source(dict(st.params + st.geometry))

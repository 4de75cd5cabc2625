"""Worker placement shared by the packed CPU templates (``gemm.py``, ``conv.py``).

With ``OMP_WAIT_POLICY=passive`` (the cpu backend's worker) a woken OpenMP thread can be
placed beside its waker by the scheduler and share one core with it for a whole call
(measured: 2 workers of a 3x3 convolution at the 1-worker rate after another process had
run). ``PIN`` puts each worker on its own allowed CPU for the call; the including template
defines ``_GNU_SOURCE`` before its includes and restores the caller's affinity after.
"""
from __future__ import annotations

PIN = r"""
/* this thread onto the tid-th CPU of ``allowed`` */
static void pin_to(const cpu_set_t* allowed, int tid) {
  for (int c = 0, seen = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, allowed) && seen++ == tid) {
      cpu_set_t one; CPU_ZERO(&one); CPU_SET(c, &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);
      return;
    }
}
"""

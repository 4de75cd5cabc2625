"""HVX kernels a network needs besides its convolutions (issue 29): ReLU6 as a clamp, the
residual add with requantize, the global average pool. HVX intrinsics compiled by clang
(no packet schedule of ours: each is a short streaming loop). The integer definitions are
those of ``kernels/dsp_models.py``, bit for bit:

- clamp: ``vmax(Vu.b, 0)`` a vector (the upper bound 6 is the int8 saturation of the
  producing requantize at an output scale of 6/127);
- add: ``vmpy(Vu.b, Vv.b)`` by a splat of ``ma`` widens to a halfword pair (even bytes in
  the low vector, odd in the high), ``vmpyacc`` adds ``b * mb`` (exact: |sum| < 2^15 for
  ma, mb <= 127), ``vasr(Vu.h, Vv.h, s):rnd:sat`` rounds, saturates and packs the pair back
  to bytes in order;
- average pool: ``vsxt`` widens each pixel's 128 channels to a halfword pair (even/odd),
  ``vadd.h`` sums the pixels (exact: at most 255 pixels), ``vmpy(Vu.h, Vv.h):<<1:rnd:sat``
  by a splat of ``m`` then ``vasr(..., post):rnd:sat`` back to bytes in order.

``C`` (the source of all three) goes into a program once; ``clamp_call`` / ``add_call`` /
``pool_call`` are the calls on buffers of the caller's.
"""
from __future__ import annotations

C = r"""
__attribute__((noinline)) void so_clamp0(int8_t *x, int n) {   /* in place; n bytes, whole vectors read */
  HVX_Vector z = Q6_V_vzero(), *v = (HVX_Vector *)x;
  for (int i = 0; i < (n + 127) / 128; i++) v[i] = Q6_Vb_vmax_VbVb(v[i], z);
}
__attribute__((noinline)) void so_add_rq(const int8_t *a, const int8_t *b, int8_t *o, int n, int ma, int mb, int s) {
  const HVX_Vector *va = (const HVX_Vector *)a, *vb = (const HVX_Vector *)b;
  HVX_Vector *vo = (HVX_Vector *)o, sa = Q6_V_vsplat_R(ma * 0x01010101), sb = Q6_V_vsplat_R(mb * 0x01010101);
  for (int i = 0; i < (n + 127) / 128; i++) {
    HVX_VectorPair p = Q6_Wh_vmpyacc_WhVbVb(Q6_Wh_vmpy_VbVb(va[i], sa), vb[i], sb);
    vo[i] = Q6_Vb_vasr_VhVhR_rnd_sat(Q6_V_hi_W(p), Q6_V_lo_W(p), s);
  }
}
__attribute__((noinline)) void so_avgpool(const int8_t *x, int8_t *o, int pixels, int c, int m, int post) {
  HVX_Vector sm = Q6_V_vsplat_R(m | (m << 16));
  for (int cv = 0; cv < c / 128; cv++) {
    HVX_Vector lo = Q6_V_vzero(), hi = Q6_V_vzero();
    for (int p = 0; p < pixels; p++) {
      HVX_VectorPair w = Q6_Wh_vsxt_Vb(((const HVX_Vector *)(x + p * c))[cv]);
      lo = Q6_Vh_vadd_VhVh(lo, Q6_V_lo_W(w)); hi = Q6_Vh_vadd_VhVh(hi, Q6_V_hi_W(w));
    }
    ((HVX_Vector *)o)[cv] = Q6_Vb_vasr_VhVhR_rnd_sat(Q6_Vh_vmpy_VhVh_s1_rnd_sat(hi, sm),
                                                    Q6_Vh_vmpy_VhVh_s1_rnd_sat(lo, sm), post);
  }
}
"""

# the same in plain C (the clang_autovec baseline): what a compiler gets without intrinsics
PLAIN = r"""
__attribute__((noinline)) void so_clamp0(int8_t *x, int n) { for (int i = 0; i < n; i++) x[i] = x[i] < 0 ? 0 : x[i]; }
__attribute__((noinline)) void so_add_rq(const int8_t *a, const int8_t *b, int8_t *o, int n, int ma, int mb, int s) {
  for (int i = 0; i < n; i++) { int v = (a[i] * ma + b[i] * mb + (1 << (s - 1))) >> s; o[i] = v < -128 ? -128 : v > 127 ? 127 : v; }
}
__attribute__((noinline)) void so_avgpool(const int8_t *x, int8_t *o, int pixels, int c, int m, int post) {
  for (int k = 0; k < c; k++) {
    int s = 0; for (int p = 0; p < pixels; p++) s += x[p * c + k];
    int z = (2 * s * m + (1 << 15)) >> 16; z = z < -32768 ? -32768 : z > 32767 ? 32767 : z;
    z = (z + (1 << (post - 1))) >> post; o[k] = z < -128 ? -128 : z > 127 ? 127 : z;
  }
}
"""


def check_add(ma: int, mb: int, s: int) -> None:
    if not (1 <= ma <= 127 and 1 <= mb <= 127 and 1 <= s <= 15):
        raise ValueError(f"add: multipliers {ma}, {mb} must be 1..127 (the halfword sum exact), shift {s} 1..15")


def check_pool(pixels: int, c: int, m: int, post: int) -> None:
    if not 1 <= pixels <= 255: raise ValueError(f"average pool over {pixels} pixels: the halfword sum needs 1..255")
    if c % 128: raise ValueError(f"average pool: {c} channels are not whole vectors")
    if not (0 < m < 1 << 15 and 1 <= post <= 7): raise ValueError(f"average pool: m {m} (Q15), post {post} (1..7)")


def clamp_packets(n: int) -> int:
    """Packets of the separate clamp pass over ``n`` bytes (what a fusion into a conv's
    epilogue is priced against), as clang schedules ``so_clamp0``: a loop unrolled by 8 vectors
    in 9 packets a trip (a single trip straight: 8 packets), 16 of call and set-up, and a
    remainder loop of one packet a vector (17 alone, 4 + one a vector after the main loop).
    qemu's c20 reads exactly this at 1..12, 15..17, 24, 32, 33, 40, 64 and 100 vectors."""
    q, r = divmod(-(-n // 128), 8)
    if q == 0: return 17 + r
    return (24 if q == 1 else 16 + 9 * q) + (4 + r if r else 0)


def add_packets(n: int) -> int:
    """Packets of the separate add + requantize pass over ``n`` bytes (what a fusion into the
    producing conv's epilogue is priced against), as clang schedules ``so_add_rq``: a loop
    unrolled by 8 vectors in 32 packets a trip, 18 of call and set-up; a remainder of 4 packets
    a vector (19 alone, 4 more after the main loop). qemu's c20 reads exactly this at 1..17,
    24, 32, 33, 40, 64, 100 and 144 vectors."""
    q, r = divmod(-(-n // 128), 8)
    if q == 0: return 19 + 4 * r
    return 18 + 32 * q + (4 + 4 * r if r else 0)


def clamp_call(x: str, n: int) -> str: return f"so_clamp0({x}, {n});"


def add_call(a: str, b: str, o: str, n: int, ma: int, mb: int, s: int) -> str:
    check_add(ma, mb, s)
    return f"so_add_rq({a}, {b}, {o}, {n}, {ma}, {mb}, {s});"


def pool_call(x: str, o: str, pixels: int, c: int, m: int, post: int) -> str:
    check_pool(pixels, c, m, post)
    return f"so_avgpool({x}, {o}, {pixels}, {c}, {m}, {post});"

"""HVX requantization and predicated byte stores for the Hexagon renderer.

``match`` recognizes the integer requantize of ``kernels.builders.requantize`` in a
stored value::

    int8(clamp(rshift(clamp(rshift(x, pre), int16) * mult * 2 + 2^15 >> 16, post), int8))
    rshift(v, s) = (v + 2^(s-1)) >> s        clamp(v, lo, hi) = -max(-max(v, lo), -hi)

and the renderer replaces its per-lane scalar C by the HVX sequence in ``HELPERS``
(bit-exact: every step is one instruction's exact semantics):

- ``vasr(Vu.w,Vv.w,Rt):rnd:sat``  (Q6_Vh_vasr_VwVwR_rnd_sat): rounding shift by ``pre``,
  saturate to int16, pack words to halfwords (even halfwords from Vv, odd from Vu: with
  Vu = Vv every channel lands in both halfwords of its word);
- ``vshuffe`` (Q6_Vh_vshuffe_VhVh) copies each multiplier's low halfword to both halves;
- ``vmpy(Vu.h,Vv.h):<<1:rnd:sat`` (Q6_Vh_vmpy_VhVh_s1_rnd_sat): (2*y*m + 2^15) >> 16;
- ``vasr(Vu.h,Vv.h,Rt):rnd:sat`` (Q6_Vb_vasr_VhVhR_rnd_sat): rounding shift by ``post``,
  saturate to int8, pack halfwords to bytes (channel i now in bytes 4i..4i+3);
- two ``vdeal`` (Q6_Vb_vdeal_Vb: even bytes to the low half, odd to the high half)
  gather byte 4i to byte i: the channels' bytes in order.

The L result bytes (L = the program's lanes, up to 32, so a store is always a tail of
the 128-byte vector) are written with predicated aligned stores (``if (Q) vmem(..) = V``,
Q6_vmem_QRIV): the data and a 0/1 byte mask (first L bytes, or the lanes' valid mask)
are rotated to the address's offset in its 128-byte line (``vlalign``), turned into a
predicate (``vand(V,R)``) and split at the line end (``vsetq``) into a store to the
line and, only when the L bytes cross it, one to the next line.
"""
from __future__ import annotations

from ...ir.hvx import Requant, match_requant  # noqa: F401  (re-exported)

HVX_BASE = r"""
typedef unsigned vu __attribute__((vector_size(4 * LANES)));
static inline HVX_Vector so_hvx(vi a) {
  HVX_Vector x = Q6_V_vzero(); __builtin_memcpy(&x, &a, sizeof(vi)); return x; }
static inline vi so_lanes(HVX_Vector x) { vi o; __builtin_memcpy(&o, &x, sizeof(vi)); return o; }
"""

HELPERS = r"""
/* x = acc + bias (int32 lanes), m = multiplier (0..32767 per int32 lane) -> int8 in bytes 0..31 */
static inline HVX_Vector so_requant(HVX_Vector x, HVX_Vector m, int pre, int post) {
  HVX_Vector h = Q6_Vh_vasr_VwVwR_rnd_sat(x, x, pre);
  HVX_Vector z = Q6_Vh_vmpy_VhVh_s1_rnd_sat(h, Q6_Vh_vshuffe_VhVh(m, m));
  HVX_Vector b = Q6_Vb_vasr_VhVhR_rnd_sat(z, z, post);
  return Q6_Vb_vdeal_Vb(Q6_Vb_vdeal_Vb(b));
}
/* a 0/1 byte mask: the first n bytes */
static inline HVX_Vector so_first(int n) { return Q6_V_vand_QR(Q6_Q_vsetq2_R(n), 0x01010101); }
/* int32 lanes holding 0/1 -> the same mask in bytes 0..31 */
static inline HVX_Vector so_lane_mask(vi ok) { return Q6_Vb_vdeal_Vb(Q6_Vb_vdeal_Vb(so_hvx(ok))); }
/* the bytes i < n of v whose mask byte is 1 to p + i (any alignment): predicated aligned stores */
static inline void so_vstore_masked(void *p, HVX_Vector v, HVX_Vector keep, unsigned n) {
  unsigned off = (unsigned)p & 127u;
  HVX_Vector *line = (HVX_Vector *)((unsigned)p & ~127u);
  HVX_Vector r = Q6_V_vlalign_VVR(v, v, off), k = Q6_V_vlalign_VVR(keep, keep, off);
  HVX_VectorPred q = Q6_Q_vand_VR(k, 0x01010101), head = Q6_Q_vsetq_R(off);
  Q6_vmem_QRIV(Q6_Q_and_QQn(q, head), line, r);
  if (off + n > 128u) Q6_vmem_QRIV(Q6_Q_and_QQ(q, head), line + 1, r);
}
"""


# the matcher lives with the HVX template's geometry (ir/hvx.py), below the backends
match = match_requant

"""The implicit-GEMM CPU convolution family (``cpu_conv``; template ir/cpu_conv.py, C in
backends/cpu/conv.py).

The decisions, the space, the cost model and the solver are cpu_gemm's, applied to the
implicit GEMM's m (output pixels), n (c_out) and k (c_in*R*S) that the template's matcher
reports: the family is cpu_gemm's class over the convolution template. One difference in
the space: KC also offers the whole K (up to 1024), since a convolution's K (576 for a
3x3 over 64 channels) is often just past a power of two, and a second KC pass over a short
remainder repacks the filter and re-reads C for little work. The int8 variant
(VNNI, or vpmaddwd on AVX2) is priced as the fp32 GEMM of its k steps (KC counts steps).

A 1x1 fp32 convolution of stride 1 without padding is a plain GEMM (its pixels one strided
run of the input): ``as_gemm`` gives that GEMM in the orientation whose N is the output's
contiguous axis (c_out x pixels for NCHW), and the backend runs it through the GEMM
template (backends/cpu/gemm.py), priced as that GEMM.
"""
from __future__ import annotations

from ...ir import cpu_conv as tpl

from .cpu_gemm import CPUGemm


class CPUConv(CPUGemm):
    name = "cpu_conv"
    template = tpl

    def applies(self, kernel: Kernel, machine) -> bool:
        """A convolution the template matches; int8 only where it has an int8 kernel."""
        if not super().applies(kernel, machine): return False
        return tpl.match(kernel).get("dtype", 0) == 0 or tpl.int8_step(machine) > 0

    def kcs(self, g: dict[str, int], machine) -> tuple[int, ...]:
        base, k = super().kcs(g, machine), self.model_geometry(g, machine)["k"]
        return base + ((k,) if base[-1] < k <= 1024 else ())

    def model_geometry(self, g: dict[str, int], machine) -> dict[str, int]:
        """int8: a micro-kernel step (one vpdpbusd or vpmaddwd) takes ``int8_step`` k, and
        its 4 bytes of a row or column are what 1 fp32 element is to the model, so k counts
        steps. A 1x1 convolution run as a GEMM: that GEMM's m, n, k."""
        if (mm := as_gemm(g)) is not None: return dict(g, m=mm["m"], n=mm["n"], k=mm["k"])
        return dict(g, k=-(-g["k"] // max(1, tpl.int8_step(machine)))) if g.get("dtype", 0) else g


def as_gemm(g: dict[str, int]) -> dict[str, int] | None:
    """The cpu_gemm geometry (ir/cpu_gemm.py's names) of a convolution that is a plain GEMM,
    or None: fp32, 1x1, stride 1, no padding, the output's pixels one run in the input (the
    pixel at (oh, ow) at oh*OW*x_w + ow*x_w). N is the output's contiguous axis where one is:
    pixels in NCHW (the filter is A), c_out in NHWC (the input is A)."""
    if g.get("dtype", 0) or (g["r"], g["s"], g["sh"], g["sw"], g["ph"], g["pw"], g["x_off"]) != (1, 1, 1, 1, 0, 0, 0):
        return None
    if g["ow"] != g["w"] or g["x_h"] != g["ow"] * g["x_w"]: return None
    x = {"b": g["x_n"], "pix": g["x_w"], "k": g["x_c"], "in": g["x_in"]}
    w = {"b": 0, "co": g["w_k"], "k": g["w_c"], "in": g["w_in"]}
    c = {"b": g["o_n"], "pix": g["o_m"], "co": g["o_k"]}
    base = {"batch": g["batch"], "k": g["k"], "c_b": c["b"]}
    if c["pix"] == 1 and c["co"] != 1:   # NCHW output: rows of C are c_out, pixels along them
        return dict(base, m=g["n"], n=g["m"], a_in=w["in"], a_b=w["b"], a_rs=w["co"], a_cs=w["k"],
                    b_in=x["in"], b_b=x["b"], b_rs=x["k"], b_cs=x["pix"], c_rs=c["co"], c_cs=c["pix"])
    return dict(base, m=g["m"], n=g["n"], a_in=x["in"], a_b=x["b"], a_rs=x["pix"], a_cs=x["k"],
                b_in=w["in"], b_b=w["b"], b_rs=w["k"], b_cs=w["co"], c_rs=c["pix"], c_cs=c["co"])


FAMILY = CPUConv()

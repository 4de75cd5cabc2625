"""The implicit-GEMM CPU convolution family (``cpu_conv``; template ir/cpu_conv.py, C in
backends/cpu/conv.py).

The decisions, the space, the cost model and the solver are cpu_gemm's, applied to the
implicit GEMM's m (output pixels), n (c_out) and k (c_in*R*S) that the template's matcher
reports: the family is cpu_gemm's class over the convolution template. One difference in
the space: KC also offers the whole K (up to 1024), since a convolution's K (576 for a
3x3 over 64 channels) is often just past a power of two, and a second KC pass over a short
remainder repacks the filter and re-reads C for little work. The int8 variant
(VNNI, or vpmaddwd on AVX2) is priced as the fp32 GEMM of its k steps (KC counts steps).
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
        steps."""
        return dict(g, k=-(-g["k"] // max(1, tpl.int8_step(machine)))) if g.get("dtype", 0) else g


FAMILY = CPUConv()

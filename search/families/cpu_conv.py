"""The implicit-GEMM CPU convolution family (``cpu_conv``; template ir/cpu_conv.py, C in
backends/cpu/conv.py).

The decisions, the space, the cost model and the solver are cpu_gemm's, applied to the
implicit GEMM's m (output pixels), n (c_out) and k (c_in*R*S) that the template's matcher
reports: the family is cpu_gemm's class over the convolution template. One difference in
the space: KC also offers the whole K (up to 1024), since a convolution's K (576 for a
3x3 over 64 channels) is often just past a power of two, and a second KC pass over a short
remainder repacks the filter and re-reads C for little work. The int8 variant (VNNI)
is priced as the fp32 GEMM of its k steps (4 bytes of k each; KC counts steps).
"""
from __future__ import annotations

from ...ir import cpu_conv as tpl

from .cpu_gemm import CPUGemm


class CPUConv(CPUGemm):
    name = "cpu_conv"
    template = tpl

    def applies(self, kernel: Kernel, machine) -> bool:
        """A convolution the template matches; int8 only where the host has VNNI."""
        if not super().applies(kernel, machine): return False
        return tpl.match(kernel).get("dtype", 0) == 0 or tpl.has_vnni(machine)

    def kcs(self, g: dict[str, int]) -> tuple[int, ...]:
        base, k = super().kcs(g), self.model_geometry(g)["k"]
        return base + ((k,) if base[-1] < k <= 1024 else ())

    def model_geometry(self, g: dict[str, int]) -> dict[str, int]:
        """int8: a micro-kernel step (one VNNI dot product) takes 4 k, and 4 bytes of a row
        or column are what 1 fp32 element is to the model, so k counts steps of 4."""
        return dict(g, k=-(-g["k"] // 4)) if g.get("dtype", 0) else g


FAMILY = CPUConv()

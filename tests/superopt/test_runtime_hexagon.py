"""The runtime on the Hexagon DSP (qemu): a cache miss of a kernel an HVX family applies to
runs that family's hand rule (its vrmpy template), not the generic scalar loop nest, and the
result is the integer reference's, bit for bit. Skips without clang / ld.lld / qemu-hexagon."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import runtime
from superopt.backends.hexagon import tools
from superopt.ir.kernelize import Step
from superopt.kernels.registry import Workload
from superopt.search.families import hvx, hvx_depthwise
from superopt.search.hand import hand_schedule as generic
from superopt.search.machine import load

HEX = load("hexagon")
needs_qemu = pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())


def test_a_miss_takes_the_applicable_family_s_hand_rule():
    conv = Workload.make("conv2d", N=1, C=8, H=4, W=4, K=32, R=3, S=3, stride=1, pad=1, layout="nhwc", dtype="int8").kernel
    dw = Workload.make("conv2d", H=5, W=8, C=64, K=64, groups=64, layout="nhwc", dtype="int8", stride=2).kernel
    assert runtime.hand_schedule(conv, HEX) == hvx.FAMILY.hand(conv, HEX) and not generic(conv, HEX).family
    assert runtime.hand_schedule(dw, HEX) == hvx_depthwise.FAMILY.hand(dw, HEX)
    f32 = Workload.make("matmul", M=4, N=64, K=32).kernel              # no DSP family runs fp32: the generic rule
    assert runtime.hand_schedule(f32, HEX) == generic(f32, HEX)
    h100 = load("h100")                                                 # elsewhere: the generic rules, as before
    assert runtime.hand_schedule(conv, h100) == generic(conv, h100)


@needs_qemu
def test_a_small_int8_conv_through_the_runtime_on_the_dsp(tmp_path):
    w = Workload.make("conv2d", N=1, C=8, H=4, W=4, K=32, R=3, S=3, stride=1, pad=1, layout="nhwc", dtype="int8")
    k = w.kernel
    ins = w.random_inputs(7)
    names = tuple(f"in{i}" for i in range(len(ins)))
    with runtime.using("hexagon", cache=tmp_path / "c.sqlite") as rt:
        got = rt.run_steps([Step(k, names, "out")], dict(zip(names, ins)))["out"]
        s, source = rt.schedule_for(k)
        assert source == "hand" and s.family == "hvx_gemm" and s == hvx.FAMILY.hand(k, HEX)
        assert rt.stats["interpreter"] == 0 and rt.stats["hand"] == 1     # it ran on qemu, not in the interpreter
    want = np.asarray(w.reference(ins))
    assert got.shape == tuple(k.output.shape)
    np.testing.assert_array_equal(got.reshape(-1), want.reshape(-1).astype(got.dtype))

"""A staged GEMM whose shared-memory copies are masked (the small bottleneck's first 1x1 conv)
renders a zero NVRTC accepts: ``unsigned int{}`` is not C++; it failed to compile on the H100."""
import re
import shutil
import subprocess

import pytest

from superopt.backends.cuda.render import render
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import lower
from superopt.kernels.models import MODELS
from superopt.search.hand import hand_schedule
from superopt.search.machine import load


def test_masked_staging_copies_render_a_valid_zero():
    machine = load("h100")
    m = MODELS["bottleneck"](small=True)
    srcs = [render(lower(s.kernel, hand_schedule(s.kernel, machine), machine))[0] for s in kernelize(m.out.node)]
    assert any("? *reinterpret_cast<const unsigned int*>" in s for s in srcs)   # the masked 4-byte copies are there
    for s in srcs:
        assert not re.search(r"\bunsigned int\{\}", s)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc to compile the CUDA source")
def test_the_small_bottleneck_kernels_compile_for_sm90(tmp_path):
    machine = load("h100")
    m = MODELS["bottleneck"](small=True)
    for i, s in enumerate(kernelize(m.out.node)):
        src, _ = render(lower(s.kernel, hand_schedule(s.kernel, machine), machine))
        (tmp_path / "k.cu").write_text(src)
        r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                           capture_output=True, text=True)
        assert r.returncode == 0, (i, r.stderr[-2000:])

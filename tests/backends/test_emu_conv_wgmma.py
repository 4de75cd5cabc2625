"""Convolutions as implicit GEMM on wgmma (search/wgmma_space.conv_variants): random small
3x3 convs (NCHW and NHWC, fp16 and bf16, padded and not) under random variants of the
space: thread copies, TMA boxes of an NHWC conv's windowed operands (the padding read as
TMA's zeros outside the tensor; an NCHW conv has none, ir/tma.py) and warp-specialized ones, lower
-> emu against the interpreter with no races and no bank conflicts; the CUDA source of
the ResNet conv compiles for sm_90a without spills; on a GPU the kernels compute the
interpreter's answer (skipped without one)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.cuda.render import render
from superopt.ir import tensorcore as tcm
from superopt.ir.lower import lower
from superopt.ir.program import TmaLoad, walk
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search.machine import H100
from superopt.search.wgmma_space import conv_variants, from_key
from gemm_cases import emu_written_close, gpu_values, gpu_wrong, normal_inputs, reference_values  # noqa: E402 - same folder (on sys.path under pytest)


def _conv(layout: str, dtype: str = "float16", **p):
    q = dict(N=1, C=64, H=4, W=56, K=64, R=3, S=3, stride=1, pad=1)
    return Workload.make("conv2d", layout=layout, dtype=dtype, **{**q, **p}).kernel


def _emu_check(k, s, blocks: int = 4096):
    """Run ``s`` on the emulator; every written element against the interpreter."""
    _, r, pts, ok = emu_written_close(k, s, H100, max_blocks=blocks)
    return r, pts, ok


def _twin(key) -> str:
    return key[6] if len(key) == 8 else ""


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_space_has_tma_twins_where_tma_can_copy(layout):
    k = _conv(layout)
    vs = conv_variants(k, H100)
    twins = {_twin(key) for key, _ in vs}
    # NHWC: both operands are boxes (TMA twins and warp specialization); NCHW: neither (ir/tma.py)
    assert twins == ({"", "tma", "ws"} if layout == "nhwc" else {""})
    for key, s in vs:
        assert not check(k, s, H100) and from_key(k, tcm.match(k), key) == s


@st.composite
def _case(draw):
    layout, d = draw(st.sampled_from(["nchw", "nhwc"])), draw(st.sampled_from(["float16", "bfloat16"]))
    k = _conv(layout, d, N=draw(st.integers(1, 2)), H=draw(st.integers(3, 5)), W=draw(st.sampled_from([56, 60, 64])),
              C=draw(st.sampled_from([32, 64])), pad=draw(st.sampled_from([0, 1])))
    vs = conv_variants(k, H100)
    assume(vs)
    twin = draw(st.sampled_from(["", "tma", "ws"]))
    return k, draw(st.sampled_from([v for v in vs if _twin(v[0]) == twin] or vs))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_case())
def test_random_variants_match_the_interpreter(case):
    k, (key, s) = case
    r, pts, ok = _emu_check(k, s, blocks=6)
    assert len(pts) and ok, (key, s.describe(k))
    assert r.counters.races == 0 and r.counters.bank_conflicts == 0, (key, r.counters)


@pytest.mark.parametrize("twin", ["tma", "ws"])
def test_nhwc_conv_boxes_cover_the_padding(twin):
    """Every output, the rows and columns at the image's edges included (boxes start at -1)."""
    k = _conv("nhwc", H=8)
    key, s = next((key, s) for key, s in conv_variants(k, H100) if _twin(key) == twin and key[0] == 128)
    p = lower(k, s, H100)
    assert any(isinstance(x, TmaLoad) for x in walk(p.body))
    r, pts, ok = _emu_check(k, s)
    assert ok and len(pts) == k.output.size and r.counters.races == 0


NVCC = shutil.which("nvcc")
RESNET = dict(N=32, C=64, H=56, W=56, K=64)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("layout,twin", [("nchw", ""), ("nhwc", "ws")])
def test_cuda_source_compiles_for_sm90a_without_spills(tmp_path, layout, twin):
    k = _conv(layout, **RESNET)
    _, s = next((key, s) for key, s in conv_variants(k, H100) if _twin(key) == twin and key[0] == 128)
    src, _ = render(lower(k, s, H100))
    (tmp_path / "k.cu").write_text(src)
    r = subprocess.run([NVCC, "-arch=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                        str(tmp_path / "k.cu")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 bytes spill stores" in r.stderr, r.stderr[-3000:]


# ---- on a GPU ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout,twin", [("nchw", ""), ("nhwc", "tma"), ("nhwc", "ws")])
def test_resnet_conv_variants_on_the_gpu(cuda, layout, twin):
    k = _conv(layout, **{**RESNET, "N": 2})
    ins = normal_inputs(k)
    ref = reference_values(k, ins).reshape(k.output.shape)
    for key, s in [(key, s) for key, s in conv_variants(k, cuda.machine) if _twin(key) == twin][:2]:
        bad, why = gpu_wrong(*gpu_values(cuda, lower(k, s, cuda.machine), k, ins), ref)
        assert not bad.any(), (key, why)

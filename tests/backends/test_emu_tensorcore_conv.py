"""Convolutions as implicit GEMM on tensor cores, on the emulator: random small convs
(NCHW and NHWC, 1x1 and 3x3, stride 1 and 2, pad 0 and 1, fp16 and bf16, every GEMM view
of the kernel, M along one axis or flattened over several, random tiles that may pad M/N, 16-byte or element copies, 1-3 stages,
solver-chosen layouts) compute the interpreter's result with zero bank conflicts and no
races; the ResNet 3x3 conv's hand-rule and solver schedules do too on sampled blocks;
the CUDA renderer renders the same programs (compiled and verified only with a GPU)."""
from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.cuda.render import render
from superopt.backends.emu import run_program
from superopt.ir import dtype as dt, tensorcore as tcm
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.ir.program import SharedCopy
from superopt.ir.schedule import Staging, check
from superopt.kernels.registry import Workload
from superopt.search import banks, tc_space
from superopt.search.hand import gpu
from superopt.search.machine import H100, nvidia_at
from gemm_cases import emu_written_close, normal_inputs as _inputs  # noqa: E402 - same folder (on sys.path under pytest)

SM80 = nvidia_at(H100, 80)   # no wgmma: the mma.sync rule



def _conv(layout: str, dtype: str, **p):
    return Workload.make("conv2d", layout=layout, dtype=dtype, **p).kernel



def _check_run(k, s, seed: int = 0, max_blocks: int = 4096):
    """Run on the emulator; compare every written element with the interpreter."""
    p, r, _, ok = emu_written_close(k, s, H100, seed, max_blocks)
    return p, r, ok


@st.composite
def conv_case(draw):
    layout, d = draw(st.sampled_from(["nchw", "nhwc"])), draw(st.sampled_from(["float16", "bfloat16"]))
    rs = draw(st.sampled_from([1, 3]))
    p = dict(N=draw(st.integers(1, 2)), C=16 * draw(st.integers(1, 3)), H=draw(st.integers(3, 9)),
             W=draw(st.integers(3, 9)), K=16 * draw(st.integers(1, 3)), R=rs, S=rs,
             stride=draw(st.sampled_from([1, 2])), pad=draw(st.sampled_from([0, 1])) if rs == 3 else 0)
    k = _conv(layout, d, **p)
    views = tc_space.orientations(k)
    assume(views)
    m = draw(st.sampled_from(views))
    wm, wn = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    bn = wn * 16 * draw(st.integers(1, 2))
    outer = [a for a in m.batch if k.axes[a].size > 1]
    if outer and draw(st.booleans()):   # M flattened over more pixel axes (extents may pad any of them)
        m = tcm.match(k, m.m, m.n, m.k, tuple(draw(st.permutations(outer))[:draw(st.integers(1, len(outer)))]))
        assume(not isinstance(m, str))
        inner = [draw(st.sampled_from([2, 4, 8])) for _ in m.m_axes[1:]]
        ext = (wm * draw(st.sampled_from([1, 2, 4])), *inner)
        assume(math.prod(ext) % (16 * wm) == 0 and math.prod(ext) <= 256)
    else:
        ext = (wm * 16 * draw(st.integers(1, 2)),)
    bk = draw(st.sampled_from([c for c in (16, 32) if k.axes[m.k].size % c == 0]))
    s = tc_space.make(k, m, math.prod(ext), bn, bk, wm, wn, draw(st.integers(1, 3)), ext)
    # element copies are always legal; 16-byte ones where the operand allows them
    vec = tuple(Staging(x.input, vector=draw(st.sampled_from(sorted({1, x.vector})))) for x in s.staging)
    s = replace(s, staging=vec)
    s = replace(s, staging=banks.staging(k, s, H100.warp)[0])
    return k, s


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conv_case(), st.integers(0, 2**31 - 1))
def test_tensor_core_convs_match_the_interpreter(case, seed):
    k, s = case
    assume(not check(k, s, H100))  # e.g. a tile with fewer copies than threads
    p, r, ok = _check_run(k, s, seed)
    assert r.written.all() and ok, s.describe(k) + "\n" + p.describe()
    assert r.counters.races == 0
    assert r.counters.bank_conflicts == 0          # the solver's layouts, confirmed by the counter
    t = tcm.tiles(k, s, H100.warp)
    assert r.counters.instructions["mma"] == s.blocks() * t.steps * (t.bm // 16) * (t.bn // 8) * (t.bk // 16)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [dict(N=2, C=32, H=10, W=12, K=48, stride=1, pad=1),
                                   dict(N=1, C=16, H=9, W=7, K=32, stride=2, pad=1),
                                   dict(N=2, C=64, H=6, W=6, K=16, R=1, S=1, stride=2, pad=0)])
def test_hand_rule_convs_use_tensor_cores_and_match(layout, shape):
    k = _conv(layout, "float16", **shape)
    s = gpu(k, H100)
    assert s.tensor_core is not None and not check(k, s, H100)
    _, r, ok = _check_run(k, s)
    assert r.written.all() and ok and r.counters.bank_conflicts == 0 and r.counters.races == 0


def test_padding_rows_are_zero_filled_not_read():
    """NHWC 3x3 pad 1: the copies of A carry the padding mask and the tile's row end (a 56-
    pixel row in a 64-row tile); the masked copies read nothing and write zeros."""
    k = _conv("nhwc", "float16", N=1, C=16, H=4, W=56, K=16, stride=1, pad=1)
    m = tcm.match(k)
    s = tc_space.make(k, m, 64, 16, 16, 1, 1, 2)     # the 56-pixel row alone as M, in 64-row tiles
    s = replace(s, staging=banks.staging(k, s, H100.warp)[0])
    t = tcm.tiles(k, s, H100.warp)
    assert not check(k, s, H100) and t.gm * t.bm > 56  # a padded M tile
    p = lower(k, s, H100)
    copies = [x for x in p.walk() if isinstance(x, SharedCopy) and x.input == 0]
    assert copies and all(x.width == 8 and x.valid.op.name != "CONST" for x in copies)
    ins = _inputs(k, 3)
    r = run_program(p, ins, max_blocks=4096)
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    got = dt.to_values(r.output, k.output.dtype).astype(np.float64)
    assert r.written.all() and np.all(np.abs(got - ref) <= 2e-3 * np.maximum(1, np.abs(ref)))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_resnet_3x3_conv_schedules_are_conflict_free_on_sampled_blocks(layout):
    """The target: 32x64x56x56 -> 64, fp16, stride 1, pad 1. Hand rule and the solver's
    best tensor-core point: 0 bank conflicts, no races, values right on 3 sampled blocks."""
    k = _conv(layout, "float16", N=32, C=64, H=56, W=56, K=64, stride=1, pad=1)
    hand = gpu(k, H100)
    assert hand.tensor_core is not None
    (_, solved), = tc_space.best(k, H100, top_k=1)
    for s in (hand, solved):
        assert not check(k, s, H100)
        _, r, ok = _check_run(k, s, max_blocks=3)
        assert ok and r.counters.bank_conflicts == 0 and r.counters.races == 0
        unit = "wgmma" if s.tensor_core.instr.startswith("wgmma.") else "mma"
        assert r.counters.instructions[unit] > 0


# ---- the CUDA renderer ------------------------------------------------------------------
def _syntax_errors(src: str, tmp_path) -> str:
    from test_cuda import _parses  # same folder (pytest prepends it to sys.path)
    return _parses(src, tmp_path)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_conv_programs_render(layout, tmp_path):
    k = _conv(layout, "float16", N=2, C=32, H=10, W=12, K=48, stride=1, pad=1)
    s = gpu(k, SM80)   # the mma.sync rule (wgmma's: tests/backends/test_emu_conv_wgmma.py)
    src, _ = render(lower(k, s, H100))
    if layout == "nhwc":   # 16-byte cp.async in its zero-fill form for the padded input
        assert "cp.async.cg.shared.global" in src and "? 16 : 0" in src
    else:                  # unaligned operands: guarded 2-byte element copies
        assert "cp.async" not in src and ": (unsigned short)0;" in src
    assert "mma.sync.aligned.m16n8k16" in src and "ldmatrix" in src
    if shutil.which("g++"): assert not _syntax_errors(src, tmp_path), src


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc for the PTX check")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_conv_programs_compile_for_sm90_without_spills(layout, tmp_path):
    """nvcc/ptxas (no GPU needed) accept the inline PTX (cp.async zero-fill, ldmatrix, mma)
    of the small and the ResNet convs' hand-rule programs, with no register spills."""
    import subprocess
    for p in (dict(N=2, C=32, H=10, W=12, K=48, stride=1, pad=1), dict(N=32, C=64, H=56, W=56, K=64, stride=1, pad=1)):
        k = _conv(layout, "float16", **p)
        src, _ = render(lower(k, gpu(k, SM80), H100))
        cu = tmp_path / "k.cu"
        cu.write_text(src)
        r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "k.cubin"), str(cu), "-Xptxas", "-v"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "0 bytes spill stores" in r.stderr, r.stderr


def test_conv_tensor_core_schedules_verify_on_cuda():
    from superopt.backends.cuda.cuda_backend import probe
    have, why = probe()
    if not have: pytest.skip(f"no CUDA device: {why}")
    from superopt.backends.base import get
    from superopt.verify import verify
    be = get("cuda")
    try:
        bad = []
        for layout in ("nchw", "nhwc"):
            for d in ("float16", "bfloat16"):
                for p in (dict(N=2, C=32, H=10, W=12, K=48, stride=1, pad=1), dict(N=2, C=64, H=14, W=14, K=64, stride=2, pad=1)):
                    k = _conv(layout, d, **p)
                    for s in (gpu(k, be.machine), tc_space.best(k, be.machine, top_k=1)[0][1]):
                        r = verify(k, s, be, seed=1)
                        if not r.ok: bad.append(f"{k.name} {layout}: {r.reason}\n{s.describe(k)}")
        assert not bad, "\n".join(bad)
    finally:
        be.close()

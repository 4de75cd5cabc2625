"""Fused attention on the emulator: ``softmax(q @ k.T * scale + mask) @ v`` written with the lazy
Tensor becomes one kernel (ir/attention.py), lowered under the schedule the attention family's
solver picks (or a named one), executed by the emulator and compared with a float64 numpy
reference: no mask, a causal mask, a key-padding mask whose first key tiles are fully masked for
some rows, a fully masked row (NaN, as numpy), head dims 64 and 128, 1-3 stages, one and two m16
tiles a warp, bf16. Every run counts zero bank conflicts and zero races. The CUDA source of the same
Program parses as C++ (g++ with test_cuda's stand-in header) and, where cuda-python's NVRTC is
installed, compiles for sm_90a (skipped without it)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from superopt.backends.cuda.render import render
from superopt.backends.emu import run_program
from superopt.ir import dtype as dt
from superopt.ir.attention import fused_plan
from superopt.ir.kernelize import default_plan, kernelize
from superopt.ir.lower import lower
from superopt.ir.program import Mma
from superopt.ir.tensor import Tensor
from superopt.search.families.attention import FAMILY, schedule_of
from superopt.search.machine import H100

from test_cuda import _parses  # noqa: E402 - same folder

RNG = np.random.default_rng(7)


def attention(heads: int, s: int, d: int, mask: np.ndarray | None):
    """The fused kernel of the graph, its inputs by name, and the float64 reference."""
    arr = {n: RNG.standard_normal((heads, s, d)).astype(np.float16) for n in "qkv"}
    q, k, v = (Tensor(arr[n], dtype=dt.float16, name=n) for n in "qkv")
    x = (q @ k.transpose(-1, -2)) * (1.0 / d ** 0.5)
    if mask is not None:
        x = x + Tensor(mask, dtype=dt.float16, name="mask")
        arr["mask"] = mask
    out = x.softmax(-1) @ v
    steps = kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))
    assert [st.kernel.kind for st in steps] == ["attention"]
    q64, k64, v64 = (arr[n].astype(np.float64) for n in "qkv")
    sc = q64 @ k64.transpose(0, 2, 1) / d ** 0.5 + (0 if mask is None else mask.astype(np.float64))
    with np.errstate(invalid="ignore"):
        e = np.exp(sc - sc.max(-1, keepdims=True))
        ref = (e / e.sum(-1, keepdims=True)) @ v64
    return steps[0].kernel, arr, ref


def run(kern, arr, schedule):
    p = lower(kern, schedule, H100)
    r = run_program(p, [arr[b.name] for b in p.inputs], max_blocks=64)
    return p, r


def check(r, ref) -> None:
    assert r.written.all()
    got = r.output.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, atol=4e-3, rtol=1e-2, equal_nan=True)
    c = r.counters
    assert c.shared_wavefronts == c.shared_ideal > 0    # no bank conflicts
    assert c.races == 0


def causal(s: int) -> np.ndarray:
    return np.where(np.tril(np.ones((s, s), bool)), 0.0, -np.inf).astype(np.float16)


@pytest.mark.parametrize("mask", ["none", "causal"])
def test_solver_schedule_matches_numpy(mask):
    kern, arr, ref = attention(2, 128, 64, None if mask == "none" else causal(128))
    best = FAMILY.solve(kern, H100, 5.0).candidates[0].schedule   # what the solver picks is what runs
    _, r = run(kern, arr, best)
    check(r, ref)


def test_arange_causal_mask():
    """Causal masking written with ``arange`` comparisons: an index expression in the kernel."""
    s, d = 128, 64
    arr = {n: RNG.standard_normal((2, s, d)).astype(np.float16) for n in "qkv"}
    q, k, v = (Tensor(arr[n], dtype=dt.float16, name=n) for n in "qkv")
    i, j = Tensor.arange(s).reshape(s, 1).expand(s, s), Tensor.arange(s).reshape(1, s).expand(s, s)
    x = (q @ k.transpose(-1, -2)) * 0.125
    x = (j < i + 1).where(x, Tensor.full(x.shape, float("-inf"), dt.float16))
    out = x.softmax(-1) @ v
    kern = kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))[0].kernel
    _, r = run(kern, arr, schedule_of({"block_m": 64, "block_n": 32, "warps": 4, "stages": 2}))
    sc = arr["q"].astype(np.float64) @ arr["k"].astype(np.float64).transpose(0, 2, 1) * 0.125 + causal(s)
    e = np.exp(sc - sc.max(-1, keepdims=True))
    check(r, (e / e.sum(-1, keepdims=True)) @ arr["v"].astype(np.float64))


def banded(heads: int, s: int, d: int, cond):
    """The fused kernel of an attention masked by ``cond(i, j)`` written with ``arange`` (the
    key band of ir/attention.py), its inputs, and the float64 numpy reference (a row that sees
    no key: NaN, as numpy's softmax of a row of -inf)."""
    arr = {n: RNG.standard_normal((heads, s, d)).astype(np.float16) for n in "qkv"}
    q, k, v = (Tensor(arr[n], dtype=dt.float16, name=n) for n in "qkv")
    i, j = Tensor.arange(s).reshape(s, 1).expand(s, s), Tensor.arange(s).reshape(1, s).expand(s, s)
    x = (q @ k.transpose(-1, -2)) * (1.0 / d ** 0.5)
    x = cond(i, j).where(x, Tensor.full(x.shape, float("-inf"), dt.float16))
    kern = kernelize(out := (x.softmax(-1) @ v).node, plan=fused_plan(out, default_plan(out)))[0].kernel
    vis = np.asarray(cond(np.arange(s)[:, None], np.arange(s)[None, :]), bool) & np.ones((s, s), bool)
    sc = np.where(vis, arr["q"].astype(np.float64) @ arr["k"].astype(np.float64).transpose(0, 2, 1) / d ** 0.5, -np.inf)
    with np.errstate(invalid="ignore"):
        e = np.exp(sc - sc.max(-1, keepdims=True))
        ref = (e / e.sum(-1, keepdims=True)) @ arr["v"].astype(np.float64)
    return kern, arr, ref, vis


def visited_mma(kern, p: dict, vis: np.ndarray) -> int:
    """Warp mma instructions when exactly the key tiles holding a visible key (for some row of
    the query block) are computed: what skipping the rest costs."""
    g, bm, bn = kern.geometry, p["block_m"], p["block_n"]
    s = vis.shape[0]
    tiles = vis.reshape(s // bm, bm, s // bn, bn).any(axis=(1, 3)).sum()
    per_tile = (bm // 16) * 2 * (bn // 16) * (g.d + g.dv) // 16   # m16 tiles x n8 pairs x k16 steps, both products
    return int(tiles * per_tile * g.heads)


@pytest.mark.parametrize("d, params", [(64, {"block_m": 64, "block_n": 32, "warps": 4, "stages": 2}),
                                       (64, {"block_m": 32, "block_n": 64, "warps": 2, "stages": 3}),   # a tile wider than the block
                                       (64, {"block_m": 128, "block_n": 32, "warps": 4, "stages": 3}),  # two m16 tiles a warp
                                       (128, {"block_m": 64, "block_n": 64, "warps": 4, "stages": 1})])  # synchronous copies
def test_causal_key_tiles_above_the_diagonal_are_skipped(d, params):
    """``j <= i``: the key tiles above the diagonal are neither loaded nor computed (the
    emulator's mma count is exactly the visited tiles', about half), only the diagonal tiles
    evaluate the mask, and the result is numpy's."""
    kern, arr, ref, vis = banded(2, 256, d, lambda i, j: j <= i)
    p, r = run(kern, arr, schedule_of(params))
    check(r, ref)
    assert r.counters.instructions["mma"] == visited_mma(kern, params, vis)
    bm, bn, s = params["block_m"], params["block_n"], 256
    frac = (max(bm, bn) + s) / (2 * s)   # the visited share of the key tiles: the lower triangle plus the diagonal tiles
    assert r.counters.instructions["mma"] == visited_mma(kern, params, np.ones_like(vis)) * frac
    kv_bytes = 2 * (s // bm) * s * 2 * d * 2         # K and V tiles of every block of both heads, all tiles visited
    q_and_out = 2 * 2 * s * d * 2
    assert r.counters.global_bytes == q_and_out + kv_bytes * frac   # the skipped tiles are not loaded either


@pytest.mark.parametrize("cond", [lambda i, j: j < i,                       # strictly causal: row 0 sees no key (NaN)
                                  lambda i, j: (j <= i) & (j > i - 40),     # a sliding window: both edges masked
                                  lambda i, j: j < i - 64,                  # the first query block sees nothing at all
                                  lambda i, j: j < 100])                    # a fixed key length
def test_key_bands_match_numpy(cond):
    params = {"block_m": 32, "block_n": 32, "warps": 2, "stages": 2}
    kern, arr, ref, vis = banded(1, 128, 64, cond)
    assert not kern.geometry.band.trivial
    _, r = run(kern, arr, schedule_of(params))
    check(r, ref)
    assert r.counters.instructions["mma"] == visited_mma(kern, params, vis)


WGMMA_CASES = [("dense", 64, {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2, "wgmma": 1}),
               ("causal", 128, {"block_m": 128, "block_n": 64, "warps": 8, "stages": 3, "wgmma": 1}),   # two warpgroups
               ("padding", 64, {"block_m": 64, "block_n": 128, "warps": 4, "stages": 1, "wgmma": 1})]  # synchronous copies


def wgmma_case(mask: str, d: int):
    if mask == "causal": return banded(2, 256, d, lambda i, j: j <= i)
    m = None
    if mask == "padding":   # head 1's first 160 keys masked (its first key tile fully), query row 5 entirely (NaN)
        m = np.zeros((2, 256, 256), np.float16)
        m[1, :, :160] = -np.inf
        m[:, 5, :] = -np.inf
    kern, arr, ref = attention(2, 256, d, m)
    return kern, arr, ref, np.ones((256, 256), bool)


@pytest.mark.parametrize("mask, d, params", WGMMA_CASES)
def test_wgmma_products_match_numpy(mask, d, params):
    """Both products as Hopper wgmma from shared memory (Q, K, V in swizzled panels, P stored
    by the softmax): numpy's result, no bank conflicts, no races, and one wgmma a 16-deep step
    of each product a warpgroup and visited key tile (none above the causal diagonal)."""
    kern, arr, ref, vis = wgmma_case(mask, d)
    p, r = run(kern, arr, schedule_of(params))
    assert not any(isinstance(x, Mma) for x in p.walk())
    check(r, ref)
    bm, bn = params["block_m"], params["block_n"]
    tiles = vis.reshape(256 // bm, bm, 256 // bn, bn).any(axis=(1, 3)).sum() * 2
    assert r.counters.instructions["wgmma"] == tiles * (bm // 64) * (d // 16 + bn // 16)


def test_padding_mask_and_fully_masked_row():
    """Keys 0..79 of head 1 masked (its first 64-key tile fully masked: the running max is -inf
    there and the weights must be 0, not NaN), plus query row 5 of every head masked entirely:
    numpy's softmax of a row of -inf is NaN, and so is ours."""
    s = 128
    m = np.zeros((2, s, s), np.float16)
    m[1, :, :80] = -np.inf
    m[:, 5, :] = -np.inf
    kern, arr, ref = attention(2, s, 64, m)
    assert np.isnan(ref[:, 5]).all() and not np.isnan(np.delete(ref, 5, axis=1)).any()
    _, r = run(kern, arr, schedule_of({"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}))
    check(r, ref)


@pytest.mark.parametrize("d, params", [(64, {"block_m": 64, "block_n": 32, "warps": 2, "stages": 3}),   # two m16 tiles a warp
                                       (128, {"block_m": 64, "block_n": 32, "warps": 4, "stages": 3}),
                                       (128, {"block_m": 32, "block_n": 64, "warps": 2, "stages": 1})])  # synchronous copies
def test_head_dims_causal(d, params):
    kern, arr, ref = attention(1, 128, d, causal(128))
    _, r = run(kern, arr, schedule_of(params))
    check(r, ref)


def test_four_d_heads_and_broadcast_key_padding():
    """q, k, v of (batch, heads, seq, dim): two batch axes; a (batch, 1, 1, keys) padding mask."""
    b, h, s, d = 2, 3, 128, 64
    arr = {n: RNG.standard_normal((b, h, s, d)).astype(np.float16) for n in "qkv"}
    m = np.zeros((b, 1, 1, s), np.float16)
    m[0, ..., 100:] = -np.inf
    m[1, ..., :70] = -np.inf
    arr["m"] = m
    q, k, v = (Tensor(arr[n], dtype=dt.float16, name=n) for n in "qkv")
    out = ((q @ k.transpose(-1, -2)) * 0.125 + Tensor(m, dtype=dt.float16, name="m")).softmax(-1) @ v
    kern = kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))[0].kernel
    assert kern.geometry.batch == (b, h)
    _, r = run(kern, arr, FAMILY.solve(kern, H100, 5.0).candidates[0].schedule)
    x = {n: arr[n].astype(np.float64) for n in "qkv"}
    sc = x["q"] @ x["k"].transpose(0, 1, 3, 2) * 0.125 + m
    e = np.exp(sc - sc.max(-1, keepdims=True))
    check(r, (e / e.sum(-1, keepdims=True)) @ x["v"])


def test_bf16():
    vals = {n: RNG.standard_normal((2, 128, 64)) for n in "qkv"}
    st = {n: dt.to_storage(vals[n], dt.bfloat16) for n in "qkv"}
    q, k, v = (Tensor(st[n], dtype=dt.bfloat16, name=n) for n in "qkv")
    out = ((q @ k.transpose(-1, -2)) * 0.125).softmax(-1) @ v
    kern = kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))[0].kernel
    p, r = run(kern, st, FAMILY.hand(kern, H100))
    assert {x.instr for x in p.walk() if hasattr(x, "instr")} == {"mma.m16n8k16.bf16.f32"}
    x = {n: dt.to_values(st[n], dt.bfloat16).astype(np.float64) for n in "qkv"}
    sc = x["q"] @ x["k"].transpose(0, 2, 1) * 0.125
    e = np.exp(sc - sc.max(-1, keepdims=True))
    ref = (e / e.sum(-1, keepdims=True)) @ x["v"]
    np.testing.assert_allclose(dt.to_values(r.output, dt.bfloat16).astype(np.float64), ref, atol=1e-2, rtol=2e-2)
    assert r.counters.shared_wavefronts == r.counters.shared_ideal and r.counters.races == 0


def test_runtime_runs_the_fused_step_on_emu():
    """The lazy Tensor realized by the runtime on emu: the fused step gets the family's hand
    rule, is verified against the three kernels it replaces and runs (no interpreter fallback)."""
    import warnings
    from superopt import runtime
    from superopt.ir import context
    arr = {n: RNG.standard_normal((2, 64, 64)).astype(np.float16) for n in "qkv"}
    q, k, v = (Tensor(arr[n], dtype=dt.float16, name=n) for n in "qkv")
    out = ((q @ k.transpose(-1, -2)) * 0.125).softmax(-1) @ v
    plan = fused_plan(out.node, default_plan(out.node))
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an interpreter fallback warns
        with context.use(planner=lambda r: plan if r is out.node else None), runtime.using("emu") as rt:
            got = out.numpy().astype(np.float64)
    assert rt.stats["hand"] == 1 and rt.stats["interpreter"] == 0
    sc = arr["q"].astype(np.float64) @ arr["k"].astype(np.float64).transpose(0, 2, 1) * 0.125
    e = np.exp(sc - sc.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (e / e.sum(-1, keepdims=True)) @ arr["v"].astype(np.float64), atol=4e-3, rtol=1e-2)


def test_illegal_schedule_is_refused():
    kern, _, _ = attention(1, 64, 64, None)
    bad = schedule_of({"block_m": 64, "block_n": 48, "warps": 4, "stages": 2})
    assert any("not divisible by tiles 64 x 48" in e for e in FAMILY.legal(kern, bad, H100))
    with pytest.raises(ValueError):
        lower(kern, bad, H100)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc
        except ImportError:
            return None
    return nvrtc


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the syntax check")
def test_cuda_source_parses(tmp_path):
    kern, _, _ = attention(1, 128, 64, causal(128))
    p = lower(kern, FAMILY.hand(kern, H100), H100)
    src, _ = render(p)
    assert "mma.sync.aligned.m16n8k16" in src and "ldmatrix" in src and "cp.async" in src
    assert "unsigned pa[" in src and "unsigned qa[" in src   # mma operands are packed 16-bit pairs, P's included
    assert not _parses(src, tmp_path)


@pytest.mark.skipif(_nvrtc() is None and shutil.which("nvcc") is None, reason="neither cuda-python's NVRTC nor nvcc is installed")
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("mask", ["buffer", "band"])
def test_cuda_source_compiles_for_sm90a(d, mask, tmp_path):
    """A causal mask as a buffer (every tile masked) and as ``arange`` comparisons (tiles above the
    diagonal skipped by a block-uniform branch, the diagonal ones masked), under the hand rule."""
    kern = attention(1, 128, d, causal(128))[0] if mask == "buffer" else banded(1, 256, d, lambda i, j: j <= i)[0]
    src, _ = render(lower(kern, FAMILY.hand(kern, H100), H100))
    nvrtc = _nvrtc()
    if nvrtc is None:   # nvcc: the same source through the offline compiler, no spills allowed either way
        (tmp_path / "a.cu").write_text(src)
        r = subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o",
                            str(tmp_path / "a.cubin"), str(tmp_path / "a.cu")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "0 bytes spill stores" in r.stderr, r.stderr[-2000:]
        return
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"attention.cu", 0, [], [])
    opts = [b"--gpu-architecture=sm_90a", b"-default-device", b"-std=c++17"]
    err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    assert int(err) == 0, log.decode(errors="replace")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("mask, d, params", WGMMA_CASES[1:])
def test_wgmma_source_compiles_for_sm90a(mask, d, params, tmp_path):
    """The wgmma variant's CUDA source through nvcc for sm_90a: no spills, no ptxas warning
    (such as wgmma serialization)."""
    kern = wgmma_case(mask, d)[0]
    src, _ = render(lower(kern, schedule_of(params), H100))
    assert "wgmma.mma_async" in src and "fence.proxy.async" in src
    (tmp_path / "a.cu").write_text(src)
    r = subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o", str(tmp_path / "a.cubin"),
                        str(tmp_path / "a.cu")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "0 bytes spill stores" in r.stderr and "warning" not in r.stderr.lower(), r.stderr[-2000:]

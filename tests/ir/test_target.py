"""ir.target.Target: explicit capabilities, the built-in targets, calibration round trips,
and an AMD-like target (warp 64) accepted where only SIMT is needed, refused where NVIDIA
instructions or the NVIDIA-warp emulator are."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.emu import run_program
from superopt.backends.emu.emu_backend import EmuBackend
from superopt.ir import dtypes as dt
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import lower
from superopt.ir.schedule import Level, Schedule, Split, check, row_shared_bytes
from superopt.ir.target import Target
from superopt.search import cost, families, hand, tc_space
from superopt.search.machine import (H100, HEXAGON, NVIDIA_WARP, cpu_flags, host_cpu, load, nvidia_at,
                                     nvidia_capabilities, save_calibration)

# an AMD-like GPU: 64-lane wavefronts, SIMT, no NVIDIA matrix instructions
AMD = Target("mi-like", "amd", "gfx90a", {"simt"}, 104, max_threads=1024, max_upcast=256, warp=64,
             regs_per_sm=65536, smem_per_block=64 * 1024, smem_per_sm=64 * 1024, max_threads_per_sm=2048,
             max_blocks_per_sm=32, dram_bw=1.6e12, flops_fp32=23e12)


def _row_kernel(rows: int, cols: int, op: str = "softmax"):
    return kernelize(getattr(Tensor.empty(rows, cols, name="x"), op)(1).node)[0].kernel


def _row_schedule(rows: int, threads: int, per: int) -> Schedule:
    """One row a block, ``threads`` threads across the row, ``per`` elements a thread."""
    return Schedule(((Split(Level.GRID, rows),), (Split(Level.THREAD, threads), Split(Level.UPCAST, per))))


def _mm(m: int = 64, n: int = 64, k: int = 64):
    a, b = Tensor.empty(m, k, name="a", dtype=dt.float16), Tensor.empty(k, n, name="b", dtype=dt.float16)
    return kernelize((a @ b).node)[0].kernel


def test_builtin_capabilities():
    assert H100.vendor == "nvidia" and H100.arch == "sm_90" and H100.sm == 90 and H100.warp == NVIDIA_WARP
    assert H100.is_simt and H100.has("simt", "mma.sync", "cp.async", "wgmma", "tma") and not H100.has("hvx")
    a100 = nvidia_at(H100, 80)
    assert a100.arch == "sm_80" and a100.sm == 80 and a100.has("mma.sync") and not a100.has("wgmma") and not a100.has("tma")
    assert nvidia_capabilities(70) == {"simt"}
    assert HEXAGON.vendor == "qualcomm" and HEXAGON.has("hvx", "hvx_vrmpy") and not HEXAGON.is_simt
    assert HEXAGON.vliw_slots == 4 and HEXAGON.warp == 1 and HEXAGON.sm == 0
    cpu = host_cpu()
    assert cpu.has("threads") and not cpu.is_simt and cpu.warp == 1 and cpu.sm == 0


def test_host_cpu_reads_isa_flags():
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 avx512f avx512fp16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    flags = cpu_flags(text)
    assert {"sse2", "avx2", "avx512f", "avx512fp16"} <= flags and "fpu" in flags
    wide = host_cpu(flags, cores=2)
    assert wide.simd_bytes == 64 and wide.has("threads", "avx2", "avx512f", "avx512fp16") and wide.vendor == "x86"
    assert wide.flops_fp32 == 2 * 2 * 16 * 2 * 3.0e9
    assert host_cpu(frozenset({"sse2", "avx2", "fma"}), cores=1).simd_bytes == 32
    plain = host_cpu(frozenset({"sse2"}), cores=1)
    assert plain.simd_bytes == 16 and not plain.has("avx2")
    assert cpu_flags("no flags here") == frozenset()


def test_target_rejects_bad_warps_and_normalizes_capabilities():
    with pytest.raises(ValueError, match="warp 0"):
        Target("x", "v", "a", set(), 1, warp=0)
    with pytest.raises(ValueError, match="SIMT target needs a warp"):
        Target("x", "v", "a", {"simt"}, 1, warp=1)
    t = Target("x", "v", "a", ["threads", "avx2"], 1)
    assert isinstance(t.capabilities, frozenset) and t.has("avx2") and not t.has("avx2", "avx512f")
    assert not t.with_capabilities(drop=("avx2",)).has("avx2") and t.with_capabilities(add=("fma",)).has("fma")


def test_calibration_round_trip_keeps_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path))
    measured = replace(H100, dram_bw=2.9865e12, flops_fp32=64.84e12, launch_s=1.013e-5, notes={"measured_at": "t0"})
    path = save_calibration(measured)
    assert json.loads(path.read_text())["capabilities"] == sorted(H100.capabilities)
    got = load("h100")
    assert got.calibrated and got.dram_bw == 2.9865e12 and got.flops_fp32 == 64.84e12 and got.launch_s == 1.013e-5
    assert got.notes == {"measured_at": "t0"} and got.capabilities == H100.capabilities and got.warp == H100.warp
    # a file claiming another identity changes only the numbers
    path.write_text(json.dumps({**json.loads(path.read_text()), "warp": 64, "capabilities": ["hvx"], "vendor": "amd"}))
    got = load("h100")
    assert (got.warp, got.capabilities, got.vendor) == (H100.warp, H100.capabilities, "nvidia") and got.dram_bw == 2.9865e12
    path.write_text("{not json")
    assert load("h100") == H100   # damaged: datasheet numbers
    with pytest.raises(ValueError, match="unknown machine"):
        load("mi300")


def test_amd_like_target_runs_plain_simt_and_row_kernels():
    k = _row_kernel(4, 1024)
    s = _row_schedule(4, 256, 4)
    assert check(k, s, AMD) == [] and check(k, s, H100) == []
    # 256 threads share a row: folded a warp at a time, so the warps' partials buffer follows the warp
    assert row_shared_bytes(k, s, 64) < row_shared_bytes(k, s, 32)
    p = lower(k, s, AMD)
    x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    r = run_program(p, [x], max_blocks=p.blocks)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(r.output, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert r.written.all()
    fam = {f.name: f for f in families.registry()}
    assert fam["simt"].applies(k, AMD) and not fam["loopnest_cpu"].applies(k, AMD)
    assert not fam["mma"].applies(_mm(), AMD) and not fam["wgmma"].applies(_mm(), AMD) and fam["mma"].applies(_mm(), H100)


def test_amd_like_target_refuses_nvidia_instructions_and_the_emulator():
    k = _mm()
    assert tc_space.points(k, AMD) == []
    s = next(s for _, s in tc_space.points(k, nvidia_at(H100, 80)))
    assert check(k, s, nvidia_at(H100, 80)) == []
    assert any("no mma.sync" in e for e in check(k, s, AMD))
    # the capability alone is not enough: the fragment layouts are a 32-lane warp's
    assert any("warp of 64" in e for e in check(k, s, AMD.with_capabilities(add=("mma.sync",))))
    assert any("thread level exists on GPUs only" in e for e in check(_row_kernel(4, 256), _row_schedule(4, 64, 4), host_cpu()))
    f = EmuBackend(AMD).compile(lower(_row_kernel(2, 256), _row_schedule(2, 64, 4), AMD))
    assert getattr(f, "kind", None) == "compile" and "64" in f.message


def test_amd_like_target_runs_the_staged_simt_gemm():
    a, b = Tensor.empty(128, 64, name="a"), Tensor.empty(64, 96, name="b")
    k = kernelize((a @ b).node)[0].kernel
    s = hand.staged_simt(k, AMD)
    assert s is not None and s.staging and check(k, s, AMD) == []
    assert 0 < cost.modeled_time(k, s, AMD) < 1e-3
    p = lower(k, s, AMD)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((128, 64)).astype(np.float32), rng.standard_normal((64, 96)).astype(np.float32)
    r = run_program(p, [x, y], max_blocks=p.blocks)
    np.testing.assert_allclose(r.output, x @ y, rtol=1e-4, atol=1e-4)
    assert r.written.all()

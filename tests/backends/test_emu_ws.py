"""Warp-specialized wgmma GEMMs (``TensorCore.producer``: a producer warp issues the TMA
copies, consumer warpgroups compute, stages handed over through "full" / "empty"
mbarriers; ir/lower_wgmma.py): lower -> emu against the interpreter (1-6 stages, one or
two consumer warpgroups, padded tiles, bmm layouts), the emulator catching a producer that
refills a stage without waiting for its release, a consumer that reads without waiting,
and a stage never released (a hang), the emulator's checks of warp roles (overlapping
branches, a block-wide or miscounted barrier in a role, a wgmma from the producer warp),
the schedule's legality and JSON, the CUDA source
compiling for sm_90a without spills or serialized wgmmas, and on a GPU the kernels
computing numpy's answer (skipped without one)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from superopt.backends.cuda.render import render
from superopt.backends.emu.executor import EmuError
from superopt.ir import tensorcore as tcm
from superopt.ir.lower import lower
from superopt.ir.lower_wgmma import BAR, EMPTY
from superopt.ir.node import TRUE
from superopt.ir.program import Barrier, If, MbarArriveTx, MbarWait, Roles, WgmmaFence, walk
from superopt.ir.schedule import Schedule, check
from superopt.search.machine import H100
from superopt.search.wgmma_space import copied_by_tma, make
from gemm_cases import (close16, emu_values as _emu, gemm_kernel, gpu_values, gpu_wrong, mutate as _mutate,  # noqa: E402 - same folder
                        normal_inputs as _inputs, reference_values as _ref)


def _schedule(k, bm, bn, bk, wgm, wgn, stages) -> Schedule:
    s = make(k, tcm.match(k), bm, bn, bk, wgm, wgn, stages, producer=True)
    errs = check(k, s, H100)
    assert not errs, errs
    return s


CASES = [  # kind, dtype, M, N, K, bm, bn, bk, wgm, wgn, stages
    ("matmul", "float16", 64, 64, 64, 64, 64, 16, 1, 1, 1),        # one stage: every refill waits for the release
    ("matmul", "float16", 128, 256, 512, 128, 256, 64, 2, 1, 3),   # the large tile, 8 steps over 3 stages
    ("bmm_nk", "bfloat16", 128, 128, 256, 128, 128, 32, 2, 1, 4),  # rank-3 maps, two warpgroups along M
    ("bmm_kn", "float16", 64, 128, 256, 64, 128, 32, 1, 2, 2),     # two warpgroups along N
    ("matmul", "bfloat16", 96, 200, 192, 64, 64, 32, 1, 1, 6),     # padded M and N, 6 stages ahead
]
IDS = [f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}-s{c[10]}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_warp_specialized_gemms_match_the_interpreter(case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    s = _schedule(k, bm, bn, bk, wgm, wgn, stages)
    p = lower(k, s, H100)
    assert p.threads == 128 * wgm * wgn + 32 and any(isinstance(x, Roles) for x in p.body)
    ins = _inputs(k)
    r, got = _emu(p, ins, k, max_blocks=4)
    assert r.written.any() and r.counters.races == 0
    assert close16(got[r.written], _ref(k, ins)[r.written], d)


def _program(stages: int = 3):
    k = gemm_kernel("matmul", "float16", 128, 128, 512, 1)
    return k, lower(k, _schedule(k, 128, 128, 64, 2, 1, stages), H100)


def _bad(k, p) -> str:
    """How the emulator flags ``p`` ("" where it does not): a race, numbers off the
    interpreter's, or an error (a hang: a phase's arrivals never come)."""
    ins = _inputs(k)
    try:
        r, got = _emu(p, ins, k, max_blocks=2)
    except EmuError as e:
        return f"error: {e}"
    if r.counters.races: return f"{r.counters.races} races"
    return "" if close16(got[r.written], _ref(k, ins)[r.written], "float16") else "wrong numbers"


def test_refill_without_waiting_for_the_release_is_caught():
    k, p = _program()
    assert not _bad(k, p)
    assert _bad(k, _mutate(p, lambda x: None if isinstance(x, MbarWait) and x.bar == EMPTY else x))


def test_compute_without_waiting_for_the_copies_is_caught():
    k, p = _program()
    assert _bad(k, _mutate(p, lambda x: None if isinstance(x, MbarWait) and x.bar == BAR else x))


def test_a_stage_never_released_hangs():
    k, p = _program()
    with pytest.raises(EmuError, match="hang"):
        _emu(_mutate(p, lambda x: None if isinstance(x, MbarArriveTx) and x.bar == EMPTY else x), _inputs(k), k, max_blocks=2)


def _roles(p, f) -> object:
    """``p`` with its ``Roles`` statement replaced by ``f(roles)``."""
    return replace(p, body=tuple(f(x) if isinstance(x, Roles) else x for x in p.body))


def test_warp_roles_are_checked():
    k, p = _program()
    ins = _inputs(k)
    both = _roles(p, lambda r: Roles(tuple(If(TRUE, b.body) for b in r.branches)))
    with pytest.raises(EmuError, match="overlap"):
        _emu(both, ins, k, max_blocks=1)
    with pytest.raises(EmuError, match="block-wide barrier inside a warp role"):
        _emu(_mutate(p, lambda x: Barrier() if isinstance(x, Barrier) and x.threads else x), ins, k, max_blocks=1)
    with pytest.raises(EmuError, match="named barrier of 128 threads"):
        _emu(_mutate(p, lambda x: Barrier(128) if isinstance(x, Barrier) and x.threads else x), ins, k, max_blocks=1)
    # a wgmma issued by the producer warp's thread (part of no whole warpgroup) is refused
    producer_mma = _roles(p, lambda r: Roles((If(r.branches[0].cond, r.branches[0].body + tuple(
        x for x in walk(r.branches[1].body) if isinstance(x, WgmmaFence))[:1]), r.branches[1])))
    with pytest.raises(EmuError, match="part of a warpgroup"):
        _emu(producer_mma, ins, k, max_blocks=1)


def test_producer_schedules_are_checked_and_round_trip_through_json():
    k = gemm_kernel("matmul", "float16", 256, 256, 256)
    s = _schedule(k, 128, 128, 64, 2, 1, 3)
    assert s.threads(H100.warp) == 288 and Schedule.from_json(s.to_json()) == s and '"producer":true' in s.to_json()
    plain = make(k, tcm.match(k), 128, 128, 64, 2, 1, 3)
    assert "producer" not in plain.to_json()   # unset: the JSON older readers know
    cp_async = copied_by_tma(s, False)
    assert any("TMA only" in e for e in check(k, cp_async, H100))
    mma = Schedule.from_dict({**s.to_dict(), "tensor_core": {**s.to_dict()["tensor_core"], "instr": "mma.m16n8k16.f16.f32"}})
    assert any("producer warp" in e for e in check(k, mma, H100))


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("tiles", [(128, 256, 64, 2, 1, 3), (128, 128, 64, 2, 1, 5)], ids=["128x256", "5-stages"])
def test_cuda_source_compiles_for_sm90a_without_spills_or_serialization(tmp_path, tiles):
    k = gemm_kernel("matmul", "float16", 4096, 4096, 4096)
    src, _ = render(lower(k, _schedule(k, *tiles), H100))
    assert "mbarrier.arrive.shared::cta.b64" in src and "else if" in src
    assert "bar.sync 1, 256" in src and "*reinterpret_cast<uint4*>(out" in src   # the staged epilogue's 16-byte stores
    (tmp_path / "k.cu").write_text(src)
    r = subprocess.run([NVCC, "-arch=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                        str(tmp_path / "k.cu")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 bytes spill stores" in r.stderr and "serialized" not in r.stderr, r.stderr[-3000:]


# ---- on a GPU ------------------------------------------------------------------------------
GPU_CASES = CASES + [("matmul", "float16", 512, 1024, 1024, 128, 256, 64, 2, 1, 3),   # 16 steps over 3 stages, 16 tiles
                     ("matmul", "bfloat16", 256, 512, 2048, 256, 128, 64, 2, 1, 3)]


@pytest.mark.parametrize("case", GPU_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}x{c[4]}-s{c[10]}" for c in GPU_CASES])
def test_warp_specialized_gemms_on_the_gpu(cuda, case):
    kind, d, M, N, K, bm, bn, bk, wgm, wgn, stages = case
    k = gemm_kernel(kind, d, M, N, K)
    p = lower(k, _schedule(k, bm, bn, bk, wgm, wgn, stages), H100)
    ins = _inputs(k)
    bad, why = gpu_wrong(*gpu_values(cuda, p, k, ins), _ref(k, ins))
    assert not bad.any(), why

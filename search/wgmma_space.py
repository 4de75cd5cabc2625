"""wgmma (sm_90a) schedules of GEMM-like kernels: the constructor the benchmarks and tests
use. Not in the model's space yet: the mma.sync path (search/tc_space.py) stays the
default until the wgmma one is measured on an H100 (bench/gpu_tc.py --wgmma).

A wgmma schedule is the mma.sync schedule of the same tiles (``tc_space.make``) with
``wm = 4 x warpgroups along M`` warps, the ``wgmma.*`` instruction and the shared layouts
the descriptors need (``ir/wgmma.staging``), see ir/wgmma.py.
"""
from __future__ import annotations

from dataclasses import replace

from superopt.ir import dtype as dt
from superopt.ir import tensorcore as tcm
from superopt.ir import wgmma as wg
from superopt.ir.schedule import Schedule

from . import tc_space


def instr_for(m: tcm.Match) -> str:
    return "wgmma.m64nNk16.bf16.f32" if m.dtype is dt.bfloat16 else "wgmma.m64nNk16.f16.f32"


def make(kernel, m: tcm.Match, bm: int, bn: int, bk: int, wgm: int, wgn: int, stages: int,
         m_ext: tuple[int, ...] = ()) -> Schedule:
    """The wgmma schedule of block tile ``bm x bn``, K step ``bk``, ``wgm x wgn``
    warpgroups (each ``bm/wgm`` rows: whole m64 tiles, and ``bn/wgn`` columns: the
    instruction's N), ``stages`` pipeline stages (check it with ``ir.schedule.check``)."""
    s = tc_space.make(kernel, m, bm, bn, bk, wg.WARPS_PER_GROUP * wgm, wgn, stages, m_ext)
    s = replace(s, tensor_core=replace(s.tensor_core, instr=instr_for(m)))
    return replace(s, staging=wg.staging(kernel, s))

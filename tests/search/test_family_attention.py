"""The ``attention`` schedule family: registered, asked only for fused attention kernels; its
analytic shared-memory count equals what the lowered Program declares; the cost formula gives
the same seconds as floats, as numpy arrays over the space and as Z3 terms (Z3's optimum is the
enumeration's); the hand rule is legal; solve ranks best first; and the fusion planner fuses an
fp16 attention on the H100 (its model: faster than the three kernels), but not where no family
can run the fused kernel (fp32 inputs, the CPU)."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from superopt.ir import dtype as dt
from superopt.ir.attention import fused_plan
from superopt.ir.attention_lower import blocks_by_registers, registers, shared_bytes
from superopt.ir.kernelize import default_plan, kernelize
from superopt.ir.lower import lower
from superopt.ir.program import Shared
from superopt.ir.schedule import Schedule
from superopt.ir.tensor import Tensor
from superopt.search.cost import NUMERIC
from superopt.search.exhaustive import VECTOR
from superopt.search.families import applicable, registry
from superopt.search.families.attention import FAMILY, attention_time, facts, schedule_of, z3_optimum
from superopt.search.fusion import plan
from superopt.search.machine import BUILTIN, H100


def graph(heads: int, s: int, d: int, dtype=dt.float16):
    q, k, v = (Tensor.empty(heads, s, d, dtype=dtype, name=n) for n in "qkv")
    return ((q @ k.transpose(-1, -2)) * (d ** -0.5)).softmax(-1) @ v


def kernel(heads: int = 16, s: int = 512, d: int = 64):
    out = graph(heads, s, d)
    return kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))[0].kernel


def test_registered_and_asked_only_for_attention():
    k = kernel()
    assert "attention" in [f.name for f in registry()]
    assert [f.name for f in applicable(k, H100)] == ["attention"]
    out = graph(2, 64, 64)
    gemm = kernelize(out.node)[0].kernel
    assert not FAMILY.applies(gemm, H100) and FAMILY.solve(gemm, H100, 1.0).candidates == []


def test_shared_count_is_what_the_program_declares():
    k = kernel(2, 128, 128)
    for p in FAMILY.points(k, H100)[::7]:
        prog = lower(k, schedule_of(p), H100)
        declared = sum(s.size * s.dtype.itemsize for s in prog.body if isinstance(s, Shared))
        assert declared == shared_bytes(k.geometry, p)


def test_legality_counts():
    k = kernel(2, 128, 128)
    errs = FAMILY.legal(k, schedule_of({"block_m": 128, "block_n": 128, "warps": 4, "stages": 3}), H100)
    assert any("registers" in e for e in errs)
    assert FAMILY.legal(k, schedule_of({"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}), H100) == []
    assert any("not an attention schedule" in e for e in FAMILY.legal(k, Schedule((), family="cpu_gemm"), H100))
    assert any("block_m" in e for e in FAMILY.legal(k, schedule_of({"block_n": 64, "warps": 4, "stages": 2}), H100))


def test_cost_floats_numpy_and_z3_agree():
    k = kernel()
    pts = FAMILY.points(k, H100)
    fs = [facts(k, p, H100) for p in pts]
    num = np.array([attention_time(NUMERIC, f, H100) for f in fs])
    vec = np.asarray(attention_time(VECTOR, {key: np.array([f[key] for f in fs]) for key in fs[0]}, H100))
    np.testing.assert_array_equal(num, vec)
    got = z3_optimum(k, pts, H100, 20.0)
    assert got is not None and abs(got[1] - num.min()) <= 1e-12 * num.min()
    sol = FAMILY.solve(k, H100, 20.0)
    assert sol.proved_optimal and sol.detail["z3_agrees"]
    ts = [c.modeled_s for c in sol.candidates]
    assert ts == sorted(ts) and ts[0] == num.min()
    assert all(FAMILY.cost(k, c.schedule, H100) == c.modeled_s for c in sol.candidates)


def test_hand_rule_is_fa2_tile_and_legal():
    k = kernel(2, 128, 64)
    h = FAMILY.hand(k, H100)
    assert dict(h.params) == {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}
    assert FAMILY.legal(k, h, H100) == []


def test_planner_fuses_fp16_attention_on_the_h100():
    out = graph(4, 256, 64)
    pl = plan(out.node, H100, timeout_s=2.0)
    assert [s.kernel.kind for s in pl.steps] == ["attention"]   # found by the local search or the attention candidate
    assert pl.cost.time_s < pl.default.time_s and pl.cost.bytes < pl.default.bytes


def test_planner_does_not_fuse_what_no_family_runs():
    kinds = lambda out, m: [s.kernel.kind for s in plan(out.node, m, timeout_s=1.0).steps]  # noqa: E731
    assert "attention" not in kinds(graph(2, 64, 64, dt.float32), H100)
    assert "attention" not in kinds(graph(2, 64, 64), BUILTIN["hexagon"])


def causal_kernel(heads: int, s: int, d: int):
    q, k, v = (Tensor.empty(heads, s, d, dtype=dt.float16, name=n) for n in "qkv")
    i, j = Tensor.arange(s).reshape(s, 1).expand(s, s), Tensor.arange(s).reshape(1, s).expand(s, s)
    x = (q @ k.transpose(-1, -2)) * (d ** -0.5)
    out = (j <= i).where(x, Tensor.full(x.shape, float("-inf"), dt.float16)).softmax(-1) @ v
    return kernelize(out.node, plan=fused_plan(out.node, default_plan(out.node)))[0].kernel


def test_causal_skipped_tiles_are_priced():
    """A causal band: the model counts the visited key tiles (the lower triangle and the diagonal,
    (block_m + S) / 2S of them where block_n divides block_m), the mask only on the diagonal
    tiles; the causal kernel is modeled at a bit over half the dense one, and Z3 agrees."""
    dense, causal = kernel(32, 2048, 128), causal_kernel(32, 2048, 128)
    p = {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}
    fd, fc = facts(dense, p, H100), facts(causal, p, H100)
    assert fd["visits"] == fd["max_visits"] == 2048 / 64 and fd["masked"] == 0
    assert fc["visits"] == 2048 / 64 * (64 + 2048) / (2 * 2048) and fc["max_visits"] == 2048 / 64
    assert fc["masked"] == 1 and fc["mask_ops"] > 0 and fc["elem_ops"] == fd["elem_ops"]
    ratio = FAMILY.cost(causal, schedule_of(p), H100) / FAMILY.cost(dense, schedule_of(p), H100)
    assert 0.5 < ratio < 0.6
    sol = FAMILY.solve(causal, H100, 20.0)
    assert sol.proved_optimal and sol.detail["z3_agrees"]
    assert sol.candidates[0].modeled_s < FAMILY.solve(dense, H100, 20.0).candidates[0].modeled_s * 0.6


def test_blocks_by_registers():
    """A warp's registers come in units of 256 (8 a thread); a block needs all its warps."""
    assert blocks_by_registers(176, 4, H100) == 2      # 65536 / (176 * 32) = 11 warps
    assert blocks_by_registers(128, 4, H100) == 4
    assert blocks_by_registers(250, 4, H100) == 2      # rounded to 256 a thread: 8 warps
    assert blocks_by_registers(169, 1, H100) == 11     # rounded to 176: 11 warps (unrounded, 12)
    k = kernel(2, 512, 128)
    p = {"block_m": 64, "block_n": 128, "warps": 4, "stages": 1}
    assert facts(k, p, H100)["regs"] == registers(k.geometry, p) and facts(k, p, H100)["resident"] == 2


def ptxas(kern, p: dict, tmp_path) -> tuple[int, int]:
    """(registers a thread, spill store bytes) that ptxas reports for the kernel's CUDA source."""
    from superopt.backends.cuda.render import render
    from superopt.ir.attention_lower import _Lower
    src, _ = render(_Lower(kern, p).program())   # the program as lowered, legal under the model or not
    (tmp_path / "a.cu").write_text(src)
    r = subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o", str(tmp_path / "a.cubin"),
                        str(tmp_path / "a.cu")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    regs, spill = re.search(r"Used (\d+) registers", r.stderr), re.search(r"(\d+) bytes spill stores", r.stderr)
    return int(regs.group(1)), int(spill.group(1))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc for ptxas's register count")
@pytest.mark.parametrize("d, p", [(64, {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}),     # the hand rule
                                  (128, {"block_m": 64, "block_n": 128, "warps": 4, "stages": 1}),   # near the limit
                                  (64, {"block_m": 128, "block_n": 32, "warps": 4, "stages": 3}),    # two m16 tiles a warp
                                  (128, {"block_m": 32, "block_n": 32, "warps": 2, "stages": 3}),
                                  (128, {"block_m": 64, "block_n": 128, "warps": 4, "stages": 1, "wgmma": 1}),
                                  (64, {"block_m": 128, "block_n": 64, "warps": 8, "stages": 3, "wgmma": 1})])
def test_register_estimate_against_ptxas(d, p, tmp_path):
    """The model's registers a thread against ptxas -v: never more than 8 below (the solver must
    not take a spilling point for a legal one), at most 36 above; no spills where it is legal."""
    k = kernel(2, 256, d)
    model, (got, spill) = registers(k.geometry, p), ptxas(k, p, tmp_path)
    assert got - 8 <= model <= got + 36, (model, got)
    assert model <= H100.max_regs_per_thread and spill == 0


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc for ptxas's register count")
def test_points_the_model_refuses_for_registers_spill(tmp_path):
    k = kernel(2, 256, 128)
    p = {"block_m": 128, "block_n": 64, "warps": 4, "stages": 2}   # two m16 tiles a warp at head dim 128
    assert any("registers" in e for e in FAMILY.legal(k, schedule_of(p), H100))
    got, spill = ptxas(k, p, tmp_path)
    assert got == H100.max_regs_per_thread and spill > 0


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc for ptxas's register count")
@pytest.mark.parametrize("heads, s, d, causal", [(256, 512, 64, True), (32, 2048, 128, False)])
def test_solver_pick_does_not_spill(heads, s, d, causal, tmp_path):
    """What the solver picks for BERT-large causal and S = 2048, D = 128 compiles without spills,
    its register count as modeled."""
    k = causal_kernel(heads, s, d) if causal else kernel(heads, s, d)
    p = dict(FAMILY.solve(k, H100, 10.0).candidates[0].schedule.params)
    got, spill = ptxas(k, p, tmp_path)
    assert spill == 0 and got - 8 <= registers(k.geometry, p) <= got + 36


def test_family_chooses_mma_sync_or_wgmma():
    """Both variants are in the space where the target has wgmma, only mma.sync where it has
    not; wgmma's products run at the whole tensor peak (mma.sync at tc_cost's sm_90 share),
    so the same tiles are modeled faster by wgmma on this long sequence."""
    from dataclasses import replace
    k = kernel(16, 2048, 128)
    pts = FAMILY.points(k, H100)
    assert {p.get("wgmma", 0) for p in pts} == {0, 1}
    no_wg = replace(H100, capabilities=H100.capabilities - {"wgmma"})
    assert FAMILY.points(k, no_wg) and all("wgmma" not in p for p in FAMILY.points(k, no_wg))
    p = {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}
    assert FAMILY.legal(k, schedule_of({**p, "wgmma": 1}), no_wg) and not FAMILY.legal(k, schedule_of({**p, "wgmma": 1}), H100)
    assert FAMILY.cost(k, schedule_of({**p, "wgmma": 1}), H100) < FAMILY.cost(k, schedule_of(p), H100)
    assert any("whole warpgroups" in e for e in FAMILY.legal(k, schedule_of({**p, "warps": 2, "block_m": 32, "wgmma": 1}), H100))

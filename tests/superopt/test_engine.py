"""The tuning engine end to end on small kernels: cpu (every family's proof status, never
worse than the hand rules, candidates logged), emu (counters turned into time by the stated
model), hexagon (qemu-counted packets; the HVX family's schedule on an int8 matmul). Each
result's schedule is run again and compared with numpy."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.backends.base import get
from superopt.backends.hexagon import tools
from superopt.cache import Cache
from superopt.engine import Result, tune
from superopt.engine.measure import EMU_MODEL, emu_seconds
from superopt.engine.store import tune_and_store
from superopt.ir.lower import lower
from superopt.kernels.registry import Workload
from superopt.search import families


def _matmul(m: int, n: int, k: int, dtype: str = "float32"):
    return Workload.make("matmul", M=m, N=n, K=k, dtype=dtype).kernel


def _operands(kernel, rng):
    """Random operands of a matmul kernel (a: M x K, b: K x N) and numpy's product."""
    (m, n, k) = (ax.size for ax in kernel.axes)
    if kernel.inputs[0].dtype.name == "int8":
        a, b = rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-128, 128, (k, n), dtype=np.int8)
        return a, b, a.astype(np.int32) @ b.astype(np.int32)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    return a, b, a.astype(np.float64) @ b.astype(np.float64)


def _run_again(r: Result, be) -> tuple[np.ndarray, np.ndarray]:
    """(backend output, numpy's) of the result's schedule on fresh operands."""
    a, b, want = _operands(r.kernel, np.random.default_rng(7))
    c = be.compile(lower(r.kernel, r.schedule, be.machine))
    out = np.zeros(r.kernel.output.size, dtype=r.kernel.output.dtype.np)
    got = be.run(c, [a.reshape(-1), b.reshape(-1)], out)
    assert isinstance(got, np.ndarray), got
    return got.reshape(want.shape), want


@pytest.fixture(scope="module")
def cpu_result(cpu_backend):
    return tune(_matmul(48, 64, 32), cpu_backend, "z3", budget_s=2, runs=5)


def test_cpu_every_family_reports_its_proof_and_the_pick_is_no_worse_than_hand(cpu_result, cpu_backend):
    r = cpu_result
    names = {f.name for f in families.applicable(r.kernel, cpu_backend.machine)}
    assert {f["family"] for f in r.families} == names and {"loopnest_cpu", "cpu_gemm"} <= names
    for f in r.families:
        assert f["method"] and isinstance(f["proved_optimal"], bool) and f["solve_s"] >= 0 and f["measured"]
        assert f["bound_s"] is None or f["bound_s"] > 0
    assert r.verified and r.baseline_method == "hand" and 0 < r.measured_s <= r.baseline_s
    fastest = min(t.time_s for t in r.tried if t.verified)
    assert r.measured_s == fastest and r.family in names | {""}
    got, want = _run_again(r, cpu_backend)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_joint_problem_decides_the_kernel_s_proof(cpu_result):
    """One problem over every family: its optimum is the least modeled best of the families,
    and the kernel's proof status is the joint one."""
    sv = cpu_result.extra["solver"]
    j = sv["joint"]
    assert j["method"] in ("z3 joint", "decomposed") and sv["proved_optimal"] == j["proved_optimal"]
    least = min(f["modeled_best_s"] for f in cpu_result.families if f["modeled_best_s"] is not None)
    assert j["modeled_s"] == pytest.approx(least, rel=1e-9) and j["rows"] > 0


def test_every_measured_candidate_is_logged_in_the_cache(tmp_path):
    k = _matmul(16, 32, 16)
    with Cache(tmp_path / "k.sqlite") as c:
        e = tune_and_store(k, c, "cpu", budget_s=1, method="z3")
        logged = c.candidates(k.key, "cpu")
    assert e.verified and e.measured_s > 0
    assert len(logged) >= 2 and {x.method for x in logged} >= {"hand", "z3"}
    assert min(x.time_s for x in logged if x.verified) == pytest.approx(e.measured_s)


def test_bad_method_and_budget_are_refused(cpu_backend):
    k = _matmul(16, 16, 16)
    with pytest.raises(ValueError, match="unknown method"):
        tune(k, cpu_backend, "annealing")
    with pytest.raises(ValueError, match="budget"):
        tune(k, cpu_backend, "z3", budget_s=0)


def test_emu_result_is_its_counters_through_the_stated_model():
    be = get("emu")
    try:
        r = tune(_matmul(32, 32, 16), be, "z3", budget_s=1, runs=1)
        assert r.verified and r.extra["time_model"] == EMU_MODEL and r.families
        # the time is the model of the counters of a run of the picked schedule
        got, want = _run_again(r, be)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert r.measured_s == pytest.approx(emu_seconds(be.last_counters, r.kernel, r.schedule, be.machine))
        assert r.measured_s <= r.baseline_s
    finally:
        be.close()


@pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())
def test_hexagon_int8_matmul_takes_the_hvx_family_counted_by_qemu():
    if "hvx_gemm" not in {f.name for f in families.registry()}: pytest.skip("no HVX family registered")
    be = get("hexagon")
    try:
        r = tune(_matmul(32, 64, 64, "int8"), be, "z3", budget_s=2, runs=1)
        assert r.verified and r.family == "hvx_gemm" and r.schedule.family == "hvx_gemm"
        assert r.extra["packets"] > 0 and r.extra["macs_per_packet"] == pytest.approx(32 * 64 * 64 / r.extra["packets"])
        assert r.measured_s == pytest.approx(r.extra["packets"] / r.extra["clock_hz"])
        assert r.measured_s < r.baseline_s
        got, want = _run_again(r, be)
        np.testing.assert_array_equal(got, want)
    finally:
        be.close()

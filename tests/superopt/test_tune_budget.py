"""``superopt tune --budget S`` bounds the whole tune's wall time (issue 27): candidates that
would start past the deadline are skipped and counted; what can overrun is the measurement
in flight and the hand rules' measurement (always made). The bounds below are behavioural,
with generous slack (a shared 2-core machine), not speed benchmarks."""
from __future__ import annotations

import json
import time

import numpy as np

from superopt.cli import main
from superopt.kernels.registry import Workload
from superopt.io import save_kernel

SLACK_S = 5.0   # scheduling noise on a loaded machine, far above what these runs need


def _tune(tmp_path, capsys, budget: float) -> tuple[dict, float]:
    k = Workload.make("matmul", M=192, N=160, K=128).kernels[0]   # 2 cpu families: 6 candidates besides the hand rules
    f = tmp_path / "mm.json"
    save_kernel(k, f)
    t0 = time.monotonic()
    assert main(["tune", str(f), "--budget", str(budget), "--json", "--no-cache", "-q"]) == 0
    wall = time.monotonic() - t0
    return json.loads(capsys.readouterr().out), wall


def test_a_tiny_budget_skips_every_candidate_and_says_so(tmp_path, capsys):
    d, wall = _tune(tmp_path, capsys, 0.05)
    b = d["budget"]
    assert b["budget_s"] == 0.05 and not b["held"] and b["wall_s"] <= wall
    assert b["measured"] == 1 and b["skipped"] >= 3       # the hand rules only: every solver candidate skipped
    assert "outside baseline" in b["skipped_what"] and "budget" in d["outside"]["reason"]
    assert wall <= b["budget_s"] + b["hand_measurement_s"] + SLACK_S
    assert d["verified"] and d["method"] == "hand" and d["time_s"] == d["baseline_s"]


def test_a_small_budget_holds_within_the_measurement_in_flight(tmp_path, capsys):
    d, wall = _tune(tmp_path, capsys, 2.0)
    b = d["budget"]
    assert wall <= 2.0 + max(b["longest_measurement_s"], b["hand_measurement_s"]) + SLACK_S
    assert abs(b["wall_s"] - wall) < 1.0 and b["held"] == (b["wall_s"] <= 2.0)
    measured = [t for f in d["families"] for t in f["measured"]]
    assert b["measured"] >= 1 and len(measured) <= b["measured"]
    assert d["verified"] and d["time_s"] <= d["baseline_s"]
    assert d["time_s"] == min([t["time_s"] for t in measured if t["time_s"]] + [d["baseline_s"]])
    assert np.isfinite(d["gflops"]) and d["gflops"] > 0


def test_a_measurement_times_only_what_its_allowance_holds(cpu_backend):
    """The verification's runs tell a run's seconds: with no time allowed the median is of the
    fewest runs (MIN_RUNS), without an allowance of all ``runs``."""
    from superopt.engine.measure import MIN_RUNS, measure
    from superopt.search.hand import hand_schedule
    k = Workload.make("matmul", M=96, N=80, K=64).kernels[0]
    s = hand_schedule(k, cpu_backend.machine)
    tight = measure(k, s, cpu_backend, "hand", seed=0, runs=15, time_allowance_s=0.0)
    free = measure(k, s, cpu_backend, "hand", seed=0, runs=15)
    assert tight.verified and free.verified
    assert len(tight.samples) == MIN_RUNS and len(free.samples) == 15

"""``superopt calibrate`` repeats each measurement until stable and stores its spread, and
refuses on a busy machine unless --force (issue 27)."""
from __future__ import annotations

import json
import os

import pytest

from superopt.cli import main
from superopt.commands.calibrate import STABLE_K, busy_reason, spread, until_stable


def test_a_measurement_repeats_until_its_last_timings_agree():
    seq = iter([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.02, 5.0])
    r = until_stable(lambda: next(seq), limit=8, threshold=0.05)
    assert r["runs"] == 7 and r["stable"] and r["median_s"] == 1.0      # [1, 1, 1, 1, 1.02]: 2% spread
    assert r["spread"] == pytest.approx(0.02)
    wild = iter([1.0, 3.0] * 10)
    r = until_stable(lambda: next(wild), limit=9, threshold=0.05)
    assert r["runs"] == 9 and not r["stable"] and r["spread"] == pytest.approx(2.0)   # (3 - 1) / median 1
    assert spread([2.0, 4.0, 3.0]) == pytest.approx(2 / 3)


def test_busy_reasons():
    assert busy_reason(0.2, 2, 0.05, max_load=0.5) is None
    assert "load average 1.50 on 2 cores" in busy_reason(1.5, 2, 0.05, max_load=0.5)
    assert "noisy" in busy_reason(0.0, 2, 0.9, max_load=0.5)


def test_calibrate_refuses_a_loaded_machine_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path))
    if os.getloadavg()[0] == 0.0: pytest.skip("the load average reads 0.00: nothing to refuse at --max-load 0")
    assert main(["calibrate", "--max-load", "0", "--json"]) == 2
    d = json.loads(capsys.readouterr().out)
    assert "busy" in d["error"] and "--force" in d["error"] and d["command"] == "calibrate"
    assert not list(tmp_path.rglob("machine-cpu.json"))            # nothing stored


def test_small_calibration_stores_each_spread(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path))
    reps = 8
    assert main(["calibrate", "--reps", str(reps), "--copy-mib", "8", "--fma-iters", "65536", "--force", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    sp = r["spread"]
    assert {"copy", "fma"} <= set(sp) and sum(k.startswith("gemm") for k in sp) == 6
    for name in ("copy", "fma"):
        assert min(STABLE_K, reps) <= sp[name]["runs"] <= reps and sp[name]["spread"] >= 0
        assert sp[name]["stable"] == (sp[name]["spread"] <= 0.05)
    assert r["copy_bytes_per_s"] == pytest.approx(2 * (8 << 20) / sp["copy"]["median_s"])
    assert set(r["machine_state"]) >= {"load1", "cores", "noise_spread", "busy"}
    from superopt.search.machine import load
    m = load("cpu")
    assert m.calibrated and m.notes["spread"]["fma"]["spread"] == pytest.approx(sp["fma"]["spread"])

"""superopt calibrate: the CPU ceilings are measured and stored; cuda says clearly when
there is no device."""
from __future__ import annotations

import json

import pytest

from superopt.backends.cuda.cuda_backend import probe
from superopt.cli import main


def test_cpu_calibration_is_measured_and_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path))
    assert main(["calibrate", "--backend", "cpu", "--reps", "3", "--json", "--force"]) == 0   # a busy machine: tests/superopt/test_calibrate_stable.py
    r = json.loads(capsys.readouterr().out)
    assert 1e8 < r["copy_bytes_per_s"] < 1e13 and 1e8 < r["fma_flops_per_s"] < 1e14 and r["threads"] >= 1
    from superopt.search.machine import load
    m = load("cpu")
    assert m.calibrated and m.dram_bw == pytest.approx(r["copy_bytes_per_s"])


@pytest.mark.skipif(probe()[0], reason="a CUDA device is present")
def test_cuda_calibration_without_a_device(capsys):
    assert main(["calibrate", "--backend", "cuda"]) == 2
    assert "no CUDA device is present" in capsys.readouterr().err


@pytest.mark.skipif(probe()[0], reason="a CUDA device is present (the GPU test checks the rate)")
def test_tensor_core_rate_without_a_device_says_why():
    from superopt.commands.calibrate import tensor_core_rate
    r = tensor_core_rate(reps=1, size=256)
    assert isinstance(r, str) and r.startswith("not measured (")

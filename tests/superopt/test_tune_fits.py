"""A kernel far too large for the backend (issue 27): buffers past the machine's memory are a
one-line refusal before anything is compiled or allocated; a candidate's measurement modeled
past a minute is a warning with the cost model's estimate."""
from __future__ import annotations

import json

import pytest

from superopt import validate
from superopt.cli import main
from superopt.io import save_kernel
from superopt.kernels.registry import Workload
from superopt.search import machine as M
from superopt.validate import RUNS_PER_CANDIDATE, ValidationError, buffer_bytes, check_fits, host_memory, modeled_hand_s


def _matmul(m: int, n: int, k: int, dtype: str = "float32"):
    return Workload.make("matmul", M=m, N=n, K=k, dtype=dtype).kernels[0]


def test_buffers_past_the_host_memory_are_refused_in_one_line(tmp_path, capsys):
    k = _matmul(131072, 131072, 64)           # a 68.7 GB output
    assert buffer_bytes(k) == 4 * (131072 * 64 * 2 + 131072 ** 2)
    if (host_memory() or 0) >= buffer_bytes(k): pytest.skip("this host holds the buffers")
    f = tmp_path / "huge.json"
    save_kernel(k, f)
    for command in ("tune", "run"):
        assert main([command, str(f), "--json"]) == 2
        d = json.loads(capsys.readouterr().out)
        assert "GB of buffers, more than this machine's" in d["error"] and "\n" not in d["error"] and d["kind"] == "input"


def test_a_gpu_is_held_to_its_own_memory():
    h100 = M.load("h100")
    assert check_fits(_matmul(131072, 131072, 64), h100) is None        # 68.7 GB fit its 80 GB
    with pytest.raises(ValidationError, match="the h100 GPU's 80.0 GB"):
        check_fits(Workload.make("transpose", M=131072, N=131072).kernels[0], h100)   # 137 GB do not


def test_a_slow_kernel_is_warned_about_with_the_model_estimate():
    cpu = M.host_cpu()
    k = _matmul(10240, 10240, 10240)
    est = modeled_hand_s(k, cpu)
    assert est is not None and est > modeled_hand_s(_matmul(1024, 1024, 1024), cpu) * 500   # ~1000x the flops
    w = check_fits(k, cpu)
    assert (w is not None) == (est * RUNS_PER_CANDIDATE > validate.SLOW_S)
    w = check_fits(k, cpu, slow_s=est)                                    # a threshold the estimate surely passes
    assert w and f"{est:,.2f} s a run" in w and "cost model" in w
    assert check_fits(_matmul(64, 64, 64), cpu) is None


def test_the_warning_reaches_the_json(tmp_path, capsys, monkeypatch):
    f = tmp_path / "mm.json"
    save_kernel(_matmul(32, 32, 32), f)
    monkeypatch.setattr(validate, "SLOW_S", 0.0)                          # every kernel counts as slow
    assert main(["run", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verified"] and len(d["warnings"]) == 1 and "modeled at" in d["warnings"][0]

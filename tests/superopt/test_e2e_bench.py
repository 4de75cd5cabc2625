"""bench/e2e.py on the CPU at small shapes: the same code path as on the GPU (schedules,
every kernel verified, the buffer plan, a child process per model) without a graph,
against numpy's float64 reference."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from superopt.ir.kernelize import kernelize
from superopt.kernels.models import MODELS

_PATH = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"
_spec = importlib.util.spec_from_file_location("bench_e2e", _PATH)
e2e = importlib.util.module_from_spec(_spec)
sys.modules["bench_e2e"] = e2e            # its dataclasses look their module up
_spec.loader.exec_module(e2e)

KEYS = ("model", "ours_s", "torch_s", "torch_compile_s", "kernels", "rel_err", "tuning_s")


def test_rel_err_is_max_abs_over_max_ref_and_nan_is_infinite():
    assert e2e.rel_err(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert e2e.rel_err(np.array([np.nan, 2.0]), np.array([1.0, 2.0])) == float("inf")
    with pytest.raises(ValueError, match="3 elements, reference 2"):
        e2e.rel_err(np.zeros(3), np.zeros(2))


def test_the_bert_layer_matches_numpy_with_every_kernel_verified(tmp_path):
    a = e2e.parse(["--backend", "cpu", "--small", "--repeat", "2", "--cache", str(tmp_path / "c.sqlite"), "--out", "x"])
    e = e2e.measure("bert_layer", a)
    assert all(k in e for k in KEYS)
    assert e["kernels"] == len(kernelize(MODELS["bert_layer"](small=True).out.node)) == len(e["per_kernel"])
    assert e["all_verified"] and e["schedules"] == {"hand": e["kernels"]} and e["tuning_s"] == 0.0
    assert e["rel_err"] < 1e-5 and e["reference"] == "numpy-float64"
    assert e["ours_s"] > 0 and all(c["time_s"] > 0 for c in e["per_kernel"])
    assert e["torch_s"] is None and e["torch_compile_s"] is None   # no torch on cpu


def test_main_writes_every_model_and_goes_on_past_a_child_that_fails(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    cache = str(tmp_path / "c.sqlite")
    assert e2e.main(["--backend", "cpu", "--small", "--models", "embed,resnet_block", "--repeat", "2",
                     "--cache", cache, "--isolate", "yes", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("python bench/e2e.py --backend cpu")
    assert [m["model"] for m in doc["models"]] == ["embed", "resnet_block"]
    for m in doc["models"]:
        assert m["rel_err"] < 1e-5 and m["all_verified"] and m["kernels"] >= 1 and "error" not in m
    assert "resnet_block" in capsys.readouterr().out.splitlines()[-1]      # the table is printed last
    # a child that runs out of time: its model says so, the next model is still measured
    assert e2e.main(["--backend", "cpu", "--small", "--models", "embed,bottleneck", "--repeat", "2", "--cache", cache,
                     "--isolate", "yes", "--model-timeout", "0.05", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [m["model"] for m in doc["models"]] == ["embed", "bottleneck"]
    assert all("timed out after" in m["error"] for m in doc["models"])


def test_unknown_models_are_refused():
    with pytest.raises(SystemExit, match="unknown models"):
        e2e.main(["--backend", "cpu", "--models", "gpt5", "--out", "x"])

"""tune-cache --json: one JSON object with every kernel's row and the whole-model estimate."""
import json

import numpy as np

import superopt
from superopt.cli import main
from superopt.ir.tensor import Tensor


def test_tune_cache_json_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path / "user-cache"))
    with superopt.capture(tmp_path / "k") as cap:
        x = Tensor(np.ones((32, 32), np.float32))
        (x @ x).numpy()
        (x + 1).numpy()
    args = ["tune-cache", str(tmp_path / "k"), "--cache", str(tmp_path / "c.sqlite"), "--method", "hand",
            "--budget-per-kernel", "1", "--no-progress", "--json"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["backend"] == "cpu" and not d["interrupted"]
    assert {r["key"] for r in d["kernels"]} == set(cap.counts)
    assert all(r["status"] == "tuned" and r["measured_s"] > 0 and r["error"] is None for r in d["kernels"])
    assert d["whole_model"]["kernels_counted"] == len(cap.counts)
    assert main(args) == 0                                   # the rerun: everything cached, still one object
    assert {r["status"] for r in json.loads(capsys.readouterr().out)["kernels"]} == {"cached"}


def test_tune_cache_json_error_is_one_object(tmp_path, capsys):
    assert main(["tune-cache", str(tmp_path / "missing"), "--json"]) == 2
    d = json.loads(capsys.readouterr().out)
    assert d["command"] == "tune-cache" and "not a directory" in d["error"]

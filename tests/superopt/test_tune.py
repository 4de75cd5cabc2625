"""`superopt tune` and `superopt run` end to end on the cpu."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from superopt.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "kernels" / "examples"


def test_tune_json_has_the_promised_fields(capsys):
    assert main(["tune", str(EXAMPLES / "matmul_512.pkl"), "--method", "hand", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("kernel", "backend", "method", "schedule", "verified", "time_s", "gflops", "gbps", "tuning_s"):
        assert key in out
    assert out["backend"] == "cpu" and out["method"] == "hand" and out["verified"] is True
    assert out["time_s"] > 0 and out["gflops"] > 0 and out["schedule"]["version"] == 1


def test_tune_text_says_it_used_hand_rules(capsys):
    assert main(["tune", str(EXAMPLES / "softmax_1024.json"), "--method", "hand"]) == 0
    text = capsys.readouterr().out
    assert "hand rules" in text and "verified: yes" in text and "GFLOP/s" in text and "GB/s" in text


def test_run_with_a_given_schedule(capsys, tmp_path):
    sched = '{"version":1,"splits":[[["grid",8],["loop",64]],[["loop",512]],[["loop",512]]],"workers":2}'
    f = tmp_path / "s.json"
    f.write_text(sched)
    assert main(["run", str(EXAMPLES / "matmul_512.pkl"), "--schedule", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "given" and out["verified"] and out["schedule"]["workers"] == 2


@pytest.mark.parametrize("sched,msg", [('{"version":1,"splits":[[["loop",500]],[["loop",512]],[["loop",512]]]}', "cover"),
                                       ("{not json", "not valid JSON"),
                                       ('{"version":9,"splits":[]}', "version")])
def test_run_rejects_bad_schedules_with_one_line(capsys, sched, msg):
    assert main(["run", str(EXAMPLES / "matmul_512.pkl"), "--schedule", sched]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_missing_file_is_a_user_error(capsys, tmp_path):
    assert main(["tune", str(tmp_path / "nope.pkl")]) == 2
    assert "error" in capsys.readouterr().err


def test_tune_with_the_solver_keeps_a_verified_schedule(capsys, tmp_path):
    from superopt import Tensor
    from superopt.io import save_kernel
    k = (Tensor.empty(32, 16, name="a") @ Tensor.empty(16, 32, name="b")).schedule()[0].kernel
    f = save_kernel(k, tmp_path / "mm.json")
    assert main(["tune", str(f), "--method", "z3", "--budget", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["method"] in ("z3", "hand") and out["baseline_method"] == "hand"
    assert out["baseline_s"] > 0
    if out["method"] == "z3":
        assert out["modeled_s"] > 0 and out["solver"]["candidates"]
    else:
        assert "method_note" in out


def _small_matmul(tmp_path):
    from superopt import Tensor
    from superopt.io import save_kernel
    k = (Tensor.empty(32, 16, name="a") @ Tensor.empty(16, 32, name="b")).schedule()[0].kernel
    return k, save_kernel(k, tmp_path / "mm.json")


@pytest.mark.parametrize("method", ["beam", "z3+beam"])
def test_tune_with_beam_never_loses_to_its_start(capsys, tmp_path, method):
    _, f = _small_matmul(tmp_path)
    assert main(["tune", str(f), "--method", method, "--budget", "4", "--json", "--no-cache"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["baseline_method"] == "hand" and out["time_s"] > 0
    assert out["method"] in ("hand", "z3", "beam", "z3+beam")
    assert "beam" in out and out["beam"]["timed"] >= 1
    assert "cache" not in out


def test_tune_stores_the_verified_result_in_the_cache(capsys, tmp_path):
    from superopt.cache import Cache
    k, f = _small_matmul(tmp_path)
    db = tmp_path / "k.sqlite"
    assert main(["tune", str(f), "--method", "hand", "--cache", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with Cache(db) as c:
        e = c.get(k.key, "cpu")
    assert e is not None and e.verified and e.method == "hand"
    assert e.schedule_obj().to_dict() == out["schedule"]


@pytest.mark.parametrize("method", ["z3", "z3+beam"])
def test_one_input_set_and_one_reference_for_every_candidate(monkeypatch, method):
    """tune checks the hand rules, each solver candidate and BEAM's pick on one input set:
    one reference evaluation for all of them, and each candidate still checked."""
    import superopt.verify as V
    from superopt.engine import tune as tune_kernel
    from superopt import Tensor
    k = (Tensor.empty(32, 16, name="a") @ Tensor.empty(16, 32, name="b")).schedule()[0].kernel
    refs, checks = [], []
    real_ref, real_compare = V.run_kernel, V.compare
    monkeypatch.setattr(V, "run_kernel", lambda *a, **kw: refs.append(1) or real_ref(*a, **kw))
    monkeypatch.setattr(V, "compare", lambda *a, **kw: checks.append(1) or real_compare(*a, **kw))
    m = tune_kernel(k, "cpu", budget_s=4, method=method)
    assert m.verified
    solver = m.extra.get("solver", {}).get("candidates", [])
    assert len(refs) == 1 + len(V.special_sets(k)) and len(checks) >= 1 + len(solver)   # each set's once
    if method == "z3+beam":
        assert m.extra["beam"]["overrun_s"] >= 0 and m.extra["beam"]["budget_s"] > 0

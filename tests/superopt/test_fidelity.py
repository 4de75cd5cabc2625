"""`superopt fidelity` end to end on the cpu: figures, JSON, calibration, bad input."""
from __future__ import annotations

import json

import pytest

from superopt.cli import main
from superopt.io import save_kernel
from superopt.kernels.registry import Workload
from superopt.search import machine as machines


@pytest.fixture(scope="module")
def kfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "mm.json"
    save_kernel(Workload.make("matmul", M=16, N=32, K=32).kernel, path)
    return path


def test_fidelity_end_to_end(kfile, tmp_path, capsys):
    out = tmp_path / "fid.json"
    assert main(["fidelity", str(kfile), "--schedules", "8", "--runs", "2", "--save", str(out),
                 "--calibrate-model"]) == 0
    cap = capsys.readouterr()
    assert "Spearman" in cap.out and "[  8/8]" in cap.err   # figures on stdout, progress on stderr
    doc = json.loads(out.read_text())
    k = doc["kernels"][0]
    assert k["schedules"] == 8 and k["verified"] == 8 and len(k["points"]) == 8
    assert -1.0 <= k["spearman"] <= 1.0 and 1 <= k["top1_measured_rank"] <= 8 and k["top1_gap_in_topk"] >= 0
    assert all(p["measured_s"] > 0 and p["modeled_s"] > 0 for p in k["points"])
    assert doc["command"].startswith("superopt fidelity ") and "--schedules 8" in doc["command"]
    assert len(doc["load_avg_before"]) == 3
    cal = doc["calibration"]
    assert cal["mean_spearman_after"] >= cal["mean_spearman_before"]
    if cal["stored"]:   # stored only when the fit ranks better; then the machine carries it
        assert machines.load("cpu").notes["cost"]["loop_cycles"] == cal["params"]["loop_cycles"]
        machines.calibration_dir().joinpath("machine-cpu.json").unlink()


def test_fidelity_saves_after_every_kernel(kfile, tmp_path, monkeypatch, capsys):
    """A run cut short after its first kernel leaves that kernel's result (``partial``)."""
    from superopt.engine import fidelity
    out, real, calls = tmp_path / "fid.json", fidelity.measure_kernel, []

    def second_fails(*a, **kw):
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(fidelity, "measure_kernel", second_fails)
    assert main(["fidelity", str(kfile), str(kfile), "--schedules", "4", "--runs", "1", "--save", str(out)]) != 0
    assert "interrupted" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["partial"] is True and len(doc["kernels"]) == 1 and doc["kernels"][0]["schedules"] == 4
    monkeypatch.setattr(fidelity, "measure_kernel", real)
    assert main(["fidelity", str(kfile), "--schedules", "4", "--runs", "1", "--save", str(out)]) == 0
    assert json.loads(out.read_text())["partial"] is False


def test_fidelity_json_output(kfile, capsys):
    assert main(["fidelity", str(kfile), "--schedules", "4", "--runs", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["schedules"] == 4 and doc["kernels"][0]["kernel"].startswith("matmul_16x32x32")


def test_fidelity_on_one_core_times_single_worker_schedules(kfile, capsys):
    assert main(["fidelity", str(kfile), "--schedules", "5", "--runs", "1", "--cores", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["machine"]["cores"] == 1 and "--cores 1" in doc["command"]
    assert all(p["schedule"].get("workers", 1) == 1 for p in doc["kernels"][0]["points"])


@pytest.mark.parametrize("argv,msg", [(["MISSING.json"], "no such file"),
                                      (["{k}", "--schedules", "2"], "at least 3"),
                                      (["{k}", "--runs", "0"], "at least 1"),
                                      (["{k}", "--cores", "999"], "--cores must be between")])
def test_fidelity_bad_input_is_a_clear_error(kfile, tmp_path, capsys, argv, msg):
    argv = [a.replace("{k}", str(kfile)).replace("MISSING", str(tmp_path / "missing")) for a in argv]
    assert main(["fidelity", *argv]) == 2
    err = capsys.readouterr().err
    assert "superopt fidelity: error:" in err and msg in err


def test_fidelity_rejects_a_foreign_file(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    assert main(["fidelity", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_every_schedule_is_checked_on_one_input_set(kfile, monkeypatch, capsys):
    from superopt import verify
    drawn, refs = [], []
    real_draw, real_ref = verify.random_inputs, verify.reference
    monkeypatch.setattr(verify, "random_inputs", lambda k, rng: drawn.append(k.name) or real_draw(k, rng))
    monkeypatch.setattr(verify, "reference", lambda *a, **kw: refs.append(1) or real_ref(*a, **kw))
    assert main(["fidelity", str(kfile), "--schedules", "6", "--runs", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sets = verify.special_sets(Workload.make("matmul", M=16, N=32, K=32).kernel)   # each special set's reference: once too
    assert doc["kernels"][0]["verified"] == 6 and len(drawn) == 1 and len(refs) == 1 + len(sets)

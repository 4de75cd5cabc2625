"""superopt bench: a tiny run end to end (JSON fields, table, plots), the statistics it
reports, and its errors on bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from superopt import report
from superopt.benchmark import parse_methods
from superopt.cli import main

TINY = ["bench", "--suite", "membound", "--small", "--only", "fma_2^26", "--backend", "cpu", "--budget", "1",
        "--repeat", "3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("superopt.search.beam")
    out = tmp_path_factory.mktemp("bench")
    rc = main(TINY + ["--methods", "hand,z3,beam,numpy", "--out", str(out)])
    return rc, out


def test_tiny_run_writes_json_with_every_figure(tiny_run):
    rc, out = tiny_run
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"].startswith("superopt bench --suite membound")
    assert doc["config"]["methods"] == ["hand", "z3", "beam", "numpy"]
    assert doc["machine"]["name"] == "cpu" and doc["versions"]["numpy"] == np.__version__
    (w,) = doc["workloads"]
    assert w["workload"] == "fma_2^26" and w["timed"] == "the only kernel"
    (k,) = w["kernels"]
    assert k["flops"] > 0 and k["roofline_s"] > 0
    for name in ("hand", "z3", "beam"):
        m = k["methods"][name]
        assert m["verified"] is True and m["time_s"] > 0 and m["tuning_s"] > 0
        assert m["rate"] > 0 and m["rate_unit"] in ("GB/s", "GFLOP/s") and m["roofline_pct"] > 0
        assert m["model_s"] > 0 and m["schedule"]["version"] >= 1
    assert k["methods"]["hand"]["speedup_vs_hand"] == pytest.approx(1.0)
    z3 = k["methods"]["z3"]
    assert z3["modeled_s"] > 0 and z3["solve_s"] > 0 and isinstance(z3["proved_optimal"], bool)
    assert z3["candidates"] and all("modeled_s" in c for c in z3["candidates"])
    trace = k["methods"]["beam"]["trace"]
    assert trace and all(b2 <= b1 for (_, b1), (_, b2) in zip(trace, trace[1:]))   # best so far never worsens
    assert all(t2 >= t1 for (t1, _), (t2, _) in zip(trace, trace[1:]))
    beam = k["methods"]["beam"]
    assert beam["trace_start_s"] > 0 and beam["evaluated"] and all(c["modeled_s"] > 0 for c in beam["evaluated"])
    assert w["methods"]["numpy"]["time_s"] > 0
    s = doc["summary"]
    assert set(s["methods"]) == {"hand", "z3", "beam"} and s["fidelity"]["points"] >= 2


def test_tiny_run_writes_table_and_plots(tiny_run):
    _, out = tiny_run
    md = (out / "results.md").read_text()
    assert "| fma_2^26 |" in md.replace("membound | ", "") and "Spearman" in md
    if pytest.importorskip("matplotlib"):
        for name in ("speedup", "quality_vs_time", "quality_vs_time_kernels", "roofline", "model_fidelity"):
            png = out / f"{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"({name}.png)" in md


def test_without_matplotlib_writes_table_and_json_only(tmp_path, monkeypatch, capsys):
    import superopt.plots as P
    monkeypatch.setattr(P, "have_matplotlib", lambda: False)
    rc = main(TINY + ["--methods", "hand", "--out", str(tmp_path)])
    assert rc == 0
    assert "matplotlib" in capsys.readouterr().err
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.md").exists()
    assert not list(tmp_path.glob("*.png"))
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    doc = (tmp_path / "results.json").read_text()
    assert main(["bench", "--replot", str(tmp_path)]) == 0            # the plots, drawn later elsewhere
    assert "roofline.png" in {p.name for p in tmp_path.glob("*.png")}   # (hand only: no speed-up plot)
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == json.loads(doc)["summary"]
    assert main(["bench", "--replot", str(tmp_path / "nope")]) == 2


def test_spearman_matches_definition():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert report.spearman(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert report.spearman(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert report.spearman([1, 2], [1, 2]) is None
    assert report.spearman([1, 1, 1], [1, 2, 3]) is None
    # ties share their average rank; without ties rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    assert list(report.ranks([3.0, 1.0, 3.0, 2.0])) == [3.5, 1.0, 3.5, 2.0]
    a, b = [0.3, 0.1, 0.7, 0.2, 0.9], [2.0, 1.0, 5.0, 4.0, 3.0]
    d = report.ranks(a) - report.ranks(b)
    assert report.spearman(a, b) == pytest.approx(1 - 6 * (d ** 2).sum() / (5 * 24))
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    u, v = rng.random(40), rng.integers(0, 5, 40).astype(float)
    assert report.spearman(u, v) == pytest.approx(scipy_stats.spearmanr(u, v)[0])


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("hand,simulated-annealing")
    assert parse_methods("hand,z3,hand") == ("hand", "z3")
    for args, msg in ((["--suite", "nope"], "unknown suite"), (["--suite", "bert", "--methods", "hand,torch"], "torch"),
                      (["--suite", "bert", "--methods", "hand,foo"], "unknown method"),
                      (["--suite", "bert", "--methods", "hand", "--only", "nothing_like_it"], "no workload")):
        assert main(["bench", *args, "--small", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def test_a_method_that_breaks_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from superopt.search import z3opt

    def broken(*a, **kw): raise RuntimeError("solver exploded")
    monkeypatch.setattr(z3opt, "solve", broken)
    rc = main(TINY + ["--methods", "hand,z3", "--out", str(tmp_path), "--no-plots"])
    assert rc == 1   # something did not verify
    doc = json.loads((tmp_path / "results.json").read_text())
    (k,) = doc["workloads"][0]["kernels"]
    assert k["methods"]["hand"]["time_s"] > 0
    z3 = k["methods"]["z3"]
    assert z3["time_s"] is None and z3["speedup_vs_hand"] is None and "solver exploded" in z3["reason"]
    assert doc["summary"]["methods"]["z3"]["unverified"] == 1
    md = (tmp_path / "results.md").read_text()
    assert "**unverified**" in md and "solver exploded" in md


def test_quality_curve_and_headline_arithmetic():
    hand = {"time_s": 1.0, "tuning_s": 0.1}
    z3 = {"time_s": 0.5, "tuning_s": 2.0, "speedup_vs_hand": 2.0}
    beam = {"time_s": 0.4, "tuning_s": 5.0, "trace": [[1.0, 1.2], [3.0, 0.48]], "trace_start_s": 1.2}
    doc = {"config": {"budget_s": 5.0}, "workloads": [{"suite": "s", "workload": "w", "kernels": [
        {"name": "k", "methods": {"hand": hand, "z3": z3, "beam": beam}}]}]}
    t = np.array([0.5, 1.0, 2.9, 3.0, 4.0])
    # in BEAM's own timings: start 1.2 s, then 0.48 s -> 2.5x its start (= the hand rules)
    assert list(report.speedup_curve(doc["workloads"][0]["kernels"][0], "beam", t)) == pytest.approx([1, 1, 1, 2.5, 2.5])
    h = report.headline(doc)
    assert h["z3_speedup"] == pytest.approx(2.0) and h["z3_tuning_s"] == pytest.approx(2.0)
    assert h["beam_speedup_at_z3_time"] == pytest.approx(1.0) and h["beam_final_speedup"] == pytest.approx(2.5)
    assert 2.9 < h["beam_time_to_match_z3_s"] <= 3.1


def _cuda() -> bool:
    from superopt.backends.cuda.cuda_backend import probe
    return probe()[0]


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_tiny_run_on_cuda_with_torch(tmp_path):
    pytest.importorskip("torch")
    rc = main(["bench", "--suite", "membound", "--small", "--only", "rowsum_16384x16384", "--backend", "cuda",
               "--methods", "hand,z3,beam,torch", "--budget", "2", "--repeat", "5", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    (w,) = doc["workloads"]
    assert doc["device"]["name"] and w["methods"]["torch"]["time_s"] > 0
    assert all(w["kernels"][0]["methods"][m]["time_s"] > 0 for m in ("hand", "z3", "beam"))


def test_a_run_stopped_early_keeps_the_workloads_it_measured(tmp_path, monkeypatch):
    from superopt import benchmark
    done = []
    real = benchmark.bench_workload

    def stop_after_one(w, *a, **kw):   # the second workload is cut off, e.g. by a time limit
        if done: raise KeyboardInterrupt
        done.append(w.name)
        return real(w, *a, **kw)
    monkeypatch.setattr(benchmark, "bench_workload", stop_after_one)
    args = ["bench", "--suite", "membound", "--small", "--only", "fma_2^26,rowsum_16384x16384", "--backend", "cpu",
            "--budget", "1", "--repeat", "3", "--methods", "hand", "--no-plots", "--out", str(tmp_path)]
    assert main(args) != 0            # "superopt: interrupted"
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["partial"] is True and [w["workload"] for w in doc["workloads"]] == done
    assert doc["workloads"][0]["kernels"][0]["methods"]["hand"]["time_s"] > 0
    assert "Partial run" in (tmp_path / "results.md").read_text()


def test_methods_share_one_input_set_and_reference_per_kernel(tmp_path, monkeypatch):
    from superopt import benchmark, verify
    drawn, refs = [], []
    real_draw, real_ref = benchmark.random_inputs, verify.reference

    def draw(k, rng):
        drawn.append(k.name)
        return real_draw(k, rng)

    def ref(*a, **kw):
        refs.append(a[0])
        return real_ref(*a, **kw)
    monkeypatch.setattr(benchmark, "random_inputs", draw)
    monkeypatch.setattr(verify, "random_inputs", lambda *a: pytest.fail("a method drew its own inputs"))
    monkeypatch.setattr(verify, "reference", ref)
    assert main(TINY + ["--methods", "hand,z3,beam", "--no-plots", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    (k,) = doc["workloads"][0]["kernels"]
    # one reference for the random set and one for each special set of the kernel, shared by the methods
    assert drawn == [k["name"]] and len(refs) == 1 + len(verify.special_sets(refs[0])) and k["inputs_s"] > 0
    assert all(m["time_s"] > 0 for m in k["methods"].values())

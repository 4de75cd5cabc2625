"""Batch tuning: end to end on captured model kernels, kill -9 and resume, failures, priorities."""
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import superopt
from superopt import runtime
from superopt.cache import Cache, device_id
from superopt.capture import read_manifest
from superopt.cli import main
from superopt.ir.tensor import Tensor
from superopt.tune_cache import load_jobs, prioritize

MODELS = Path(__file__).resolve().parents[2] / "bench" / "models"   # the scripts the H100 run tunes at full size


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, SUPEROPT_CACHE_DIR=str(tmp_path / "user-cache"))
    return env


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """BERT layer + ResNet block kernels captured into one directory."""
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path / "user-cache"))
    d = tmp_path / "model_kernels"
    for name in ("bert_layer.py", "resnet_block.py"):
        assert main(["capture", str(MODELS / name), "-o", str(d), "small"]) == 0
    return d


def _run_model(name: str) -> np.ndarray:
    """Run a model script at its small shapes in this process; its output array."""
    argv = sys.argv
    sys.argv = [name, "small"]
    try:
        return runpy.run_path(str(MODELS / name))["RESULT"]
    finally:
        sys.argv = argv


def test_tune_capture_end_to_end_then_runtime_uses_it(model_dir, tmp_path, capsys):
    cache = tmp_path / "kernels.sqlite"
    rc = main(["tune-cache", str(model_dir), "--cache", str(cache), "--budget-per-kernel", "1", "--workers", "2",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    m = read_manifest(model_dir)
    with Cache(cache) as c:
        rows = {e.kernel_key: e for e in c.entries()}
    assert set(rows) == {e["key"] for e in m["kernels"]}
    assert all(e.verified and e.measured_s > 0 and e.tunes == 1 and e.device == device_id("cpu") for e in rows.values())
    assert all(e.method in ("z3", "hand") and e.baseline_method == "hand" and e.measured_s <= e.baseline_s * 1.0001
               for e in rows.values())   # the solver's pick is kept only when it measured at least as fast
    assert "whole model" in out and "speed-up" in out
    md = (model_dir / "summary-cpu.md").read_text()
    assert md.count("| tuned |") == len(rows)
    # the runtime now runs every kernel of both models from the cache, with the right numbers
    want = [_run_model("bert_layer.py"), _run_model("resnet_block.py")]
    with runtime.using("cpu", cache=cache) as rt:
        got = [_run_model("bert_layer.py"), _run_model("resnet_block.py")]
        assert rt.stats["cache"] == sum(e["count"] for e in m["kernels"]) and rt.stats["hand"] == 0
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
    # a rerun finds everything done and tunes nothing
    assert main(["tune-cache", str(model_dir), "--cache", str(cache), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("cached") >= len(rows)
    with Cache(cache) as c:
        assert all(e.tunes == 1 for e in c.entries())


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid: out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs Linux /proc")
def test_kill_9_then_resume_tunes_every_kernel_exactly_once(model_dir, tmp_path):
    cache = tmp_path / "kernels.sqlite"
    cmd = [sys.executable, "-m", "superopt", "tune-cache", str(model_dir), "--cache", str(cache),
           "--budget-per-kernel", "1", "--workers", "2", "--method", "hand", "--no-progress"]
    n = len(read_manifest(model_dir)["kernels"])
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows, workers, t0 = 0, [], time.monotonic()
    while time.monotonic() - t0 < 300:
        workers = _children(proc.pid) or workers
        if cache.exists():
            try:
                with Cache(cache) as c: rows = len(c)
            except Exception:
                rows = 0
        if rows >= 1 or proc.poll() is not None: break
        time.sleep(0.02)
    assert proc.poll() is None and 1 <= rows < n, f"could not catch the batch mid-run (rows {rows} of {n})"
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline: time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "tuning workers outlived the killed batch"
    with Cache(cache) as c:
        before = {e.kernel_key: e.created for e in c.entries()}
    assert 1 <= len(before) < n
    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with Cache(cache) as c:
        after = {e.kernel_key: e for e in c.entries()}
    assert set(after) == {e["key"] for e in read_manifest(model_dir)["kernels"]}
    assert all(e.tunes == 1 and e.verified for e in after.values())     # tuned exactly once, nothing lost
    assert all(after[k].created == t for k, t in before.items())         # rows of the first run kept as they were


def test_timeouts_are_recorded_and_not_retried_unless_asked(model_dir, tmp_path, capsys):
    cache = tmp_path / "kernels.sqlite"
    args = ["tune-cache", str(model_dir), "--cache", str(cache), "--timeout", "0.01", "--method", "hand", "--no-progress"]
    assert main(args) == 1
    with Cache(cache) as c:
        assert len(c) == 0
        keys = [e["key"] for e in read_manifest(model_dir)["kernels"]]
        assert all("timed out" in c.failure(k, "cpu") for k in keys)
    capsys.readouterr()
    assert main(args) == 0                                      # nothing new to do: failures are not retried
    assert "failed: timed out" in capsys.readouterr().out
    assert main(["tune-cache", str(model_dir), "--cache", str(cache), "--retry-failed", "--no-progress",
                 "--budget-per-kernel", "1", "--method", "hand"]) == 0
    with Cache(cache) as c:
        assert len(c) == len(keys) and all(c.failure(k, "cpu") is None for k in keys)


def test_priority_is_gain_times_count(tmp_path):
    from superopt.search.machine import load
    from superopt.tune_cache import expected_gain_s
    with superopt.capture(tmp_path) as cap:
        x = Tensor(np.ones((64, 64), np.float32))
        for _ in range(5): (x + 1).numpy()
        (x @ x).numpy()
    jobs = prioritize(load_jobs(tmp_path), load("cpu"))
    m = load("cpu")
    for j in jobs:
        assert j.priority == pytest.approx(j.count * expected_gain_s(j.kernel, m))
    assert [j.priority for j in jobs] == sorted((j.priority for j in jobs), reverse=True)
    assert {j.key: j.count for j in jobs} == dict(cap.counts)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["tune-cache", str(tmp_path / "nope"), "--no-progress"]) == 2
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    assert main(["tune-cache", str(tmp_path), "--no-progress"]) == 2
    assert "not a superopt capture manifest" in capsys.readouterr().err
    (tmp_path / "manifest.json").unlink()
    assert main(["tune-cache", str(tmp_path), "--no-progress"]) == 2
    assert "no kernels" in capsys.readouterr().err


def test_two_concurrent_batches_split_the_work(model_dir, tmp_path):
    cache = tmp_path / "kernels.sqlite"
    cmd = [sys.executable, "-m", "superopt", "tune-cache", str(model_dir), "--cache", str(cache),
           "--budget-per-kernel", "1", "--method", "hand", "--no-progress"]
    procs = [subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    with Cache(cache) as c:
        rows = c.entries()
        assert not c.db.execute("SELECT * FROM claims").fetchall()        # every claim released
    assert {e.kernel_key for e in rows} == {e["key"] for e in read_manifest(model_dir)["kernels"]}
    assert all(e.tunes == 1 for e in rows)                                # nothing tuned twice
    tuned_by = [len(re.findall(r"│ tuned\s+│", o[0])) for o in outs]
    assert sum(tuned_by) == len(rows)                                     # each kernel tuned by exactly one batch

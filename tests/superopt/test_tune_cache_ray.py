"""tune-cache on a local Ray cluster: every kernel stored once by the driver, a SIGKILLed driver
resumed, a killed worker's kernel retried."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superopt.cache import Cache
from superopt.capture import read_manifest
from superopt.cli import main

ray = pytest.importorskip("ray")

MODELS = Path(__file__).resolve().parents[2] / "bench" / "models"
HERE = Path(__file__).resolve().parent


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path / "user-cache"))
    d = tmp_path / "model_kernels"
    for name in ("bert_layer.py", "resnet_block.py"):
        assert main(["capture", str(MODELS / name), "-o", str(d), "small"]) == 0
    return d


def _env(tmp_path: Path, **extra) -> dict:
    return dict(os.environ, SUPEROPT_CACHE_DIR=str(tmp_path / "user-cache"),
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **extra)


def _cmd(model_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "superopt", "tune-cache", str(model_dir), "--cache", str(cache), "--ray",
            "--budget-per-kernel", "1", "--method", "hand", "--no-progress", *extra]


def _rows(cache: Path) -> int:
    try:
        with Cache(cache) as c: return len(c)
    except Exception:  # not created yet, or mid-write
        return 0


def test_sigkilled_driver_resumes_and_every_kernel_is_stored_once(model_dir, tmp_path):
    cache = tmp_path / "kernels.sqlite"
    keys = {e["key"] for e in read_manifest(model_dir)["kernels"]}
    assert len(keys) >= 6
    # the tune function sleeps a little per kernel so the batch can be caught mid-run
    proc = subprocess.Popen(_cmd(model_dir, cache, "--tune-fn", "ray_hooks:slow_tune"), env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240 and proc.poll() is None and _rows(cache) < 1: time.sleep(0.05)
    rows = _rows(cache)
    assert proc.poll() is None and 1 <= rows < len(keys), f"could not catch the batch mid-run ({rows} of {len(keys)})"
    os.killpg(proc.pid, signal.SIGKILL)   # the driver and the local cluster it started
    proc.wait()
    with Cache(cache) as c:
        before = {e.kernel_key: e.created for e in c.entries()}
    r = subprocess.run(_cmd(model_dir, cache), env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                       start_new_session=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kernels tuned" in r.stderr
    with Cache(cache) as c:
        after = {e.kernel_key: e for e in c.entries()}
        assert not c.db.execute("SELECT * FROM claims").fetchall()   # the dead driver's claims were taken over
    assert set(after) == keys
    assert all(e.tunes == 1 and e.verified for e in after.values())     # stored exactly once, nothing lost
    assert all(after[k].created == t for k, t in before.items())        # the first run's rows kept
    with Cache(cache) as c:                                             # the driver logged what the tasks timed
        assert all(c.candidates(k, "cpu") for k in keys)


def test_a_killed_worker_is_retried_and_its_kernel_stored_once(model_dir, tmp_path):
    cache = tmp_path / "kernels.sqlite"
    marks = tmp_path / "marks"
    marks.mkdir()
    keys = {e["key"] for e in read_manifest(model_dir)["kernels"]}
    r = subprocess.run(_cmd(model_dir, cache, "--tune-fn", "ray_hooks:dies_once"),
                       env=_env(tmp_path, RAY_HOOK_MARKS=str(marks)), capture_output=True, text=True, timeout=300,
                       start_new_session=True)
    assert r.returncode == 0, r.stderr[-2000:]
    killed = sorted(p.name for p in marks.iterdir() if p.suffix == ".killed")
    assert len(killed) == 1                                             # one worker process died mid-kernel
    with Cache(cache) as c:
        rows = {e.kernel_key: e for e in c.entries()}
    assert set(rows) == keys and all(e.tunes == 1 and e.verified for e in rows.values())
    assert Path(killed[0]).stem in rows                                 # its kernel was retried and stored


def test_ray_and_gpus_together_are_refused(model_dir, tmp_path, capsys):
    assert main(["tune-cache", str(model_dir), "--cache", str(tmp_path / "c.sqlite"), "--ray", "--gpus", "0",
                 "--no-progress"]) == 2
    assert "choose one" in capsys.readouterr().err

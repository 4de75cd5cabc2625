"""Issue 22 items 8-9: every cache / CLI-input failure is one line on stderr and exit status 2;
corrupt, read-only and locked caches are told apart; claims are atomic and expire with their owner."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superopt.cache import Cache, CacheError, Entry
from superopt.cli import main
from superopt.ir.schedule import Level, Schedule, Split

EXAMPLE = Path(__file__).resolve().parents[2] / "kernels" / "examples" / "matmul_512.json"
SCHED = Schedule(((Split(Level.LOOP, 8), Split(Level.UPCAST, 4)),)).to_json()


def entry(key: str) -> Entry:
    return Entry(kernel_key=key, backend="cpu", device="dev0", schedule=SCHED, method="hand", verified=True,
                 measured_s=1e-3, kernel="x" * 400)


def one_line_exit2(capsys, argv) -> str:
    with pytest.raises(SystemExit) as ex:
        rc = main(argv)
        raise SystemExit(rc)
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def filled(path) -> str:
    with Cache(path) as c:
        for i in range(150): c.put(entry(f"k{i:05d}" * 6))
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return str(path)


def test_uncreatable_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = one_line_exit2(capsys, ["cache", "prune", "--cache", str(tmp_path / "afile" / "sub" / "k.sqlite")])
    assert "cannot create" in err


def test_wrong_schema_on_prune(tmp_path, capsys):
    p = tmp_path / "s.sqlite"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('format','superopt.kernel-cache'), ('version','1')")
    db.execute("CREATE TABLE results (x)")
    db.commit(); db.close()  # noqa: E702
    for action in ("prune", "ls"):
        assert "schema" in one_line_exit2(capsys, ["cache", action, "--cache", str(p)])


def test_garbage_typed_rows(tmp_path, capsys):
    p = filled(tmp_path / "g.sqlite")
    db = sqlite3.connect(p)
    db.execute("UPDATE results SET measured_s='fast', verified=1")
    db.commit(); db.close()  # noqa: E702
    assert "bad values" in one_line_exit2(capsys, ["cache", "ls", "--cache", p])


def test_corrupted_page_noticed_on_open(tmp_path, capsys):
    p = filled(tmp_path / "c.sqlite")
    data = bytearray(open(p, "rb").read())
    assert len(data) > 4096 * 6
    rng = random.Random(1)
    for off in range(4096 * 3, 4096 * 4): data[off] = rng.randrange(256)
    open(p, "wb").write(bytes(data))
    with pytest.raises(CacheError, match="corrupt"):
        Cache(p)
    for argv in (["cache", "prune", "--cache", p], ["cache", "ls", "--cache", p]):
        assert "corrupt" in one_line_exit2(capsys, argv)


def test_locked_is_not_called_corrupt(tmp_path, capsys, monkeypatch):
    p = filled(tmp_path / "l.sqlite")
    monkeypatch.setenv("SUPEROPT_CACHE_BUSY_TIMEOUT", "0.2")
    db = sqlite3.connect(p, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        err = one_line_exit2(capsys, ["cache", "prune", "--cache", p])
    finally:
        db.execute("ROLLBACK"); db.close()  # noqa: E702
    assert "locked" in err and "corrupt" not in err
    with Cache(p) as c: assert len(c) == 150  # untouched


def test_read_only_is_not_called_corrupt(tmp_path):
    p = filled(tmp_path / "r.sqlite")
    os.chmod(p, stat.S_IRUSR)  # root ignores this mode, so the handle is also opened read-only (mode=ro URI)
    try:
        with Cache(p, readonly=True) as c:
            with pytest.raises(CacheError) as ex:
                c.put(entry("new"), force=True)
            with pytest.raises(CacheError) as ex2:
                c.claim("kk", "cpu", "dev0", ttl_s=600)
    finally:
        os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
    for e in (ex.value, ex2.value):
        assert "read-only" in str(e) and "corrupt" not in str(e) and "\n" not in str(e)
    with Cache(p) as c: assert len(c) == 150


def _claim(path, q):
    with Cache(path) as c:
        q.put(c.claim("kk", "cpu", "dev0", ttl_s=600))
        time.sleep(0.5)  # hold the claim (alive) while the other process tries


def test_concurrent_claim_exactly_one_wins(tmp_path):
    p = str(tmp_path / "claim.sqlite")
    Cache(p).close()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(p, q)) for _ in range(4)]
    for pr in procs: pr.start()
    got = [q.get(timeout=20) for _ in procs]
    for pr in procs: pr.join(20)
    assert sorted(got) == [False, False, False, True]


def test_stale_claim_of_dead_pid_expires(tmp_path):
    p = str(tmp_path / "stale.sqlite")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is certainly dead now
    with Cache(p) as c:
        c.db.execute("INSERT INTO claims VALUES ('kk', 'cpu', 'dev0', ?, ?, ?)", (socket.gethostname(), child.pid, time.time()))
        assert c.claim("kk", "cpu", "dev0", ttl_s=600)
        c.db.execute("UPDATE claims SET host='elsewhere', pid=1, since=?", (time.time() - 3600,))
        assert c.claim("kk", "cpu", "dev0", ttl_s=600)  # older than the timeout: taken over
        c.db.execute("UPDATE claims SET host='elsewhere', pid=1, since=?", (time.time(),))
        assert not c.claim("kk", "cpu", "dev0", ttl_s=600)  # a live, young claim of another host holds


@pytest.mark.parametrize("argv", [
    ["run", "x.pkl", "--seed", "-1"],
    ["run", "x.pkl", "--step", "-1"],
    ["show", "x.pkl", "--step", "1.5"],
    ["plan", "--timeout", "-1", "x.py"],
    ["cache", "prune", "--older-than", "-5"],
    ["cache", "prune", "--older-than", "nan"],
    ["tune-cache", "d", "--workers", "0"],
    ["tune-cache", "d", "--budget-per-kernel", "-3"],
    ["fidelity", "x.pkl", "--runs", "0"],
    ["tune", "x.pkl", "--budget", "-3"],
    ["tune", "x.pkl", "--step", "-1"],
])
def test_bad_numeric_flags(argv, capsys):
    err = one_line_exit2(capsys, argv)
    assert "error: argument" in err


def test_summary_written_atomically(tmp_path):
    from superopt.commands.tune_cache import write_atomic
    target = tmp_path / "summary-cpu.md"
    target.write_text("old")
    write_atomic(target, "new table\n")
    assert target.read_text() == "new table\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["summary-cpu.md"]


@pytest.mark.parametrize("text", [
    "[" * 100000 + "]" * 100000,                                # deeply nested: no RecursionError traceback
    '{"version": 1, "splits": [[["loop", 512.9]]]}',           # float size: refused, not truncated
    '{"version": 1, "splits": [[["loop", "512"]]]}',           # string size: refused, not coerced
    '{"version": 1, "splits": [[["loop", 512]]], "vector": -1}',
    '{"version": 1, "splits": [[["loop", true]]]}',
    '{"version": 1, "splits": "abc"}',
])
def test_bad_schedule_json_is_one_line(text, capsys):
    err = one_line_exit2(capsys, ["run", str(EXAMPLE), "--schedule", text])
    assert "--schedule" in err
    with pytest.raises(ValueError):
        Schedule.from_json(text)


def test_good_schedule_still_parses():
    assert Schedule.from_json(SCHED).to_json() == SCHED


def test_take_sees_a_stored_result_in_the_claim_transaction(tmp_path):
    p = str(tmp_path / "take.sqlite")
    with Cache(p) as c:
        assert c.take("kk", "cpu", "dev0", ttl_s=600) == "ok"
        c.put(entry("kk"))
        c.release("kk", "cpu", "dev0")
        got = c.take("kk", "cpu", "dev0", ttl_s=600)  # already tuned: the row, not a second claim
        assert isinstance(got, Entry) and got.kernel_key == "kk"
        assert c.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0

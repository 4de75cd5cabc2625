import io
import json
import multiprocessing as mp
import sqlite3
from dataclasses import replace

import pytest

from superopt.cache import Cache, CacheError, Entry, device_id
from superopt.cli import main
from superopt.ir.schedule import Level, Schedule, Split

SCHED = Schedule(((Split(Level.LOOP, 8), Split(Level.UPCAST, 4)),)).to_json()


def entry(key="k" * 32, t=1e-3, verified=True, **kw) -> Entry:
    return Entry(kernel_key=key, backend="cpu", device="dev0", schedule=SCHED, method="hand",
                 verified=verified, measured_s=t, baseline_s=2e-3, **kw)


def test_roundtrip_and_better_wins(tmp_path):
    with Cache(tmp_path / "c.sqlite") as c:
        assert c.get("k" * 32, "cpu", "dev0") is None
        assert c.put(entry(t=2e-3))
        assert not c.put(entry(t=3e-3))          # slower: kept the old row
        assert c.put(entry(t=1e-3))              # faster: replaced
        e = c.get("k" * 32, "cpu", "dev0")
        assert e.measured_s == 1e-3 and e.schedule_obj() == Schedule.from_json(SCHED)
        assert e.speedup == pytest.approx(2.0) and e.tuner_version and e.created
        assert e.tunes == 2                      # two writes reached the row
        assert c.get("k" * 32, "cpu", "other-device") is None


def test_unverified_rows_are_not_served(tmp_path):
    with Cache(tmp_path / "c.sqlite") as c:
        c.put(entry(verified=False))
        assert c.get("k" * 32, "cpu", "dev0") is None
        assert c.put(entry(t=5e-3))              # a verified row beats an unverified faster one
        assert c.get("k" * 32, "cpu", "dev0").measured_s == 5e-3
        assert not c.put(entry(t=1e-4, verified=False))


def test_bad_schedule_is_refused(tmp_path):
    with Cache(tmp_path / "c.sqlite") as c, pytest.raises(ValueError):
        c.put(replace(entry(), schedule='{"version": 99}'))


def test_prune(tmp_path):
    with Cache(tmp_path / "c.sqlite") as c:
        c.put(entry("a" * 32, verified=False))
        c.put(entry("b" * 32))
        c.put(replace(entry("c" * 32), created="2000-01-01T00:00:00+00:00"))
        c.put(replace(entry("d" * 32), tuner_version="0.0.0-old"))
        assert c.prune() == 1
        assert c.prune(older_than_days=30, unverified=False) == 1
        assert c.prune(other_versions=True, unverified=False) == 1
        assert [e.kernel_key for e in c.entries()] == ["b" * 32]


def test_export_import(tmp_path):
    with Cache(tmp_path / "a.sqlite") as a:
        a.put(entry("a" * 32)); a.put(entry("b" * 32, t=5e-3))  # noqa: E702
        buf = io.StringIO()
        assert a.export_jsonl(buf) == 2
    with Cache(tmp_path / "b.sqlite") as b:
        b.put(entry("b" * 32, t=1e-3))
        assert b.import_jsonl(io.StringIO(buf.getvalue())) == (1, 1)   # b's faster row kept
        assert {e.kernel_key: e.measured_s for e in b.entries()} == {"a" * 32: 1e-3, "b" * 32: 1e-3}
        with pytest.raises(CacheError, match="line 1"):
            b.import_jsonl(io.StringIO('{"format": "other"}\n'))
        with pytest.raises(CacheError, match="line 2"):
            b.import_jsonl(io.StringIO(buf.getvalue().splitlines()[0] + "\nnot json\n"))


def test_corrupt_file_is_detected(tmp_path):
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CacheError, match="not a superopt kernel cache"):
        Cache(p)
    assert p.read_bytes().startswith(b"this is not")   # left untouched


def test_damaged_sqlite_is_detected(tmp_path):
    p = tmp_path / "c.sqlite"
    with Cache(p) as c:
        for i in range(200): c.put(entry(f"{i:032d}"))
    data = bytearray(p.read_bytes())
    data[100:len(data)] = b"\xff" * (len(data) - 100)   # keep the header, wreck every page
    p.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="corrupt"):
        with Cache(p) as c:
            c.entries()


def test_foreign_sqlite_is_detected(tmp_path):
    p = tmp_path / "other.db"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit(); db.close()  # noqa: E702
    with pytest.raises(CacheError, match="another program"):
        Cache(p)


def test_cli_reports_corrupt_cache_in_one_line(tmp_path, capsys):
    p = tmp_path / "c.sqlite"
    p.write_text("garbage")
    assert main(["cache", "ls", "--cache", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a superopt kernel cache" in err


def _writer(path: str, wid: int, n: int) -> None:
    with Cache(path) as c:
        for i in range(n):
            c.put(entry(f"{wid:04d}{i:028d}", t=1e-3 + i * 1e-6))
            c.put(entry("shared".ljust(32, "0"), t=1e-3 + wid * 1e-6 + i * 1e-7), force=False)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "c.sqlite")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs: p.start()
    for p in procs: p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    with Cache(path) as c:
        keys = {e.kernel_key for e in c.entries()}
        assert len(keys) == 4 * 40 + 1
        assert c.get("shared".ljust(32, "0"), "cpu", "dev0").measured_s == pytest.approx(1e-3)  # the best of all writers


def test_cli_ls_show_export_import_prune(tmp_path, capsys):
    p = str(tmp_path / "c.sqlite")
    with Cache(p) as c:
        c.put(entry("ab" * 16))
    assert main(["cache", "ls", "--cache", p]) == 0
    assert "abababababab" in capsys.readouterr().out
    assert main(["cache", "show", "abab", "--cache", p]) == 0
    assert "method hand" in capsys.readouterr().out
    assert main(["cache", "show", "zz", "--cache", p]) == 2
    out = tmp_path / "rows.jsonl"
    assert main(["cache", "export", str(out), "--cache", p]) == 0
    assert json.loads(out.read_text().splitlines()[0])["kernel_key"] == "ab" * 16
    p2 = str(tmp_path / "d.sqlite")
    assert main(["cache", "import", str(out), "--cache", p2]) == 0
    assert main(["cache", "prune", "--other-versions", "--cache", p2]) == 0
    assert "deleted 0 rows" in capsys.readouterr().out


def test_device_id_names_cpu_architecture():
    assert device_id("cpu") and device_id("cuda") == "cuda"


def test_older_file_without_note_column_is_upgraded(tmp_path):
    p = tmp_path / "c.sqlite"
    with Cache(p) as c:
        c.put(entry("a" * 32))
        c.db.execute("ALTER TABLE results DROP COLUMN note")
    with Cache(p, readonly=True) as c:
        assert c.get("a" * 32, "cpu", "dev0").note is None
    with Cache(p) as c:
        c.put(entry("b" * 32, note="solver failed"))
        assert c.get("b" * 32, "cpu", "dev0").note == "solver failed" and len(c) == 2

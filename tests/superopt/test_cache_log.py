"""The candidate log (every schedule a tuning run timed), `cache show` of it, the refusal of
an empty or ambiguous key, and `cache prune` with --dry-run / --yes."""
from __future__ import annotations

import json
import sqlite3

import pytest

from superopt.cache import Cache, Candidate, Entry
from superopt.cli import main
from superopt.ir.schedule import Level, Schedule, Split

A = Schedule(((Split(Level.LOOP, 8), Split(Level.UPCAST, 4)),))
B = Schedule(((Split(Level.LOOP, 4), Split(Level.UPCAST, 8)),))


def entry(key: str, t: float = 1e-3, verified: bool = True) -> Entry:
    return Entry(kernel_key=key, backend="cpu", device="dev0", schedule=A.to_json(), method="z3",
                 verified=verified, measured_s=t, baseline_s=2e-3)


def test_log_candidates_roundtrip_fastest_first(tmp_path):
    with Cache(tmp_path / "c.sqlite") as c:
        n = c.log_candidates("k" * 32, "cpu", [
            Candidate(schedule=A.to_json(), method="hand", verified=True, time_s=3e-3, samples=15),
            {"schedule": B, "method": "z3", "verified": True, "time_s": 1e-3, "samples": 15},
            Candidate(schedule=B.to_json(), method="beam", verified=False, note="wrong result at [0, 3]"),
        ], device="dev0")
        assert n == 3
        got = c.candidates("k" * 32, "cpu", "dev0")
        assert [(x.method, x.time_s, x.verified) for x in got] == [("z3", 1e-3, True), ("hand", 3e-3, True), ("beam", None, False)]
        assert Schedule.from_json(got[0].schedule) == B and got[0].samples == 15 and got[0].created and got[0].tuner_version
        assert got[2].note == "wrong result at [0, 3]"
        assert c.candidates("k" * 32, "cuda") == [] and c.candidates("x" * 32) == []
        c.log_candidates("k" * 32, "cpu", [Candidate(A.to_json(), "hand", True, 2e-3)], device="dev0")
        assert len(c.candidates("k" * 32)) == 4     # the log grows run after run


@pytest.mark.parametrize("bad,err", [
    ({"schedule": '{"version": 99}', "method": "z3", "verified": True}, ValueError),
    ({"schedule": A.to_json(), "method": "z3", "verified": True, "time_s": -1.0}, ValueError),
    ({"schedule": A.to_json(), "method": "z3", "verified": True, "bogus": 1}, TypeError),
    ("not a candidate", TypeError),
])
def test_log_candidates_refuses_bad_rows_and_writes_none(tmp_path, bad, err):
    with Cache(tmp_path / "c.sqlite") as c:
        good = Candidate(A.to_json(), "hand", True, 1e-3)
        with pytest.raises(err):
            c.log_candidates("k" * 32, "cpu", [good, bad])
        assert c.candidates("k" * 32) == []


def test_old_cache_without_log_reads_empty(tmp_path):
    p = tmp_path / "old.sqlite"
    with Cache(p) as c: c.put(entry("a" * 32))
    db = sqlite3.connect(p)
    db.execute("DROP TABLE candidates")
    db.commit(); db.close()  # noqa: E702
    with Cache(p, readonly=True) as c:
        assert c.candidates("a" * 32) == []
    with Cache(p) as c:      # a writable open adds the table back
        assert c.log_candidates("a" * 32, "cpu", [Candidate(A.to_json(), "z3", True, 1e-3)]) == 1


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cache_show_prints_the_log_and_json(tmp_path, capsys):
    p = str(tmp_path / "c.sqlite")
    with Cache(p) as c:
        c.put(entry("ab" * 16))
        c.log_candidates("ab" * 16, "cpu", [Candidate(A.to_json(), "z3", True, 1e-3, 9),
                                             Candidate(B.to_json(), "hand", True, 2.5e-3, 9)], device="dev0")
    rc, out, _ = _run(capsys, "cache", "show", "abab", "--cache", p)
    assert rc == 0 and "candidate log: 2 timed schedules" in out and "2,500.0 us" in out
    rc, out, _ = _run(capsys, "cache", "show", "abab", "--json", "--cache", p)
    d = json.loads(out)
    (e,) = d["entries"]
    assert e["kernel_key"] == "ab" * 16 and e["speedup"] == pytest.approx(2.0)
    assert [x["time_s"] for x in e["candidates"]] == [1e-3, 2.5e-3] and e["candidates"][1]["samples"] == 9
    assert Schedule.from_dict(e["candidates"][0]["schedule"]) == A
    rc, out, _ = _run(capsys, "cache", "ls", "--json", "--cache", p)
    assert rc == 0 and [x["kernel_key"] for x in json.loads(out)["entries"]] == ["ab" * 16]


def test_cache_show_refuses_empty_and_ambiguous_keys(tmp_path, capsys):
    p = str(tmp_path / "c.sqlite")
    with Cache(p) as c:
        c.put(entry("ab" * 16))
        c.put(entry("ac" * 16))
    for key in ("", "  "):
        rc, out, err = _run(capsys, "cache", "show", key, "--cache", p)
        assert rc == 2 and out == "" and "give a kernel key" in err and len(err.splitlines()) == 1
    rc, _, err = _run(capsys, "cache", "show", "a", "--cache", p)
    assert rc == 2 and "matches 2 kernels" in err
    rc, out, _ = _run(capsys, "cache", "show", "a", "--all", "--cache", p)
    assert rc == 0 and out.count("key ") == 2
    rc, out, _ = _run(capsys, "cache", "show", "", "--json", "--cache", p)
    assert rc == 2 and json.loads(out)["kind"] == "input"
    rc, out, err = _run(capsys, "cache", "ls", "--backend", "bogus", "--cache", p)
    assert rc == 2 and "invalid choice" in err


def test_prune_dry_run_counts_and_yes_guards_deleting_everything(tmp_path, capsys):
    p = str(tmp_path / "c.sqlite")
    with Cache(p) as c:
        c.put(entry("a" * 32))
        c.put(entry("b" * 32))
        c.put(entry("c" * 32, verified=False))
        c.log_candidates("a" * 32, "cpu", [Candidate(A.to_json(), "z3", True, 1e-3)])
        c.db.execute("UPDATE candidates SET created='2000-01-01T00:00:00+00:00'")
        c.db.execute("UPDATE results SET created='2000-01-01T00:00:00+00:00'")
    rc, out, _ = _run(capsys, "cache", "prune", "--older-than", "1", "--dry-run", "--cache", p)
    assert rc == 0 and "would delete 3 of 3 rows and 1 candidate-log entries" in out
    with Cache(p) as c: assert len(c) == 3           # dry run: untouched
    rc, out, err = _run(capsys, "cache", "prune", "--older-than", "1", "--cache", p)
    assert rc == 2 and "--yes" in err
    with Cache(p) as c: assert len(c) == 3
    rc, out, _ = _run(capsys, "cache", "prune", "--cache", p)    # only the unverified row: no --yes needed
    assert rc == 0 and "deleted 1 rows" in out
    rc, out, _ = _run(capsys, "cache", "prune", "--older-than", "1", "--yes", "--cache", p)
    assert rc == 0 and "deleted 2 rows and 1 candidate-log entries" in out
    with Cache(p) as c: assert len(c) == 0 and c.candidates("a" * 32) == []

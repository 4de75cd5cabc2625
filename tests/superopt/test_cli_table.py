"""The README's table of every command (issue 27, "Must show"): each command run with --json
on its cheapest valid form prints one JSON object that parses (calibrate: its JSON error, a
valid run takes seconds); commands another change is
rewriting (tune, run, tune-cache, bench, fidelity) are checked through --help and their JSON
error path; the table names every command and cache action of the parser, and its --json
column matches the parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from superopt import cli
from superopt.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
SCRIPT = ("import numpy as np\nfrom superopt import Tensor\n"
          "(Tensor(np.ones((8, 8), np.float32)).exp() + 1).sum().numpy()\n")


def _json(capsys, argv: list[str], status: int = 0) -> dict:
    assert main(argv) == status, argv
    out = capsys.readouterr().out
    d = json.loads(out)
    assert isinstance(d, dict), argv
    if status: assert set(d) >= {"error", "kind", "command"}
    return d


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    acts = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(acts[0].choices) if acts else {}


def _table() -> dict[str, str]:
    """command (after 'superopt ', up to its first argument) -> its --json cell."""
    text = README.read_text()
    sec = text[text.index("## Every command"):]
    sec = sec[:sec.index("\n## ", 3)]
    rows = {}
    for line in sec.splitlines():
        if not line.startswith("| `superopt "): continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        words = cells[0].strip("`").split()[1:]
        name = " ".join(w for w in words[:2] if w.replace("-", "").isalpha() and w.islower())
        rows[name if words[0] == "cache" else words[0]] = cells[2]
    return rows


def test_the_table_lists_every_command_and_its_json_flag():
    parser = cli._parser(cli._available())
    rows = _table()
    names = []
    for name, sp in _subcommands(parser).items():
        actions = _subcommands(sp)
        for full, p in ([(f"{name} {a}", q) for a, q in actions.items()] if actions else [(name, sp)]):
            names.append(full)
            assert full in rows, f"README table lacks {full}"
            assert rows[full].startswith("yes") == ("--json" in p._option_string_actions), full
    assert sorted(rows) == sorted(names)


def test_every_command_answers_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("superopt ")
    assert _json(capsys, ["new", "--json"], 2)["kind"] == "usage"             # no KIND: a JSON usage error
    made = _json(capsys, ["new", "matmul", "M=16", "N=8", "K=4", "-o", "k.json", "--json"])
    assert made["path"] == "k.json" and made["kind"] == "gemm" and made["flops"] == 2 * 16 * 8 * 4
    assert _json(capsys, ["show", "k.json", "--json"])["flops"] == 2 * 16 * 8 * 4
    # calibrate's cheapest valid run takes about 10 s here (its JSON: tests/superopt/test_calibrate.py)
    assert "--reps" in _json(capsys, ["calibrate", "--backend", "cpu", "--reps", "1", "--json"], 2)["error"]
    Path("s.py").write_text(SCRIPT)
    cap = _json(capsys, ["capture", "s.py", "-o", "cap", "--json"])
    assert cap["distinct"] >= 1 and Path(cap["manifest"]).exists()
    ran = _json(capsys, ["script", "s.py", "--json", "--cache", str(tmp_path / "s.sqlite")])
    assert ran["script_status"] == 0 and ran["kernels"]["distinct"] >= 1 and ran["kernels"]["hits"] == 0
    plan = _json(capsys, ["plan", "s.py", "--json", "--timeout", "5"])
    assert plan["graphs"][0]["plans"]["planned"]["kernels"] >= 1
    _cache_commands(capsys, tmp_path)


def _cache_commands(capsys, tmp_path: Path) -> None:
    from superopt.cache import Cache, Entry
    from superopt.io import load_kernel
    db = str(tmp_path / "c.sqlite")
    assert _json(capsys, ["cache", "ls", "--cache", db, "--json"], 2)["command"] == "cache"   # none there yet
    k = load_kernel("k.json")
    with Cache(db) as c:
        c.put(Entry(kernel_key=k.key, backend="cpu", device="dev0", method="hand", verified=True, measured_s=1e-6,
                    schedule='{"version": 1, "splits": [[["loop", 16]], [["loop", 8]], [["loop", 4]]]}'))
    assert [e["kernel_key"] for e in _json(capsys, ["cache", "ls", "--cache", db, "--json"])["entries"]] == [k.key]
    assert _json(capsys, ["cache", "show", k.key[:6], "--cache", db, "--json"])["entries"][0]["kernel_key"] == k.key
    assert _json(capsys, ["cache", "export", "x.jsonl", "--cache", db, "--json"]) == {"rows": 1, "file": "x.jsonl"}
    db2 = str(tmp_path / "c2.sqlite")
    assert _json(capsys, ["cache", "import", "x.jsonl", "--cache", db2, "--json"])["written"] == 1
    with Cache(db2) as c:   # an unverified row: what prune removes by default
        c.put(Entry(kernel_key="0" * 32, backend="cpu", device="dev0", method="hand", verified=False, measured_s=None,
                    schedule='{"version": 1, "splits": [[["loop", 16]], [["loop", 8]], [["loop", 4]]]}'))
    dry = _json(capsys, ["cache", "prune", "--cache", db2, "--dry-run", "--json"])
    assert dry["dry_run"] and dry["would_delete"] == 1 and dry["total"] == 2 and dry["deleted"] == 0
    done = _json(capsys, ["cache", "prune", "--cache", db2, "--json"])
    assert done["deleted"] == 1 and not done["dry_run"]


@pytest.mark.parametrize("command", ["tune", "run", "tune-cache", "bench", "fidelity"])
def test_commands_in_flux_help_and_json_errors(tmp_path, capsys, command):
    assert main([command, "--help"]) == 0
    assert f"superopt {command}" in capsys.readouterr().out
    d = _json(capsys, [command, str(tmp_path / "missing.json"), "--json"], 2)
    assert d["kind"] in ("input", "usage") and d["error"]


def test_bench_json_is_one_object_with_the_summary(tmp_path, capsys):
    d = _json(capsys, ["bench", "--suite", "membound", "--small", "--methods", "hand", "--budget", "1", "--repeat", "3",
                       "--no-plots", "--out", str(tmp_path / "b"), "--json"])
    assert d["summary"]["methods"]["hand"]["unverified"] == 0 and d["summary"]["kernels"] >= 1
    assert all(Path(f).exists() for f in d["files"])

"""Cost of the kernel cache's integrity check on open, on caches of many rows.

Fills a cache with N realistic rows (a real kernel's JSON and a schedule in every row, as
``superopt tune`` writes them), then times ``PRAGMA quick_check`` alone and a whole
``Cache(path)`` open (which runs the check), each the median of a few runs::

    python3 bench/cache_quickcheck.py --rows 10000 --out bench/results/cache-quickcheck.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from superopt.cache import _COLS, Cache, Entry, now, tuner_version
from superopt.ir.schedule import Schedule
from superopt.kernels import Workload


def fill(path: Path, rows: int) -> None:
    """``rows`` rows in one transaction (one put per row would time the writer, not the check)."""
    k = Workload.make("matmul").kernel
    sched, kjson, t = Schedule.naive(k).to_json(), json.dumps(k.to_dict()), now()
    with Cache(path) as c:
        c.db.execute("BEGIN IMMEDIATE")
        for i in range(rows):
            d = asdict(Entry(f"{i:016x}{k.key[:48]}", "cpu", "bench:x86", sched, "hand", True, 1e-3, 1e-3, 2e-3,
                             "naive", f"k{i}", kjson, tuner_version=tuner_version(), created=t))
            d["verified"] = 1
            c.db.execute(f"INSERT INTO results ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})", [d[x] for x in _COLS])
        c.db.execute("COMMIT")


def median_ms(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)  # noqa: E702
    return statistics.median(ts)


def measure(rows: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.db"
        fill(path, rows)
        db = sqlite3.connect(path)
        full = median_ms(lambda: db.execute("PRAGMA quick_check").fetchall(), reps)
        db.close()
        opened = median_ms(lambda: Cache(path).close(), reps)
        return {"rows": rows, "file_bytes": os.path.getsize(path), "quick_check_full_ms": round(full, 2),
                "cache_open_ms": round(opened, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    res = {"command": "python3 bench/cache_quickcheck.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()},
           "results": [measure(n, a.reps) for n in a.rows]}
    print(json.dumps(res, indent=1))
    if a.out: a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

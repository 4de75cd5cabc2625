"""The kernel cache: tuned schedules in SQLite (WAL), shared by the tuner and the runtime.

A row of ``results`` is keyed by (kernel content key, backend, device, schedule-format version) and holds
the schedule JSON, measured/modeled/baseline times, verification status, method, tuner
version and date. Writers take SQLite's write lock (``BEGIN IMMEDIATE``) with a long busy
timeout, so several processes can tune into one cache at once without losing rows; WAL
keeps readers (the runtime) unblocked and survives a writer killed mid-transaction.

``candidates`` is the log of every schedule the tuner timed (not only the winner): schedule,
method, time, samples, verification and date, written by ``Cache.log_candidates`` and shown
by ``superopt cache show KEY``, so a stored result can be traced to what it beat.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from superopt import debug
from superopt.ir.schedule import SCHEDULE_VERSION, Schedule

CACHE_FORMAT = "superopt.kernel-cache"
CACHE_VERSION = 1
EXPORT_FORMAT = "superopt.kernel-cache.row"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    kernel_key TEXT NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, schedule_version INTEGER NOT NULL,
    schedule TEXT NOT NULL, measured_s REAL, modeled_s REAL, baseline_s REAL, baseline_method TEXT,
    verified INTEGER NOT NULL, method TEXT NOT NULL, tuner_version TEXT NOT NULL, created TEXT NOT NULL,
    name TEXT, kernel TEXT, tunes INTEGER NOT NULL DEFAULT 1, note TEXT,
    PRIMARY KEY (kernel_key, backend, device, schedule_version));
CREATE TABLE IF NOT EXISTS claims (
    kernel_key TEXT NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    since REAL NOT NULL, PRIMARY KEY (kernel_key, backend, device));
CREATE TABLE IF NOT EXISTS failures (
    kernel_key TEXT NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, tuner_version TEXT NOT NULL,
    error TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (kernel_key, backend, device, tuner_version));
CREATE TABLE IF NOT EXISTS candidates (
    kernel_key TEXT NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, schedule TEXT NOT NULL, method TEXT NOT NULL,
    time_s REAL, samples INTEGER, verified INTEGER NOT NULL, note TEXT, tuner_version TEXT NOT NULL, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS candidates_key ON candidates (kernel_key, backend, device);
"""


_ADDED_COLUMNS = ("note",)


class CacheError(Exception):
    """The cache file is unusable (corrupt, foreign, newer format); the message is one line."""


def _busy_timeout() -> float:
    """How long to wait for another process's write lock (``SUPEROPT_CACHE_BUSY_TIMEOUT`` seconds overrides)."""
    try:
        return max(0.0, float(os.environ.get("SUPEROPT_CACHE_BUSY_TIMEOUT", _BUSY_TIMEOUT_S)))
    except ValueError:
        return _BUSY_TIMEOUT_S


def tuner_version() -> str:
    import superopt
    return superopt.__version__


def default_path() -> Path:
    """``<user cache dir>/superopt/kernels.sqlite`` (``SUPEROPT_CACHE_DIR`` overrides the dir)."""
    from superopt.search.machine import calibration_dir
    return calibration_dir() / "kernels.sqlite"


def device_id(backend: str) -> str:
    """What a tuned schedule is valid for. CPU: architecture and model name (a schedule tuned
    on one CPU model is not assumed best on another); other backends name their machine."""
    if backend != "cpu": return backend
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip(); break  # noqa: E702
    except OSError:
        pass
    return f"{platform.machine()}:{' '.join(model.split())}" if model else platform.machine()


def device_of(b) -> str:
    """``device_id`` for a live backend: GPUs are named by model and architecture."""
    if b.name == "cpu": return device_id("cpu")
    info = getattr(b, "device", None)
    if isinstance(info, dict) and info.get("name"): return f"{info['name']}:{info.get('arch', '')}"
    return f"{b.name}:{b.machine.name}"


def now() -> str: return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Entry:
    """One tuned kernel. Times in seconds; ``schedule`` is the Schedule's JSON."""
    kernel_key: str
    backend: str
    device: str
    schedule: str
    method: str                        # who produced the schedule: "hand", "z3", "beam", ...
    verified: bool
    measured_s: float | None = None
    modeled_s: float | None = None
    baseline_s: float | None = None    # measured time of the baseline the tuner compared against
    baseline_method: str | None = None
    name: str | None = None
    kernel: str | None = None          # the kernel's JSON, so `cache show`/export are self-contained
    schedule_version: int = SCHEDULE_VERSION
    tuner_version: str = ""
    created: str = ""
    tunes: int = 1                     # how many tuning runs wrote this row (resume tests read it)
    note: str | None = None            # the tuner's remark (e.g. why the solver's schedule was not kept)

    def schedule_obj(self) -> Schedule: return Schedule.from_json(self.schedule)

    @property
    def speedup(self) -> float | None:
        if self.baseline_s and self.measured_s: return self.baseline_s / self.measured_s
        return None


_COLS = [f.name for f in fields(Entry)]


@dataclass(frozen=True)
class Candidate:
    """One timed schedule of a tuning run. ``time_s`` is None when it was not timed (failed to
    compile or verify: ``note`` says why); ``samples`` is how many timed runs the time is the median of."""
    schedule: str                      # the Schedule's JSON
    method: str                        # who proposed it: "hand", "z3", "beam", ...
    verified: bool
    time_s: float | None = None
    samples: int | None = None
    note: str | None = None
    kernel_key: str = ""
    backend: str = ""
    device: str = ""
    tuner_version: str = ""
    created: str = ""


def _as_candidate(c) -> Candidate:
    """A Candidate, a dict of its fields, or one with a Schedule object in ``schedule``."""
    if isinstance(c, dict): c = Candidate(**c)
    if not isinstance(c, Candidate): raise TypeError(f"not a Candidate: {type(c).__name__}")
    sched = c.schedule if isinstance(c.schedule, str) else c.schedule.to_json()
    Schedule.from_json(sched)   # never log a schedule that does not parse
    if c.time_s is not None and not (isinstance(c.time_s, (int, float)) and c.time_s > 0):
        raise ValueError(f"candidate time {c.time_s!r} is not a positive number of seconds")
    from dataclasses import replace
    return replace(c, schedule=sched, verified=bool(c.verified))


_STR_COLS = ("kernel_key", "backend", "device", "schedule", "method", "tuner_version", "created")
_OPT_STR_COLS = ("baseline_method", "name", "kernel", "note")
_OPT_NUM_COLS = ("measured_s", "modeled_s", "baseline_s")


def _row_entry(row: sqlite3.Row) -> Entry:
    """A stored row as an Entry; a row of garbage types (written by something else) is a CacheError."""
    d = {k: row[k] for k in row.keys() if k in _COLS}
    key = d.get("kernel_key")
    bad = [c for c in _STR_COLS if c in d and not isinstance(d[c], str)]
    bad += [c for c in _OPT_STR_COLS if d.get(c) is not None and not isinstance(d[c], str)]
    bad += [c for c in _OPT_NUM_COLS if d.get(c) is not None and (isinstance(d[c], bool) or not isinstance(d[c], (int, float)))]
    bad += [c for c in ("verified", "schedule_version", "tunes") if c in d and not isinstance(d[c], int)]
    if bad: raise CacheError(f"cache row {str(key)[:40]!r} has bad values in {bad}; the cache was written by something else "
                             "(`superopt cache prune` cannot fix it: move the file away)")
    d["verified"] = bool(d["verified"])
    return Entry(**d)


def _check_file(path: Path) -> None:
    """Refuse a non-SQLite file before sqlite3 gets to rewrite or misread it."""
    if not path.exists() or path.stat().st_size == 0: return
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise CacheError(f"{path} is not a superopt kernel cache (not an SQLite database); move it away or pass --cache")


class Cache:
    """``Cache(path)`` opens (creating if needed) a kernel cache. Use as a context manager
    or call ``close()``. Every method raises ``CacheError`` for a damaged file."""

    def __init__(self, path: str | os.PathLike | None = None, readonly: bool = False):
        self.path = Path(path) if path is not None else default_path()
        if self.path.is_dir(): raise CacheError(f"{self.path} is a directory, not a cache file")
        _check_file(self.path)
        if readonly and not self.path.exists(): raise CacheError(f"{self.path}: no kernel cache there yet (nothing tuned)")
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(f"{self.path}: cannot create the cache directory ({e.strerror or e})") from None
        try:
            target = self.path.resolve().as_uri() + "?mode=ro" if readonly else str(self.path)
            self.db = sqlite3.connect(target, uri=readonly, timeout=_busy_timeout(), isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if self.path.exists() and self.path.stat().st_size > 0: self._integrity()
            if not readonly: self._init()
            self._check_format()
        except sqlite3.DatabaseError as e:
            raise CacheError(self._describe(e)) from None

    def _describe(self, e: sqlite3.DatabaseError) -> str:
        """One line telling a read-only, a locked and a damaged cache apart (only the last one may be deleted)."""
        msg = str(e)
        low = msg.lower()
        if "readonly" in low or "read-only" in low or "read only" in low:
            return f"{self.path} is read-only ({msg}); the cache itself is not damaged: fix its permissions or pass --cache"
        if "locked" in low or "busy" in low:
            return f"{self.path} is locked by another process ({msg}); the cache is not damaged: retry when it finishes"
        if "unable to open" in low:
            return f"{self.path}: cannot open the cache file ({msg}); check the path and its directory's permissions"
        if isinstance(e, sqlite3.OperationalError) and ("no such" in low or "has no column" in low):
            return f"{self.path} has an unexpected schema ({msg}); not a superopt kernel cache of this version"
        return f"{self.path} is corrupt or not a superopt kernel cache ({msg}); move it away (or delete it) and retune"

    def _integrity(self) -> None:
        rows = self.db.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            first = rows[0][0] if rows else "no result"
            raise CacheError(f"{self.path} is corrupt (integrity check: {str(first).splitlines()[0][:200]}); "
                             "move it away (or delete it) and retune")

    # ---- setup ----------------------------------------------------------------
    def _init(self) -> None:
        for attempt in range(50):  # journal-mode change needs a moment without other writers
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 49: raise
                time.sleep(0.05)
        self.db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise CacheError(f"{self.path} is an SQLite database of another program, not a superopt kernel cache")
        with self._write():
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(stmt)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', ?)",
                            (CACHE_FORMAT, str(CACHE_VERSION)))
            have = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
            for col in _ADDED_COLUMNS:  # columns added after a cache file was first written
                if col not in have: self.db.execute(f"ALTER TABLE results ADD COLUMN {col} TEXT")

    def _check_format(self) -> None:
        try:
            meta = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        except sqlite3.OperationalError:
            raise CacheError(f"{self.path} is an SQLite database of another program, not a superopt kernel cache") from None
        if meta.get("format") != CACHE_FORMAT:
            raise CacheError(f"{self.path} is an SQLite database of another program, not a superopt kernel cache")
        if meta.get("version") != str(CACHE_VERSION):
            raise CacheError(f"{self.path} has cache format version {meta.get('version')}; this superopt reads {CACHE_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction holding SQLite's write lock from the start (no upgrade deadlocks)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise CacheError(self._describe(e)) from None
        try:
            yield
        except sqlite3.DatabaseError as e:
            self._rollback()
            raise CacheError(self._describe(e)) from None
        except BaseException:
            self._rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            self._rollback()
            raise CacheError(self._describe(e)) from None

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass

    def _q(self, sql: str, args=()) -> list[sqlite3.Row]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise CacheError(self._describe(e)) from None

    def close(self) -> None: self.db.close()
    def __enter__(self) -> "Cache": return self
    def __exit__(self, *exc) -> None: self.close()

    # ---- reads ----------------------------------------------------------------
    def get(self, kernel_key: str, backend: str, device: str | None = None) -> Entry | None:
        """The verified entry for this kernel on this backend/device, if any."""
        rows = self._q("SELECT * FROM results WHERE kernel_key=? AND backend=? AND device=? AND schedule_version=? "
                       "AND verified=1", (kernel_key, backend, device or device_id(backend), SCHEDULE_VERSION))
        debug.log(1, lambda: f"cache {'hit' if rows else 'miss'}: {kernel_key[:12]} on {backend} in {self.path}")
        return _row_entry(rows[0]) if rows else None

    def entries(self, backend: str | None = None, device: str | None = None, prefix: str = "") -> list[Entry]:
        sql, args = "SELECT * FROM results WHERE kernel_key LIKE ?", [prefix + "%"]
        if backend: sql, args = sql + " AND backend=?", args + [backend]
        if device: sql, args = sql + " AND device=?", args + [device]
        return [_row_entry(r) for r in self._q(sql + " ORDER BY created, kernel_key", args)]

    def failure(self, kernel_key: str, backend: str, device: str | None = None) -> str | None:
        rows = self._q("SELECT error FROM failures WHERE kernel_key=? AND backend=? AND device=? AND tuner_version=?",
                       (kernel_key, backend, device or device_id(backend), tuner_version()))
        return rows[0][0] if rows else None

    def __len__(self) -> int: return int(self._q("SELECT COUNT(*) FROM results")[0][0])

    # ---- writes ---------------------------------------------------------------
    def put(self, e: Entry, force: bool = False) -> bool:
        """Store ``e`` unless a better verified row exists (``force`` overrides).
        Returns whether the row was written. Atomic against concurrent writers."""
        e = _stamped(e)
        Schedule.from_json(e.schedule)  # never store a schedule that does not parse
        try:
            with self._write():
                old = self.db.execute("SELECT verified, measured_s, tunes FROM results WHERE kernel_key=? AND backend=? "
                                      "AND device=? AND schedule_version=?",
                                      (e.kernel_key, e.backend, e.device, e.schedule_version)).fetchone()
                if old is not None and not force and not _better(e, old): return False
                d = asdict(e)
                d["verified"] = int(e.verified)
                d["tunes"] = (old["tunes"] + 1) if old is not None else e.tunes
                self.db.execute(f"INSERT OR REPLACE INTO results ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})",
                                [d[c] for c in _COLS])
                self.db.execute("DELETE FROM failures WHERE kernel_key=? AND backend=? AND device=?",
                                (e.kernel_key, e.backend, e.device))
        except sqlite3.DatabaseError as err:
            raise CacheError(self._describe(err)) from None
        return True

    def put_failure(self, kernel_key: str, backend: str, device: str | None, error: str) -> None:
        """Remember that tuning this kernel failed with this tuner version (not retried unless asked)."""
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                            (kernel_key, backend, device or device_id(backend), tuner_version(), error[:2000], now()))

    def log_candidates(self, kernel_key: str, backend: str, candidates, device: str | None = None) -> int:
        """Append every timed candidate of one tuning run to the log (one transaction);
        ``candidates``: Candidate objects or dicts of their fields (``schedule`` may be a
        Schedule). Returns how many were logged. The log only grows; ``prune`` trims it."""
        rows = [_as_candidate(c) for c in candidates]
        dev, ver, t = device or device_id(backend), tuner_version(), now()
        with self._write():
            self.db.executemany(
                "INSERT INTO candidates (kernel_key, backend, device, schedule, method, time_s, samples, verified, note, "
                "tuner_version, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(kernel_key, backend, dev, c.schedule, c.method, c.time_s, c.samples, int(c.verified), c.note, ver, t)
                 for c in rows])
        return len(rows)

    def candidates(self, kernel_key: str, backend: str | None = None, device: str | None = None) -> list[Candidate]:
        """The logged candidates of one kernel, oldest run first and fastest first within a run
        (an older cache file without the log reads as empty)."""
        sql, args = "SELECT * FROM candidates WHERE kernel_key=?", [kernel_key]
        if backend: sql, args = sql + " AND backend=?", args + [backend]
        if device: sql, args = sql + " AND device=?", args + [device]
        try:
            rows = self.db.execute(sql + " ORDER BY created, time_s IS NULL, time_s", args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e): return []
            raise CacheError(self._describe(e)) from None
        except sqlite3.DatabaseError as e:
            raise CacheError(self._describe(e)) from None
        return [Candidate(**{**dict(r), "verified": bool(r["verified"])}) for r in rows]

    def clear_failures(self) -> int:
        with self._write():
            return self.db.execute("DELETE FROM failures").rowcount

    # ---- claims: which batch is tuning a kernel right now ---------------------------------
    def claim(self, kernel_key: str, backend: str, device: str, ttl_s: float) -> bool:
        """Mark this kernel as being tuned by this process. False if another live process
        holds a claim younger than ``ttl_s`` (a dead holder's or an expired claim is taken over),
        so concurrent batches on one cache never tune the same kernel twice."""
        return self.take(kernel_key, backend, device, ttl_s, check_done=False) == "ok"

    def take(self, kernel_key: str, backend: str, device: str, ttl_s: float, check_done: bool = True):
        """Claim a kernel for tuning in one write transaction: the stored verified Entry if one
        is already there (``check_done``), "busy" if another live process holds a young claim,
        else "ok" (claimed). No window between looking for a result and claiming."""
        host, pid, t = socket.gethostname(), os.getpid(), time.time()
        with self._write():
            if check_done:
                done = self.db.execute("SELECT * FROM results WHERE kernel_key=? AND backend=? AND device=? AND "
                                       "schedule_version=? AND verified=1",
                                       (kernel_key, backend, device, SCHEDULE_VERSION)).fetchone()
                if done is not None: return _row_entry(done)
            r = self.db.execute("SELECT host, pid, since FROM claims WHERE kernel_key=? AND backend=? AND device=?",
                                (kernel_key, backend, device)).fetchone()
            if r is not None and (r["host"], r["pid"]) != (host, pid) and t - r["since"] < ttl_s \
                    and _alive(r["host"], r["pid"]):
                return "busy"
            self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)", (kernel_key, backend, device, host, pid, t))
        return "ok"

    def release(self, kernel_key: str, backend: str, device: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM claims WHERE kernel_key=? AND backend=? AND device=? AND host=? AND pid=?",
                            (kernel_key, backend, device, socket.gethostname(), os.getpid()))

    def prune(self, older_than_days: float | None = None, other_versions: bool = False,
              unverified: bool = True, backend: str | None = None, dry_run: bool = False) -> int:
        """Delete rows: unverified ones, rows of other schedule-format/tuner versions,
        rows older than a number of days; optionally only for one backend. Returns the count
        (with ``dry_run``, the count that would go; nothing is deleted)."""
        conds: list[str] = []
        args: list = []
        if unverified: conds.append("verified=0")
        if other_versions:
            conds.append("(schedule_version<>? OR tuner_version<>?)")
            args += [SCHEDULE_VERSION, tuner_version()]
        if older_than_days is not None:
            conds.append("created<?")
            cutoff = datetime.fromtimestamp(time.time() - older_than_days * 86400, timezone.utc)
            args.append(cutoff.replace(microsecond=0).isoformat())
        if not conds: return 0
        where = f"WHERE ({' OR '.join(conds)})"
        if backend: where, args = where + " AND backend=?", args + [backend]
        if dry_run: return int(self._q(f"SELECT COUNT(*) FROM results {where}", args)[0][0])
        with self._write():
            n = self.db.execute(f"DELETE FROM results {where}", args).rowcount
        return n

    def prune_candidates(self, older_than_days: float, backend: str | None = None, dry_run: bool = False) -> int:
        """Delete (or with ``dry_run`` count) candidate-log entries older than a number of days."""
        cutoff = datetime.fromtimestamp(time.time() - older_than_days * 86400, timezone.utc).replace(microsecond=0).isoformat()
        where, args = "WHERE created<?", [cutoff]
        if backend: where, args = where + " AND backend=?", args + [backend]
        if dry_run:
            try:
                return int(self.db.execute(f"SELECT COUNT(*) FROM candidates {where}", args).fetchone()[0])
            except sqlite3.OperationalError:
                return 0   # an older read-only file without the log
        with self._write():
            return self.db.execute(f"DELETE FROM candidates {where}", args).rowcount

    # ---- JSON lines -----------------------------------------------------------
    def export_jsonl(self, out: IO[str], backend: str | None = None) -> int:
        n = 0
        for e in self.entries(backend=backend):
            out.write(json.dumps({"format": EXPORT_FORMAT, **asdict(e)}, sort_keys=True) + "\n")
            n += 1
        return n

    def import_jsonl(self, src: IO[str], force: bool = False) -> tuple[int, int]:
        """Read rows written by ``export_jsonl``; returns (written, kept existing)."""
        written = kept = 0
        for lineno, line in enumerate(src, 1):
            if not line.strip(): continue
            e = _entry_from_json(line, lineno)
            if self.put(e, force=force): written += 1
            else: kept += 1
        return written, kept


def _alive(host: str, pid: int) -> bool:
    """Whether a claim's holder still runs (other hosts cannot be asked: assumed alive until the claim expires)."""
    if host != socket.gethostname(): return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stamped(e: Entry) -> Entry:
    from dataclasses import replace
    return replace(e, tuner_version=e.tuner_version or tuner_version(), created=e.created or now())


def _better(new: Entry, old: sqlite3.Row) -> bool:
    """A verified row beats an unverified one; between verified rows the faster measurement wins."""
    if new.verified != bool(old["verified"]): return new.verified
    if new.measured_s is None: return False
    return old["measured_s"] is None or new.measured_s < old["measured_s"]


def _entry_from_json(line: str, lineno: int) -> Entry:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise CacheError(f"line {lineno}: not JSON ({e})") from None
    if not isinstance(d, dict) or d.pop("format", None) != EXPORT_FORMAT:
        raise CacheError(f"line {lineno}: not an exported superopt cache row")
    unknown = set(d) - set(_COLS)
    if unknown: raise CacheError(f"line {lineno}: unknown fields {sorted(unknown)}")
    try:
        e = Entry(**d)
        Schedule.from_json(e.schedule)
    except (TypeError, ValueError) as err:
        raise CacheError(f"line {lineno}: bad row ({err})") from None
    return e

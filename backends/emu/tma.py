"""Emulation of TMA copies and mbarriers (``Mbarriers``, ``MbarInit``, ``MbarArriveTx``,
``TmaLoad``, ``MbarWait``; ir/program.py) for the numpy executor.

mbarrier (PTX ISA "mbarrier"): per block and barrier, the arrivals a phase expects, the
arrivals still due, the transaction bytes still due (``arrive.expect_tx`` adds, a landed
copy subtracts) and the number of completed phases. A phase completes when no arrival
and no byte is due; the next begins with the expected arrivals again.

``TmaLoad``: each executing thread's box is read from global memory at issue (inputs are
read-only), elements outside the tensor as zeros, and held in flight; it lands (its
elements written to their swizzled shared addresses, its bytes completing on its
barrier) only when a wait needs it, so a wgmma reading a stage before its copy landed
reads the old contents, and counts its elements as races. ``MbarWait`` passes at once
when the barrier's current phase has the other parity; else it lands the barrier's
copies in issue order until the phase completes. A wait whose phase still expects
arrivals blocks (``wait_blocked``): inside ``Roles`` the executor runs the other warp roles
meanwhile; outside, or when every role waits, it is a hang (``EmuError``), as is a wait
with fewer bytes in flight than expected, or a barrier getting more bytes than it expects. A wait that passes while copies completing on its
barrier are still in flight counts one race a block (the waiter may read their
destinations before they land: a wrong parity), and so does arming a barrier again
(``arrive.expect_tx``) while its phase still waits for bytes (nobody waited for that
phase: its copies are landed first, as the hardware would by then).

Landed TMA data is visible to wgmma without a ``SharedFence`` (it is written through the
async proxy wgmma reads through): it enters the wgmma emulator's fenced view as well.

Counters: one ``tma`` instruction per copy, one ``mbarrier`` per warp executing a barrier
statement; global sectors of the box rows read (elements outside the tensor read
nothing); the shared writes as 16-byte chunks in box order, 8 to a 128-byte phase, through
the same bank-conflict counter as every shared access (a swizzled box of 128/64/32-byte
rows fills whole 128-byte lines a phase: no conflict).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir.interpret import cast_values
from ...ir.program import MbarArriveTx, MbarInit, Mbarriers, MbarWait, TensorMap, TmaLoad

from .counters import BANK_BYTES, bank_wavefronts, sectors
from .wgmma import async_view, swizzle

STMTS = (Mbarriers, MbarInit, MbarArriveTx, MbarWait, TmaLoad)
ALIGN = 128       # bytes: a TMA destination's alignment


def _error(msg: str) -> Exception:
    from .executor import EmuError  # the executor imports this module
    return EmuError(msg)


@dataclass
class _Bars:
    count: np.ndarray     # (B, n) arrivals a phase; 0: not initialized
    due: np.ndarray       # (B, n) arrivals still due in the current phase
    tx: np.ndarray        # (B, n) transaction bytes still due
    phase: np.ndarray     # (B, n) completed phases (the current phase's parity: phase % 2)


@dataclass
class _Copy:
    bar: str
    block: int            # row of the executed blocks
    index: int            # barrier
    name: str             # shared buffer
    dst: np.ndarray       # element indices written
    vals: np.ndarray      # values, same shape
    nbytes: int


@dataclass
class _State:
    bars: dict[str, _Bars] = field(default_factory=dict)
    flight: list[_Copy] = field(default_factory=list)


def state(run) -> _State:
    return run.__dict__.setdefault("_tma", _State())


def execute(run, s, mask: np.ndarray) -> None:
    """Run one TMA / mbarrier statement on the executor ``run`` (backends/emu/executor._Run)."""
    st = state(run)
    if isinstance(s, Mbarriers):
        if s.name in st.bars: raise _error(f"mbarriers {s.name} declared twice")
        z = np.zeros((run.shape[0], s.size), np.int64)
        st.bars[s.name] = _Bars(z.copy(), z.copy(), z.copy(), z.copy())
        return
    blocks, threads = np.nonzero(np.broadcast_to(mask, run.shape)[..., 0])
    if isinstance(s, MbarWait):
        _wait(run, st, s, mask, blocks, threads)
        return
    bars = _bars(st, s.bar)
    idx = _per_thread(run, s.index, mask, blocks, threads)
    if np.any((idx < 0) | (idx >= bars.count.shape[1])): raise _error(f"mbarrier {s.bar}[{idx.min()}..{idx.max()}] out of bounds")
    if isinstance(s, MbarInit):
        if len(np.unique(blocks)) != len(blocks): raise _error(f"mbarrier {s.bar} initialized by several threads of a block")
        if s.count < 1: raise _error(f"mbarrier {s.bar} initialized with {s.count} arrivals")
        if any(c.bar == s.bar and (c.block, c.index) in set(zip(blocks, idx)) for c in st.flight):
            raise _error(f"mbarrier {s.bar} initialized while copies complete on it")
        bars.count[blocks, idx] = bars.due[blocks, idx] = s.count
        bars.tx[blocks, idx] = bars.phase[blocks, idx] = 0
    elif isinstance(s, MbarArriveTx):
        for b, i in zip(blocks, idx):
            _initialized(bars, s.bar, b, i)
            if bars.due[b, i] == 0:  # armed again while its phase still waits for bytes: nobody waited for it
                run.c.races += 1
                _drain(run, st, bars, s.bar, b, i)
            bars.tx[b, i] += s.bytes
            bars.due[b, i] -= 1
            if bars.due[b, i] < 0: raise _error(f"mbarrier {s.bar}[{i}]: more arrivals than its phase expects")
            _maybe_complete(bars, b, i)
    elif isinstance(s, TmaLoad):
        _issue(run, st, bars, s, mask, blocks, threads, idx)
        run.c.count("tma", len(blocks))
        return
    run.c.count("mbarrier", run.active_warps(mask))


def _bars(st: _State, name: str) -> _Bars:
    if name not in st.bars: raise _error(f"mbarriers {name} used before their declaration")
    return st.bars[name]


def _initialized(bars: _Bars, name: str, b: int, i: int) -> None:
    if bars.count[b, i] == 0: raise _error(f"mbarrier {name}[{i}] used before mbarrier.init")


def _per_thread(run, expr, mask, blocks, threads) -> np.ndarray:
    """``expr`` at each active (block, thread), as int64."""
    v = np.broadcast_to(np.asarray(run.eval(expr, mask)), run.shape)
    return v[blocks, threads, 0].astype(np.int64)


def _maybe_complete(bars: _Bars, b: int, i: int) -> None:
    if bars.due[b, i] == 0 and bars.tx[b, i] == 0:
        bars.phase[b, i] += 1
        bars.due[b, i] = bars.count[b, i]


def box_elements(m: TensorMap, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global element index and in-tensor mask of every box element (box row-major,
    dimension 0 fastest) for each coordinate vector: arrays (n, box elements)."""
    grids = np.meshgrid(*[np.arange(b) for b in reversed(m.box)], indexing="ij")     # outermost first
    offs = [g.reshape(-1) for g in reversed(grids)]                                 # per dimension, innermost first
    at = [coords[:, d, None] + offs[d][None, :] for d in range(m.rank)]
    ok = np.ones(at[0].shape, bool)
    g = np.full(at[0].shape, m.offset, np.int64)
    for d in range(m.rank):
        ok &= (at[d] >= 0) & (at[d] < m.dims[d])
        g += at[d] * m.strides[d]
    return np.where(ok, g, 0), ok


def _issue(run, st: _State, bars: _Bars, s: TmaLoad, mask, blocks, threads, idx) -> None:
    m = s.map
    if s.name not in run.shared: raise _error(f"TMA copy into undeclared shared buffer {s.name}")
    if len(s.coords) != m.rank: raise _error(f"TMA copy gives {len(s.coords)} coordinates for a rank-{m.rank} map")
    if m.swizzle not in (0, 32, 64, 128): raise _error(f"TMA has no {m.swizzle}-byte swizzle")
    isz = run.p.inputs[m.input].dtype.itemsize
    if m.swizzle and m.box[0] * isz != m.swizzle:
        raise _error(f"TMA box rows of {m.box[0] * isz} bytes under a {m.swizzle}-byte swizzle (this emulator models equal ones)")
    if not blocks.size: return
    coords = np.stack([_per_thread(run, c, mask, blocks, threads) for c in s.coords], axis=1)
    dst = _per_thread(run, s.dst, mask, blocks, threads)
    size = run.shared_dt[s.name].itemsize
    start = run.shared_base[s.name] + dst * size
    repeat = 8 * m.swizzle if m.swizzle else ALIGN       # the swizzle pattern repeats every 8 rows
    if np.any(start % max(ALIGN, repeat)):
        raise _error(f"TMA destination {s.name}[{dst.min()}..] is not {max(ALIGN, repeat)}-byte aligned")
    g, ok = box_elements(m, coords)
    vals = np.where(ok, run.ins[m.input][g], 0.0)
    addr = swizzle(start[:, None] + np.arange(m.box_elems)[None, :] * isz, m.swizzle)
    elem = (addr - run.shared_base[s.name]) // size
    if elem.min() < 0 or elem.max() >= run.shared[s.name].shape[1]: raise _error(f"TMA copy past the end of {s.name}")
    for r, (b, i) in enumerate(zip(blocks, idx)):
        _initialized(bars, s.bar, b, i)
        st.flight.append(_Copy(s.bar, int(b), int(i), s.name, elem[r], vals[r], m.box_elems * isz))
    _count(run, m, g, ok, addr, isz)


def _count(run, m: TensorMap, g: np.ndarray, ok: np.ndarray, addr: np.ndarray, isz: int) -> None:
    rows = g.reshape(-1, m.box[0]) * isz
    s_, mn = sectors(rows, ok.reshape(rows.shape), isz)
    run.c.global_sectors += s_; run.c.global_min_sectors += mn  # noqa: E702
    run.c.global_bytes += int(np.count_nonzero(ok)) * isz
    chunks = addr[:, ::16 // isz].reshape(-1)                  # 16-byte chunk starts, box order
    pad = -len(chunks) % 8
    chunks = np.concatenate([chunks, np.zeros(pad, chunks.dtype)]).reshape(-1, 8)
    live = (np.arange(chunks.size) < chunks.size - pad).reshape(chunks.shape)
    words = (chunks[..., None] + BANK_BYTES * np.arange(16 // BANK_BYTES)).reshape(len(chunks), -1)
    w, ideal = bank_wavefronts(words, np.repeat(live, 16 // BANK_BYTES, axis=1), BANK_BYTES)
    run.c.shared_wavefronts += w; run.c.shared_ideal += ideal  # noqa: E702
    run.c.count("st.shared.tma", len(chunks))


def wait_blocked(run, s: MbarWait, mask: np.ndarray) -> bool:
    """Whether ``s`` cannot pass now: for some executing (block, barrier) the waited phase
    has not completed and still expects arrivals (bytes alone land from copies in flight)."""
    st = state(run)
    blocks, threads = np.nonzero(np.broadcast_to(mask, run.shape)[..., 0])
    if not blocks.size: return False
    bars = _bars(st, s.bar)
    idx = _per_thread(run, s.index, mask, blocks, threads)
    parity = _per_thread(run, s.parity, mask, blocks, threads)
    if np.any((idx < 0) | (idx >= bars.count.shape[1])): return False   # the wait itself reports it
    waiting = bars.phase[blocks, idx] % 2 == parity
    return bool(np.any(waiting & (bars.due[blocks, idx] > 0) & (bars.count[blocks, idx] > 0)))


def _wait(run, st: _State, s: MbarWait, mask, blocks, threads) -> None:
    bars = _bars(st, s.bar)
    idx = _per_thread(run, s.index, mask, blocks, threads)
    parity = _per_thread(run, s.parity, mask, blocks, threads)
    if np.any((parity != 0) & (parity != 1)): raise _error(f"mbarrier wait parity {set(parity.tolist())} (0 or 1)")
    for b, i, p in sorted(set(zip(blocks.tolist(), idx.tolist(), parity.tolist()))):
        _initialized(bars, s.bar, b, i)
        if bars.phase[b, i] % 2 != p:   # the phase of this parity completed already
            if any(c.bar == s.bar and c.block == b and c.index == i for c in st.flight): run.c.races += 1
            continue
        if bars.due[b, i] > 0:
            raise _error(f"hang: waiting on mbarrier {s.bar}[{i}] phase {bars.phase[b, i]} whose {bars.due[b, i]} arrival(s) never come")
        _drain(run, st, bars, s.bar, b, i)
    run.c.count("mbarrier", run.active_warps(mask))


def _drain(run, st: _State, bars: _Bars, name: str, b: int, i: int) -> None:
    """Land the copies completing on barrier ``i`` of block ``b``, in issue order, until its
    current phase (every arrival in) completes; it must."""
    phase = bars.phase[b, i]
    for c in [c for c in st.flight if c.bar == name and c.block == b and c.index == i]:
        _land(run, st, c)
        bars.tx[b, i] -= c.nbytes
        if bars.tx[b, i] < 0: raise _error(f"mbarrier {name}[{i}] received {-bars.tx[b, i]} bytes more than it expected")
        _maybe_complete(bars, b, i)
        if bars.phase[b, i] != phase: return
    raise _error(f"hang: mbarrier {name}[{i}] still expects {bars.tx[b, i]} bytes and no copy in flight completes on it")


def _land(run, st: _State, c: _Copy) -> None:
    """Write a copy into shared memory and into the async proxy's view (the wgmma emulator's)."""
    st.flight.remove(c)
    buf = run.shared[c.name]
    buf[c.block, c.dst] = cast_values(c.vals, run.shared_dt[c.name])
    run.writer[c.name][c.block, c.dst] = -1          # no thread wrote it: no race with a thread's reads
    view = async_view(run)
    if c.name in view: view[c.name][c.block, c.dst] = buf[c.block, c.dst]


def in_flight(run) -> dict[str, np.ndarray]:
    """Per shared buffer, (B, size) True where a TMA copy has not landed yet."""
    out: dict[str, np.ndarray] = {}
    for c in state(run).flight:
        out.setdefault(c.name, np.zeros(run.shared[c.name].shape, bool))[c.block, c.dst] = True
    return out

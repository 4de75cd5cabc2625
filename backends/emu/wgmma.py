"""Emulation of Hopper warpgroup MMA statements (``SharedFence``, ``WgmmaFence``,
``Wgmma``, ``WgmmaCommit``, ``WgmmaWait``; ir/program.py) for the numpy executor.

Statements run for whole warpgroups: any set of a block's warpgroups (a warp role), never
part of one, never the threads past its last whole warpgroup (a producer warp).
A ``Wgmma`` builds each warpgroup's two 64-bit matrix descriptors from the statement's
constant fields and the *absolute* shared byte address of its start element (the
executor's buffer bases), then decodes them as the hardware does (``element_addresses``:
the canonical K-major / MN-major layouts, then the 128B/64B/32B XOR swizzle of address
bits 4.. by bits 7..), so a wrong LBO/SBO/mode, start address, transpose bit or stage
alignment reads the wrong elements and the numbers go wrong.

Asynchrony: a wgmma is only queued when issued; ``WgmmaCommit`` closes the group and the
wait that retires a group reads shared memory and the accumulators *then* (a stage
overwritten before the wait is read overwritten). While a group targeting a register
array is in flight that array reads as NaN (its true value is kept aside), so an epilogue
that reads accumulators before the wait produces NaN. A wgmma whose accumulators were
written by other instructions since the last ``WgmmaFence`` is an error, and so is a wgmma
reading shared memory changed since the last ``SharedFence`` (fence.proxy.async: only
then do generic-proxy writes, st.shared and cp.async, reach wgmma's async proxy; TMA
copies write through the async proxy and need no fence: ``async_view``); shared elements
a wgmma reads that were written since the last barrier, or that an issued cp.async or TMA
copy has not landed in yet, count as races.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import dtype as dt
from ...ir import wgmma as wg
from ...ir.interpret import cast_values
from ...ir.program import SharedFence, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait
from ...search.machine import NVIDIA_WARP

STMTS = (SharedFence, WgmmaFence, Wgmma, WgmmaCommit, WgmmaWait)
GROUP = 128  # threads of a warpgroup


def WgmmaEmuError(msg: str) -> Exception:
    """The executor's ``EmuError`` (imported late: the executor imports this module)."""
    from .executor import EmuError
    return EmuError(msg)


@dataclass
class _State:
    open: list = field(default_factory=list)        # issued since the last commit
    inflight: list = field(default_factory=list)    # committed groups, oldest first
    true: dict = field(default_factory=dict)        # register array -> its value while wgmmas target it
    pending: dict = field(default_factory=dict)     # register array -> wgmmas in flight on it
    fenced: dict = field(default_factory=dict)      # register array -> its value at the last WgmmaFence
    published: dict | None = None                   # shared buffer -> its contents at the last SharedFence


def element_addresses(desc: int, rows: int, trans: bool) -> np.ndarray:
    """Byte address of each element (r, k) (r < rows of M or N, k < 16) that a wgmma
    operand descriptor selects, as the hardware computes it."""
    start, lbo, sbo, base, mode = wg.decode(int(desc))
    if base: raise WgmmaEmuError("descriptor base offset != 0 is not modelled")
    r, k = np.arange(rows)[:, None], np.arange(16)[None, :]
    if mode == 0:  # no swizzle: 8 x 16-byte core matrices
        if trans: return start + (r % 8) * 2 + (r // 8) * sbo + (k % 8) * 16 + (k // 8) * lbo
        return start + (r % 8) * 16 + (r // 8) * sbo + (k % 8) * 2 + (k // 8) * lbo
    w = wg.swizzle_width(mode)
    if trans: addr = start + (r % (w // 2)) * 2 + (r // (w // 2)) * lbo + (k % 8) * w + (k // 8) * sbo
    else: addr = start + (r % 8) * w + (r // 8) * sbo + k * 2
    return swizzle(addr, w)


def swizzle(addr: np.ndarray, span: int) -> np.ndarray:
    """The wgmma / TMA swizzle of shared byte addresses of a ``span``-byte pattern: bits
    [4, 4 + log2(span / 16)) XOR bits 7.. (none for span 0)."""
    if not span: return addr
    return addr ^ (((addr >> 7) & (span // 16 - 1)) << 4)


def acc_coords(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) in the 64 x n tile of accumulator element e of warpgroup thread t:
    arrays of shape (128, n/2)."""
    t, e = np.arange(GROUP)[:, None], np.arange(n // 2)[None, :]
    q, lane = t // NVIDIA_WARP, t % NVIDIA_WARP
    return 16 * q + lane // 4 + 8 * ((e // 2) % 2), 8 * (e // 4) + 2 * (lane % 4) + e % 2


def groups(run, s, mask: np.ndarray) -> np.ndarray:
    """(B, G) the warpgroups executing ``s``: whole warpgroups only (a block's threads past
    its last whole warpgroup, a producer warp, never issue wgmma)."""
    B, T = run.shape[:2]
    m = np.broadcast_to(mask, run.shape)[..., 0]
    G = T // GROUP
    if G == 0: raise WgmmaEmuError(f"wgmma needs whole warpgroups, the block has {T} threads")
    whole = m[:, :G * GROUP].reshape(B, G, GROUP)
    if np.any(m[:, G * GROUP:]) or np.any(whole != whole[..., :1]):
        raise WgmmaEmuError(f"{type(s).__name__} executed by only part of a warpgroup")
    return whole[..., 0]


def execute(run, s, mask: np.ndarray) -> None:
    """Run one wgmma-family statement on the executor ``run`` (backends/emu/executor._Run)."""
    st = run.__dict__.setdefault("_wgmma", _State())
    if isinstance(s, SharedFence):   # any thread's: it publishes that thread's shared writes
        st.published = {name: buf.copy() for name, buf in run.shared.items()}
        run.c.count("fence", run.active_warps(mask))
        return
    active = groups(run, s, mask)
    if not active.any(): return
    if isinstance(s, WgmmaFence):
        for name in _targets(run): st.fenced[name] = run.regs[name].copy()
        run.c.count("fence", int(active.sum()) * wg.WARPS_PER_GROUP)
    elif isinstance(s, Wgmma):
        _issue(run, st, s, active, mask)
    elif isinstance(s, WgmmaCommit):
        st.inflight.append(st.open); st.open = []  # noqa: E702
    elif isinstance(s, WgmmaWait):
        while len(st.inflight) > s.pending:
            for op in st.inflight.pop(0): _retire(run, st, *op)


def _targets(run) -> set[str]:
    if not hasattr(run, "_wgmma_targets"): run._wgmma_targets = {x.d for x in run.p.walk() if isinstance(x, Wgmma)}
    return run._wgmma_targets


def _descriptor(run, name: str, start, fields: int, active: np.ndarray) -> np.ndarray:
    """Per (block, warpgroup) the full descriptor: ``fields`` | the start address (the
    inactive warpgroups' entries: the first active one's, never used)."""
    if name not in run.shared: raise WgmmaEmuError(f"wgmma operand {name} is not a shared buffer")
    B, G = active.shape
    idx = np.broadcast_to(np.asarray(start), run.shape)[:, :G * GROUP, 0].reshape(B, G, GROUP).astype(np.int64)
    if np.any((idx != idx[..., :1]) & active[..., None]): raise WgmmaEmuError(f"wgmma start of {name} differs within a warpgroup")
    idx = np.where(active, idx[..., 0], idx[..., 0][active][0])
    if idx.min() < 0 or idx.max() >= run.shared[name].shape[1]: raise WgmmaEmuError(f"wgmma start of {name} out of bounds")
    addr = run.shared_base[name] + idx * run.shared_dt[name].itemsize
    if np.any(addr % 16): raise WgmmaEmuError(f"wgmma operand {name} start is not 16-byte aligned")
    return np.uint64(fields) | ((addr & 0x3FFFF) >> 4).astype(np.uint64)


def _issue(run, st: _State, s: Wgmma, active: np.ndarray, mask: np.ndarray) -> None:
    d = s.d
    if s.d_off + s.n // 2 > run.regs[d].shape[0]: raise WgmmaEmuError(f"accumulators {d}[{s.d_off}:+{s.n // 2}] out of bounds")
    if not st.pending.get(d):
        if d not in st.fenced or not np.array_equal(st.fenced[d], run.regs[d], equal_nan=True):
            raise WgmmaEmuError(f"wgmma on {d} without a wgmma.fence after its last write by other instructions")
        st.true[d] = run.regs[d].copy()
        run.regs[d][...] = np.nan          # undefined until the wait retires the group
    st.pending[d] = st.pending.get(d, 0) + 1
    da = _descriptor(run, s.a, run.eval(s.a_start, mask), s.a_desc, active)
    db = _descriptor(run, s.b, run.eval(s.b_start, mask), s.b_desc, active)
    st.open.append((s, da, db, active))
    run.c.count("wgmma", int(active.sum()))


def _copies_in_flight(run) -> dict[str, np.ndarray]:
    """Per shared buffer, (B, size) True where an issued cp.async or TMA copy has not landed yet."""
    from .tma import in_flight
    out = in_flight(run)
    for name, dst, ok, vals in [a for g in run.inflight for a in g] + list(run.open_group):
        m = out.setdefault(name, np.zeros(run.shared[name].shape, bool))
        rows = np.broadcast_to(np.arange(m.shape[0]).reshape(-1, 1, 1), ok.shape)[ok]
        m[rows[:, None], dst[ok][:, None] + np.arange(vals.shape[-1])] = True
    return out


def async_view(run) -> dict[str, np.ndarray]:
    """What wgmma's async proxy sees of each shared buffer: its contents at the last
    ``SharedFence`` plus what TMA copies wrote since (before any fence: nothing, NaN)."""
    st = run.__dict__.setdefault("_wgmma", _State())
    if st.published is None: st.published = {name: np.full_like(buf, np.nan) for name, buf in run.shared.items()}
    return st.published


def _read(run, addr: np.ndarray, published: dict | None) -> np.ndarray:
    """Values at shared byte addresses ``addr`` (B, ...) in whichever buffer holds them;
    counts as races elements written since the last barrier and destinations of
    asynchronous copies still in flight (the hardware may land them any time)."""
    B = addr.shape[0]
    busy = _copies_in_flight(run)
    flat = addr.reshape(B, -1)
    out = np.full(flat.shape, np.nan)
    found = np.zeros(flat.shape, bool)
    for name, buf in run.shared.items():
        size = run.shared_dt[name].itemsize
        lo, hi = run.shared_base[name], run.shared_base[name] + buf.shape[1] * size
        inside = (flat >= lo) & (flat < hi)
        if not inside.any(): continue
        idx = np.where(inside, (flat - lo) // size, 0)
        vals = np.take_along_axis(buf, idx, axis=1)
        seen = None if published is None else np.take_along_axis(published[name], idx, axis=1) if name in published else None
        if seen is None or np.any(inside & (vals != seen) & ~(np.isnan(vals) & np.isnan(seen))):
            raise WgmmaEmuError(f"wgmma reads {name} written after the last fence.proxy.async (SharedFence): "
                                "the async proxy may not see it")
        out = np.where(inside, vals, out)
        wr = np.take_along_axis(run.writer[name], idx, axis=1)
        run.c.races += int(np.count_nonzero(inside & (wr >= 0)))
        if name in busy: run.c.races += int(np.count_nonzero(inside & np.take_along_axis(busy[name], idx, axis=1)))
        found |= inside
    if not found.all(): raise WgmmaEmuError("wgmma descriptor addresses outside every shared buffer")
    return out.reshape(addr.shape)


def _retire(run, st: _State, s: Wgmma, da: np.ndarray, db: np.ndarray, active: np.ndarray) -> None:
    B, G = da.shape
    ea = np.stack([np.stack([element_addresses(int(da[b, g]), wg.WG_M, s.a_trans) for g in range(G)]) for b in range(B)])
    eb = np.stack([np.stack([element_addresses(int(db[b, g]), s.n, s.b_trans) for g in range(G)]) for b in range(B)])
    A = _read(run, ea, st.published)         # (B, G, 64, 16)
    Bm = _read(run, eb, st.published)        # (B, G, n, 16): row n, column k
    rows, cols = acc_coords(s.n)
    true = st.true[s.d]
    n2 = s.n // 2
    acc = true[s.d_off:s.d_off + n2, :, :G * GROUP]                                      # the warpgroups' threads
    regs = acc.reshape(n2, B, G, GROUP).transpose(1, 2, 3, 0)                           # (B, G, 128, n/2)
    D = np.zeros((B, G, wg.WG_M, s.n))
    D[:, :, rows, cols] = regs
    D = A @ Bm.transpose(0, 1, 3, 2) + (D if s.scale_d else 0.0)
    new = cast_values(D[:, :, rows, cols], dt.float32)                                   # (B, G, 128, n/2)
    new = np.where(active[..., None, None], new, regs)                                  # inactive warpgroups keep theirs
    acc[...] = new.transpose(3, 0, 1, 2).reshape(n2, B, G * GROUP, 1)
    st.pending[s.d] -= 1
    if st.pending[s.d] == 0:
        run.regs[s.d][...] = true
        st.fenced[s.d] = true.copy()   # the wgmma's own results need no fence

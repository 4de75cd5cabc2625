"""Execute a lowered ``Program`` in numpy with GPU semantics, counting what the memory
system would see.

All threads of the executed blocks run each statement together, vectorized as arrays of
shape ``(blocks, threads, lanes)``; ``If`` masks threads off (one whose condition every thread
of a block takes alike, such as a block's own trip count, may hold barriers and warp-wide
statements: blocks are independent). Warps are ``WARP`` (NVIDIA's 32) consecutive threads of a
block; every evaluation of a load or shared access is one instruction per warp (one per lane
too when the lanes are not one contiguous vector). Values follow the reference interpreter
(floats in float64, rounded where the program casts or writes a register, shared buffer or
output), so results match ``ir.interpret.run_kernel`` up to
summation order. Because threads run in lockstep a missing barrier would go unnoticed, so
shared memory remembers which thread wrote each element since the last barrier and
counts every cross-thread read/write in between as a race.

Tensor-core statements (ir/program.py) run per warp with the PTX lane layouts of
``ir/tensorcore.py``: ``FragLoad`` gathers each lane's fragment from shared memory and
counts one shared access per 8x8 matrix (8 rows of 16 bytes, the phase the hardware
serves at once), a 16-byte ``SharedCopy`` one access per quarter warp (narrower ones one
per warp; a copy whose valid is false writes zeros); ``Mma`` multiplies
the assembled 16x16 and 16x8 fragments in float64 and rounds to the fp32 accumulators.
Asynchronous copies are held per commit group and land at the ``CopyWait`` that allows
it, so a pipeline that reads a stage too early reads stale data; TMA copies are held per
mbarrier and land at the wait that needs them (backends/emu/tma.py).

Large grids are sampled: at most ``max_blocks`` blocks run (first, last, evenly spaced);
the result says which output elements were written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import dtype as dt
from ...ir.interpret import apply, cast_values, compute_dtype
from ...ir.node import Node, Ops, toposort
from ...ir.program import (Barrier, Assign, CopyCommit, CopyWait, FragLoad, If, Loop, MbarWait, Mma, Program, Reg, Roles, Shared,
                                 SharedCopy, SharedStore, Store, lane_stride, unrolled, walk)

from ..cuda import shuffle
from ..cuda.vectorize import block_loads, merged_loads, shared_runs, store_runs

from . import tma as tma_emu
from . import wgmma as wgmma_emu
from .counters import BANK_BYTES, Counters, bank_wavefronts, sectors

from ...search.machine import NVIDIA_WARP

WARP = NVIDIA_WARP   # the emulated GPU's warp (NVIDIA semantics); EmuBackend refuses a target of another warp
SFU = {Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIP}
_UNINIT_INT = -0x2152411  # what an unwritten integer register/shared element reads as


class EmuError(RuntimeError):
    """The program did something a GPU would fault on or that breaks Program's rules."""


@dataclass
class EmuResult:
    output: np.ndarray     # storage dtype, output shape; unwritten elements NaN / sentinel
    written: np.ndarray    # bool, output shape
    counters: Counters


def sample_blocks(n: int, max_blocks: int) -> np.ndarray:
    if n <= max_blocks: return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_blocks).round().astype(np.int64))


class _Run:
    def __init__(self, p: Program, inputs: list[np.ndarray], blocks: np.ndarray):
        self.p, self.c = p, Counters(blocks_run=len(blocks), blocks_total=p.blocks)
        self.ins = [np.asarray(dt.to_values(np.asarray(a).reshape(-1), b.dtype)).astype(compute_dtype(b.dtype))
                    for a, b in zip(inputs, p.inputs)]
        B, T, L = len(blocks), p.threads, p.lanes
        self.shape = (B, T, L)
        self.env: dict[Node, np.ndarray] = {p.block: blocks.reshape(B, 1, 1), p.thread: np.arange(T).reshape(1, T, 1),
                                            p.lane: np.arange(L).reshape(1, 1, L)}
        self.tid = np.broadcast_to(np.arange(T).reshape(1, T, 1), self.shape)
        self.regs: dict[str, np.ndarray] = {}
        self.reg_dt: dict[str, dt.DType] = {}
        self.shared: dict[str, np.ndarray] = {}
        self.shared_dt: dict[str, dt.DType] = {}
        self.shared_base: dict[str, int] = {}
        self.writer: dict[str, np.ndarray] = {}   # thread that wrote each element since the last barrier (-1: none)
        self.smem_bytes = 0
        od = p.output.dtype
        self.out = np.full(p.output.size, np.nan if od.is_float else 0, dtype=compute_dtype(od))
        self.written = np.zeros(p.output.size, dtype=bool)
        self.warps = -(-T // WARP)
        self.lane_cache: dict[Node, int | None] = {}
        self.pre: dict[Node, np.ndarray] = {}   # loads already read as part of a vector load
        self.inflight: list[list] = []          # committed groups of async copies, oldest first
        self.runs: dict[int, tuple] = {}        # id(statement block) -> (block, its vector shared reads)
        self.open_group: list = []              # async copies issued since the last commit
        self.executed = 0                       # statements entered (warp roles: did a branch progress?)

    # ---- helpers -------------------------------------------------------------
    def full(self, x: np.ndarray) -> np.ndarray: return np.broadcast_to(x, self.shape)

    def warp_rows(self, x: np.ndarray, per_lane: bool) -> np.ndarray:
        """Arrange a (B, T, L) array as one row per warp instruction."""
        x = np.asarray(x)
        B, T, L = self.shape[0], self.shape[1], x.shape[2]  # L: the lanes (x vector elements)
        pad = self.warps * WARP - T
        if pad: x = np.concatenate([x, np.zeros((B, pad, L), x.dtype)], axis=1)
        x = x.reshape(B, self.warps, WARP, L)
        if per_lane: return x.transpose(0, 1, 3, 2).reshape(-1, WARP)
        return x.reshape(B * self.warps, WARP * L)

    def whole_blocks(self, mask: np.ndarray) -> bool:
        """Every block runs with all its threads or none (blocks are independent: a block
        past its own trip count skips what the others run)."""
        m = self.full(mask)[..., 0]
        return bool(np.all(m.all(axis=1) | ~m.any(axis=1)))

    def active_warps(self, mask: np.ndarray) -> int:
        return int(self.warp_rows(self.full(mask), False).any(axis=1).sum())

    def stride(self, idx: Node) -> int | None:
        if idx not in self.lane_cache: self.lane_cache[idx] = lane_stride(idx, self.p.lane) if self.p.lanes > 1 else 0
        return self.lane_cache[idx]

    # ---- expressions -----------------------------------------------------------
    def eval(self, root: Node, mask: np.ndarray) -> np.ndarray:
        val: dict[Node, np.ndarray] = {}
        warps = None
        for n in toposort(root):
            if n in self.env: v = self.env[n]
            elif n.op is Ops.CONST: v = np.asarray(n.arg, dtype=compute_dtype(n.dtype)).reshape(1, 1, 1)
            elif n.op is Ops.SPECIAL: raise EmuError(f"index {n.arg[0]} used outside its loop")
            elif n.op is Ops.LOAD: v = self.load(n, val[n.src[0]], val[n.src[1]], mask)
            elif n.op is Ops.REG: v = self.reg_read(n, val[n.src[0]])
            elif n.op is Ops.SHARED: v = self.shared_read(n, val[n.src[0]], mask)
            elif n.op is Ops.VAR or n.op is Ops.REDUCE: raise EmuError(f"{n.op.name} cannot appear in a Program")
            else:
                v = apply(n.op, n.dtype, [val[s] for s in n.src], [s.dtype for s in n.src])
                if n.dtype.is_float and v.dtype != np.float64: v = v.astype(np.float64)
                if warps is None: warps = self.active_warps(mask)
                cls = "sfu" if n.op in SFU else "fp" if n.dtype.is_float or any(s.dtype.is_float for s in n.src) else "int"
                self.c.count(cls, warps * (self.p.lanes if v.ndim == 3 and v.shape[2] > 1 else 1))
            val[n] = v
        return val[root]

    def _index(self, idx: np.ndarray, ok: np.ndarray, size: int, what: str) -> np.ndarray:
        idx, ok = self.full(idx).astype(np.int64), self.full(ok)
        if ok.any():
            lo, hi = idx[ok].min(), idx[ok].max()
            if lo < 0 or hi >= size: raise EmuError(f"{what}: index {lo}..{hi} out of bounds (size {size})")
        return np.where(ok, idx, 0)

    def load(self, n: Node, idx: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if n in self.pre: return self.pre[n]
        vals, safe, ok = self.load_values(n, idx, valid, mask)
        self.global_access("ld.global", safe, ok, self.p.inputs[n.arg].dtype.itemsize, self.stride(n.src[0]))
        return vals

    def load_values(self, n: Node, idx: np.ndarray, valid: np.ndarray, mask: np.ndarray):
        buf, b = self.ins[n.arg], self.p.inputs[n.arg]
        ok = self.full(valid.astype(bool) & mask)
        safe = self._index(idx, ok, buf.size, f"load from input {n.arg} ({b.name})")
        return np.where(ok, buf[safe], np.zeros((), buf.dtype)), safe, ok

    def vector_loads(self, stmts, mask: np.ndarray) -> None:
        """The loads of an unrolled block that the GPU reads as one vector load (the CUDA
        renderer's rule): read them now, count each group as one warp instruction."""
        lane_free = lambda ld: self.p.lanes > 1 and self.p.lane in toposort(ld)  # noqa: E731
        merged = merged_loads(stmts, self.p.inputs, lane_free)
        # the other lane-free input loads of the block are read once too (the renderer
        # computes each once per scope)
        done = {ld for g in merged for ld in g[4]}
        for ld in block_loads(stmts):
            if ld in done or lane_free(ld) or ld in self.pre: continue
            self.pre[ld] = self.load(ld, self.eval(ld.src[0], mask), self.eval(ld.src[1], mask), mask)
        for slot, _, _, _, loads in merged:
            got = [self.load_values(ld, self.eval(ld.src[0], mask), self.eval(ld.src[1], mask), mask) for ld in loads]
            for ld, (vals, _, _) in zip(loads, got): self.pre[ld] = vals
            # element j of the vector sits next to element j-1: interleave them per thread
            safe = np.stack([g[1] for g in got], axis=-1).reshape(self.shape[:2] + (-1,))
            ok = np.stack([g[2] for g in got], axis=-1).reshape(self.shape[:2] + (-1,))
            self.global_access("ld.global", safe, ok, self.p.inputs[slot].dtype.itemsize, 1)

    def global_access(self, cls: str, idx: np.ndarray, ok: np.ndarray, itemsize: int, stride: int | None) -> None:
        per_lane = stride not in (0, 1)
        rows, m = self.warp_rows(idx * itemsize, per_lane), self.warp_rows(ok, per_lane)
        s, mn = sectors(rows, m, itemsize)
        self.c.global_sectors += s; self.c.global_min_sectors += mn  # noqa: E702
        self.c.global_bytes += int(np.count_nonzero(ok)) * itemsize
        self.c.count(cls, int(m.any(axis=1).sum()))

    def shared_access(self, name: str, idx: np.ndarray, ok: np.ndarray, stride: int | None, write: bool) -> None:
        itemsize = self.shared_dt[name].itemsize
        per_lane = stride not in (0, 1)
        addr = self.shared_base[name] + idx * itemsize
        rows, m = self.warp_rows(addr, per_lane), self.warp_rows(ok, per_lane)
        w, ideal = bank_wavefronts(rows, m, itemsize)
        self.c.shared_wavefronts += w; self.c.shared_ideal += ideal  # noqa: E702
        self.c.count("st.shared" if write else "ld.shared", int(m.any(axis=1).sum()))
        # races: another thread wrote this element since the last barrier
        wr = np.take_along_axis(self.writer[name], idx.reshape(self.shape[0], -1), axis=1).reshape(self.shape)
        self.c.races += int(np.count_nonzero(ok & (wr >= 0) & (wr != self.tid)))

    def reg_read(self, n: Node, idx: np.ndarray) -> np.ndarray:
        if n.arg not in self.regs: raise EmuError(f"register array {n.arg} read before its declaration")
        r = self.regs[n.arg]
        i = np.asarray(idx)
        if i.size == 1:
            k = int(i.reshape(-1)[0])
            if not 0 <= k < r.shape[0]: raise EmuError(f"register {n.arg}[{k}] out of bounds (size {r.shape[0]})")
            return r[k]
        raise EmuError(f"register {n.arg} indexed by a per-thread value (registers need uniform indices)")

    def shared_read(self, n: Node, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if n.arg not in self.shared: raise EmuError(f"shared buffer {n.arg} read before its declaration")
        buf = self.shared[n.arg]
        ok = self.full(mask)
        safe = self._index(idx, ok, buf.shape[1], f"shared read {n.arg}")
        self.shared_access(n.arg, safe, ok, self.stride(n.src[0]), write=False)
        return np.take_along_axis(buf, safe.reshape(self.shape[0], -1), axis=1).reshape(self.shape)

    # ---- statements --------------------------------------------------------------
    def block(self, body, mask: np.ndarray):
        """Run ``body``; a generator that yields where an mbarrier wait cannot pass yet (a
        ``Roles`` branch then lets the others run: ``roles``)."""
        runs, stores = self.vector_runs(body)
        body, i = list(body), 0
        while i < len(body):
            if i in runs:  # read as one vector shared load on the GPU
                self.shared_vector(body[i:i + runs[i]], mask)
                i += runs[i]
                continue
            if i in stores:  # written as one vector store on the GPU
                self.store_vector(body[i:i + stores[i]], mask)
                i += stores[i]
                continue
            m = shuffle.match(body[i:i + 4], self.p)  # the GPU folds these with warp shuffles
            if m is not None:
                yield from self.warp_fold(m, mask)
                i += 4
                continue
            yield from self.stmt(body[i], mask)
            i += 1

    def warp_fold(self, m: shuffle.WarpCombine, mask: np.ndarray):
        """Every thread of each group of ``m.threads`` gets the group's total (an XOR
        butterfly of shuffles), then the leader stores: no shared memory, and no barrier
        unless the stores write shared memory."""
        r = self.regs[m.reg]
        B, T, L = self.shape
        g = r.reshape(r.shape[0], B, T // m.threads, m.threads, L)
        tot = g.sum(axis=3, keepdims=True) if m.op is Ops.ADD else g.max(axis=3, keepdims=True)
        tot = cast_values(np.broadcast_to(tot, g.shape).reshape(r.shape), self.reg_dt[m.reg])
        r[...] = np.where(mask, tot, r)
        self.c.count("shfl", self.active_warps(mask) * r.shape[0] * L * (m.threads.bit_length() - 1))
        yield from self.stmt(If(m.cond, m.stores), mask)
        if m.barrier: yield from self.stmt(Barrier(), mask)

    def stmt(self, s, mask: np.ndarray):
        """Run one statement (a generator, as ``block``)."""
        self.executed += 1
        if isinstance(s, Loop) and s.unroll:
            stmts, saved = unrolled(s), dict(self.pre)
            self.vector_loads(stmts, mask)
            yield from self.block(stmts, mask)
            self.pre = saved
        elif isinstance(s, Loop):
            for i in range(s.size):
                self.env[s.var] = np.asarray(i, dtype=np.int64).reshape(1, 1, 1)
                yield from self.block(s.body, mask)
            self.env.pop(s.var, None)
        elif isinstance(s, If):
            cond = self.eval(s.cond, mask).astype(bool)
            if cond.ndim == 3 and cond.shape[2] > 1 and not (cond == cond[..., :1]).all():
                raise EmuError(f"If condition depends on the lane: {s.cond}")
            self.c.count("branch", self.active_warps(mask))
            sub = mask & (cond[..., :1] if cond.ndim == 3 else cond)
            # a block-uniform condition (a block's own trip count) may hold barriers and warp-wide
            # statements: every thread of a block takes it or none does
            if not self.whole_blocks(sub) and any(isinstance(x, Barrier) and not x.threads for x in walk(s.body)):
                raise EmuError("barrier inside a conditional that splits a block")
            if np.any(sub): yield from self.block(s.body, sub)
        elif isinstance(s, Roles):
            self.roles(s, mask)
        elif isinstance(s, MbarWait):
            while tma_emu.wait_blocked(self, s, mask):
                yield s   # an arrival it needs is due from another role
            tma_emu.execute(self, s, mask)
        elif isinstance(s, Reg):
            fill = np.nan if s.dtype.is_float else _UNINIT_INT
            self.regs[s.name] = np.full((s.size,) + self.shape, fill, dtype=compute_dtype(s.dtype))
            self.reg_dt[s.name] = s.dtype
        elif isinstance(s, Assign):
            self.assign(s, self.eval(s.value, mask), mask)
        elif isinstance(s, Store):
            self.store(s, mask)
        elif isinstance(s, Shared):
            fill = np.nan if s.dtype.is_float else _UNINIT_INT
            self.shared[s.name] = np.full((self.shape[0], s.size), fill, dtype=compute_dtype(s.dtype))
            self.writer[s.name] = np.full((self.shape[0], s.size), -1, dtype=np.int64)
            self.shared_dt[s.name] = s.dtype
            self.smem_bytes = -(-self.smem_bytes // 128) * 128  # every buffer starts 128-byte aligned
            self.shared_base[s.name] = self.smem_bytes
            self.smem_bytes += s.size * s.dtype.itemsize
        elif isinstance(s, SharedStore):
            self.shared_store(s, mask)
        elif isinstance(s, SharedCopy):
            self.shared_copy(s, mask)
        elif isinstance(s, CopyCommit):
            self.inflight.append(self.open_group); self.open_group = []  # noqa: E702
        elif isinstance(s, CopyWait):
            while len(self.inflight) > s.pending:
                for args in self.inflight.pop(0): self.land(*args)
        elif isinstance(s, FragLoad):
            self.frag_load(s, mask)
        elif isinstance(s, Mma):
            self.mma(s, mask)
        elif isinstance(s, wgmma_emu.STMTS):
            wgmma_emu.execute(self, s, mask)
        elif isinstance(s, tma_emu.STMTS):
            tma_emu.execute(self, s, mask)
        elif isinstance(s, Barrier):
            self.barrier(s, mask)
        else:
            raise EmuError(f"unknown statement {type(s).__name__}")

    def barrier(self, s: Barrier, mask: np.ndarray) -> None:
        """``__syncthreads`` (every thread of the block), or a named barrier of ``s.threads``
        (exactly that many threads of each block reach it; shared writes of the block are
        published as by a full barrier: the other roles' only shared writes are TMA copies,
        tracked apart)."""
        reached = np.broadcast_to(mask, self.shape)[..., 0].sum(axis=1)
        # blocks run side by side: one whose threads all skip it (a persistent block past its last tile) is not at it
        if s.threads and np.any((reached != s.threads) & (reached != 0)):
            raise EmuError(f"named barrier of {s.threads} threads reached by {sorted(set(reached.tolist()))} of a block")
        if not s.threads and not self.whole_blocks(mask): raise EmuError("barrier reached by only some threads of a block")
        for w in self.writer.values(): w.fill(-1)
        self.c.count("bar", self.active_warps(mask))

    def roles(self, s: Roles, mask: np.ndarray) -> None:
        """Run the branches concurrently: each runs until an mbarrier wait cannot pass, then
        the next, round robin in branch order (the first runs as far ahead as its waits let
        it: a producer refilling a stage before its release is caught). Every unfinished
        branch blocked: a hang."""
        masks, seen = [], np.zeros(self.shape[:2] + (1,), bool)
        for b in s.branches:
            if any(isinstance(x, Barrier) and not x.threads for x in walk(b.body)):
                raise EmuError("a block-wide barrier inside a warp role (the other roles never reach it)")
            cond = np.broadcast_to(self.eval(b.cond, mask).astype(bool), self.shape)[..., :1] & mask
            if np.any(cond & seen): raise EmuError(f"warp roles overlap: a thread is in two branches ({b.cond})")
            seen |= cond
            masks.append(cond)
        live = [self.block(b.body, m) for b, m in zip(s.branches, masks) if np.any(m)]
        blocked: dict[int, object] = {}
        while live:
            progressed = False
            for g in list(live):
                before = self.executed
                try:
                    blocked[id(g)] = next(g)
                except StopIteration:
                    live.remove(g)
                    blocked.pop(id(g), None)
                progressed |= self.executed != before or g not in live
            if live and not progressed:
                waits = "; ".join(f"{w.bar}[{w.index}] parity {w.parity}" for w in blocked.values())
                raise EmuError(f"hang: every warp role waits on an mbarrier whose arrivals never come ({waits})")

    def vector_runs(self, body) -> tuple[dict[int, int], dict[int, int]]:
        """``vectorize.shared_runs`` and ``store_runs`` of a block (lane-free programs only),
        cached for the program's own (tuple) blocks."""
        if self.p.lanes > 1: return {}, {}
        if not isinstance(body, tuple): return shared_runs(body, self.shared_dt), store_runs(body, self.p.output.dtype)
        if id(body) not in self.runs:  # body kept: its id stays unique
            self.runs[id(body)] = (body, (shared_runs(body, self.shared_dt), store_runs(body, self.p.output.dtype)))
        return self.runs[id(body)][1]

    def assign(self, s: Assign, value: np.ndarray, mask: np.ndarray) -> None:
        if s.name not in self.regs: raise EmuError(f"assignment to undeclared register {s.name}")
        v = cast_values(np.asarray(value), self.reg_dt[s.name])
        i = np.asarray(self.eval(s.index, mask))
        if i.size != 1: raise EmuError(f"register {s.name} indexed by a per-thread value")
        k = int(i.reshape(-1)[0])
        r = self.regs[s.name]
        if not 0 <= k < r.shape[0]: raise EmuError(f"register {s.name}[{k}] out of bounds (size {r.shape[0]})")
        r[k] = np.where(mask, v, r[k])

    def shared_vector(self, stmts: list[Assign], mask: np.ndarray) -> None:
        """Register assignments of consecutive shared elements (vectorize.shared_runs): one
        warp access of a ``width``-element row per thread, then each element assigned."""
        name, w = stmts[0].value.arg, len(stmts)
        if name not in self.shared: raise EmuError(f"shared buffer {name} read before its declaration")
        buf, B = self.shared[name], self.shape[0]
        ok = self.full(mask)
        start = self._index(self.eval(stmts[0].value.src[0], mask), ok, buf.shape[1] - w + 1, f"shared read {name}")
        self.smem_rows(name, start, ok, w * self.shared_dt[name].itemsize, write=False)
        for e, st in enumerate(stmts):
            at = (start + e).reshape(B, -1)
            wr = np.take_along_axis(self.writer[name], at, axis=1).reshape(self.shape)
            self.c.races += int(np.count_nonzero(ok & (wr >= 0) & (wr != self.tid)))
            self.assign(st, np.take_along_axis(buf, at, axis=1).reshape(self.shape), mask)

    def store(self, s: Store, mask: np.ndarray, count: bool = True) -> tuple[np.ndarray, np.ndarray]:
        ok = self.full(self.eval(s.valid, mask).astype(bool) & mask)
        idx = self.eval(s.index, mask)
        v = self.full(cast_values(np.asarray(self.eval(s.value, mask)), self.p.output.dtype))
        safe = self._index(idx, ok, self.out.size, "store to the output")
        if count: self.global_access("st.global", safe, ok, self.p.output.dtype.itemsize, self.stride(s.index))
        self.out[safe[ok]] = v[ok]
        self.written[safe[ok]] = True
        return safe, ok

    def store_vector(self, run: list[Store], mask: np.ndarray) -> None:
        """Stores of consecutive output elements (vectorize.store_runs): one warp instruction
        writing a ``len(run)``-element row per thread."""
        got = [self.store(st, mask, count=False) for st in run]
        safe = np.stack([g[0] for g in got], axis=-1).reshape(self.shape[:2] + (-1,))
        ok = np.stack([g[1] for g in got], axis=-1).reshape(self.shape[:2] + (-1,))
        self.global_access("st.global", safe, ok, self.p.output.dtype.itemsize, 1)

    def shared_store(self, s: SharedStore, mask: np.ndarray) -> None:
        if s.name not in self.shared: raise EmuError(f"store to undeclared shared buffer {s.name}")
        buf = self.shared[s.name]
        ok = self.full(self.eval(s.valid, mask).astype(bool) & mask)
        safe = self._index(self.eval(s.index, mask), ok, buf.shape[1], f"shared store {s.name}")
        v = self.full(cast_values(np.asarray(self.eval(s.value, mask)), self.shared_dt[s.name]))
        self.shared_access(s.name, safe, ok, self.stride(s.index), write=True)
        B = self.shape[0]
        rows = np.broadcast_to(np.arange(B).reshape(B, 1, 1), self.shape)
        buf[rows[ok], safe[ok]] = v[ok]
        self.writer[s.name][rows[ok], safe[ok]] = self.tid[ok]


    # ---- tensor cores ------------------------------------------------------------------
    def shared_copy(self, s: SharedCopy, mask: np.ndarray) -> None:
        """Every active thread writes ``width`` elements; where ``valid`` is false, zeros
        (cp.async's zero-fill form: nothing is read)."""
        if s.name not in self.shared: raise EmuError(f"copy to undeclared shared buffer {s.name}")
        buf, w, b = self.shared[s.name], s.width, self.p.inputs[s.input]
        act = self.full(mask)
        ok = self.full(self.eval(s.valid, mask).astype(bool) & mask)
        dst = self._index(self.eval(s.dst, mask), act, buf.shape[1] - w + 1, f"copy to shared {s.name}")
        src = self._index(self.eval(s.src, mask), ok, self.ins[s.input].size - w + 1, f"copy from input {s.input}")
        nbytes = w * b.dtype.itemsize
        if nbytes in (4, 8, 16) and (np.any(dst[act] % w) or np.any(src[ok] % w)): raise EmuError(f"{nbytes}-byte copy not aligned")
        span = np.arange(w)
        vals = np.where(ok[..., None], self.ins[s.input][src[..., None] + span], 0.0)  # (B, T, 1, w)
        self.global_access("ld.global", (src[..., None] + span).reshape(self.shape[:2] + (-1,)),
                           np.repeat(ok, w, axis=2), b.dtype.itemsize, 1)
        self.smem_rows(s.name, dst, act, nbytes, write=True)
        args = (s.name, dst, act, vals)
        if s.async_: self.open_group.append(args)
        else: self.land(*args)

    def land(self, name: str, dst: np.ndarray, ok: np.ndarray, vals: np.ndarray) -> None:
        """Write copied vectors into shared memory (the thread that issued them owns them)."""
        B, w = self.shape[0], vals.shape[-1]
        rows = np.broadcast_to(np.arange(B).reshape(B, 1, 1), self.shape)[ok]
        cols = dst[ok][:, None] + np.arange(w)
        self.shared[name][rows[:, None], cols] = cast_values(vals[ok], self.shared_dt[name])
        self.writer[name][rows[:, None], cols] = self.tid[ok][:, None]

    def smem_rows(self, name: str, start: np.ndarray, ok: np.ndarray, nbytes: int, write: bool) -> None:
        """Count a warp's access of one ``nbytes`` row per thread, served 128 bytes a phase."""
        per = min(WARP, max(1, 128 // nbytes))  # threads per phase (narrow accesses: the whole warp)
        addr = self.warp_rows(self.shared_base[name] + start * self.shared_dt[name].itemsize, False)
        m = self.warp_rows(ok, False)
        words = max(1, nbytes // BANK_BYTES)   # a 2-byte element: the word it lies in
        a = (addr.reshape(-1, per, 1) + BANK_BYTES * np.arange(words)).reshape(-1, per * words)
        mm = np.repeat(m.reshape(-1, per), words, axis=1)
        w, ideal = bank_wavefronts(a, mm, BANK_BYTES)
        self.c.shared_wavefronts += w; self.c.shared_ideal += ideal  # noqa: E702
        self.c.count("st.shared" if write else "ld.shared", int(m.any(axis=1).sum()))

    def warp_view(self, x: np.ndarray) -> np.ndarray:
        """(B, T, 1) -> (B, warps, WARP)."""
        B, T = self.shape[:2]
        if T % WARP: raise EmuError("tensor-core statements need whole warps")
        return np.broadcast_to(x, (B, T, 1)).reshape(B, T // WARP, WARP)

    def frag_load(self, s: FragLoad, mask: np.ndarray) -> None:
        if not self.whole_blocks(mask): raise EmuError("ldmatrix executed by only part of a block")
        buf = self.shared[s.shared]
        ok = self.full(mask)
        row = self._index(self.eval(s.row, mask), ok, buf.shape[1] - 7, f"ldmatrix from {s.shared}")
        if np.any(row % 8): raise EmuError("ldmatrix row address not 16-byte aligned")
        self.smem_rows(s.shared, row, ok, 16, write=False)
        addr = self.warp_view(row)                                   # (B, W, WARP): row starts
        lane = np.arange(WARP)
        B, W = addr.shape[:2]
        out = np.empty((8, B, W, WARP))
        idx_all = []
        for j in range(4):
            rows = addr[:, :, 8 * j:8 * j + 8]                       # the 8 row addresses of matrix j
            for e in range(2):
                if s.trans: idx = rows[:, :, 2 * (lane % 4) + e] + lane // 4
                else: idx = rows[:, :, lane // 4] + 2 * (lane % 4) + e
                idx_all.append(idx)
                out[s.offset - s.offset + 2 * j + e] = np.take_along_axis(buf, idx.reshape(B, -1), axis=1).reshape(B, W, WARP)
        rd = np.stack(idx_all, -1).reshape(B, -1)
        wr = np.take_along_axis(self.writer[s.shared], rd, axis=1).reshape(B, self.shape[1], -1)
        self.c.races += int(np.count_nonzero((wr >= 0) & (wr != self.tid[..., :1]) & ok))
        r = self.regs[s.name]
        if s.offset + 8 > r.shape[0]: raise EmuError(f"fragment {s.name}[{s.offset}:+8] out of bounds")
        new = cast_values(out.reshape(8, B, -1, 1), self.reg_dt[s.name])
        r[s.offset:s.offset + 8] = np.where(ok, new, r[s.offset:s.offset + 8])
        self.c.count("ldmatrix", self.active_warps(mask))

    def mma(self, s: Mma, mask: np.ndarray) -> None:
        if not self.whole_blocks(mask): raise EmuError("mma executed by only part of a block")
        a = np.stack([self.warp_view(self.regs[s.a][s.a_off + i]) for i in range(8)], -1)   # (B, W, WARP, 8)
        b = np.stack([self.warp_view(self.regs[s.b][s.b_off + i]) for i in range(4)], -1)
        c = np.stack([self.warp_view(self.regs[s.d][s.d_off + i]) for i in range(4)], -1)
        lane = np.arange(WARP)[:, None]
        g, t = lane // 4, lane % 4
        ia, ib, ic = np.arange(8), np.arange(4), np.arange(4)
        B, W = a.shape[:2]
        A = np.zeros((B, W, 16, 16)); Bm = np.zeros((B, W, 16, 8)); C = np.zeros((B, W, 16, 8))  # noqa: E702
        A[:, :, g + 8 * ((ia // 2) % 2), 2 * t + ia % 2 + 8 * (ia // 4)] = a
        Bm[:, :, 2 * t + ib % 2 + 8 * (ib // 2), np.broadcast_to(g, (WARP, 4))] = b
        C[:, :, g + 8 * (ic // 2), 2 * t + ic % 2] = c
        D = A @ Bm + C
        d = D[:, :, g + 8 * (ic // 2), 2 * t + ic % 2]                        # (B, W, WARP, 4)
        r = self.regs[s.d]
        ok = self.full(mask)
        for i in range(4):
            r[s.d_off + i] = np.where(ok, cast_values(d[..., i].reshape(B, -1, 1), self.reg_dt[s.d]), r[s.d_off + i])
        self.c.count("mma", self.active_warps(mask))


def run_program(p: Program, inputs: list[np.ndarray], max_blocks: int = 64, blocks: np.ndarray | None = None) -> EmuResult:
    """Execute ``p`` on storage arrays; at most ``max_blocks`` blocks (sampled) run."""
    if len(inputs) != len(p.inputs): raise EmuError(f"program takes {len(p.inputs)} inputs, got {len(inputs)}")
    for a, b in zip(inputs, p.inputs):
        if np.asarray(a).size != b.size: raise EmuError(f"input {b.name}: expected {b.size} elements, got {np.asarray(a).size}")
    r = _Run(p, list(inputs), sample_blocks(p.blocks, max_blocks) if blocks is None else np.asarray(blocks))
    for w in r.block(p.body, np.ones((len(r.env[p.block]), p.threads, 1), dtype=bool)):   # a wait outside warp roles
        raise EmuError(f"hang: waiting on mbarrier {w.bar}[{w.index}] whose arrivals never come (no other warp role runs)")
    od = p.output.dtype
    out = dt.to_storage(cast_values(r.out, od), od) if od.is_float else r.out.astype(od.np)
    return EmuResult(out.reshape(p.output.shape), r.written.reshape(p.output.shape), r.c)


__all__ = ["run_program", "EmuResult", "EmuError", "Counters", "sample_blocks", "BANK_BYTES"]

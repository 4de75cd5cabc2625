"""The analytic cost model, written once.

Every formula is a function of an arithmetic backend ``B`` (``max``, ``min``, ``ceil``,
``floor``, ``log2``, ``select_le``) and of ``Vars``, the per-axis level sizes of a
schedule. With ``NUMERIC`` and plain numbers it returns seconds as a float (BEAM,
reports, fidelity); with the Z3 backend of ``search.z3opt`` and finite-choice values it
returns the same quantity as Z3 terms, so the solver and the reports cannot disagree.

CPU: time = launch + per-worker start + max(compute, memory) + a part of the smaller
(overlap is never perfect), where compute is the
busiest worker's chunks x per-chunk cycles, and per-chunk cycles =
max(ALU issue, load/store issue) + loop overhead. ALU issue is scaled by SIMD use
(vector width / lanes) and by ILP (independent accumulators / FMA chain), penalized by
register spills; loads per step follow the register tile's reuse; memory traffic is
each chunk's footprint, inflated when the chunk's working set overflows the cache.

GPU: time = launch + max(compute, DRAM, L2, load path, latency), with occupancy from threads
and registers, waves (and their tail) over SMs, latency of each thread's serial steps,
uncoalesced sectors, lanes wasted by partial warps and the split-reduce combine. The load
path counts the cache lines each warp-wide load looks up: where the lanes sit (``Vars.stride``:
a split reduce whose threads each walk a chunk puts every lane on its own line) and how wide
each lane's load is (the renderer's merged vectors, or scalar under a vector on another axis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

from ..ir import dtype as dt
from ..ir.kernel import Kernel
from ..ir.node import ALU, Ops
from ..ir.node import axis_stride
from ..ir.schedule import Level, Schedule, Split, vector_axis

# ALU ops that cost more than one issue slot per lane (transcendentals run as short
# polynomial sequences).
OP_WEIGHT = {Ops.EXP2: 8.0, Ops.LOG2: 8.0, Ops.SIN: 16.0, Ops.SQRT: 4.0, Ops.RECIP: 4.0}
# ... of which these run lane by lane on a CPU whatever the vector width (measured: a
# 16-lane exp-sum is no faster than a scalar one)
LANE_OPS = frozenset({Ops.EXP2, Ops.LOG2, Ops.SIN})


# ---- arithmetic backends ----------------------------------------------------------
class Numeric:
    """Plain floats."""
    @staticmethod
    def max(a, b): return a if a >= b else b
    @staticmethod
    def min(a, b): return a if a <= b else b
    @staticmethod
    def ceil(a): return float(math.ceil(a - 1e-9))
    @staticmethod
    def floor(a): return float(math.floor(a + 1e-9))
    @staticmethod
    def log2(a): return math.log2(a)
    @staticmethod
    def select_le(x, c, a, b):
        """``a`` if ``x <= c`` else ``b``."""
        return a if x <= c else b
    @staticmethod
    def cases(choice, fn):
        """``fn`` of a discrete choice (the solver's backend: of each option, selected)."""
        return fn(choice)


NUMERIC = Numeric()


# ---- what the model knows about a kernel --------------------------------------------
FAR_BYTES = 1024   # an index step this long leaves the prefetcher's current stream
@dataclass(frozen=True)
class Access:
    """How one buffer (an input, or the output) is touched."""
    itemsize: int
    axes: frozenset[int]     # axes its index uses
    contig: int | None       # axis whose unit step moves the index by one element
    output: bool = False
    far: frozenset[int] | None = None   # axes whose step jumps FAR_BYTES or more (None: all of them)

    def streams(self, ext: Sequence) -> Any:
        """Separate memory streams walked at once over the extents ``ext``: one per step of
        the far axes (near ones, like a convolution window's rows, stay in one stream)."""
        return _prod(ext[a] for a in sorted(self.axes if self.far is None else self.far) if a != self.contig)


@dataclass(frozen=True)
class Facts:
    sizes: tuple[int, ...]
    reduce: tuple[bool, ...]
    work: float              # weighted ALU ops over the whole iteration space
    accesses: tuple[Access, ...]
    vector_axis: int | None
    itemsize: int            # of the output (SIMD lanes are counted in it)
    rows: tuple[int, ...] = ()   # a row kernel's row axes (its REDUCEs fold them)
    passes: int = 1              # passes over each row: one per REDUCE, one to store
    lane_work: float = 0.0       # the part of ``work`` in LANE_OPS
    fused: bool = False          # the reduction folds products (its chain is one FMA per step)

    @property
    def outs(self) -> list[int]: return [a for a, r in enumerate(self.reduce) if not r]
    @property
    def reds(self) -> list[int]: return [a for a, r in enumerate(self.reduce) if r]
    @property
    def points(self) -> int: return math.prod(self.sizes)


def facts(k: Kernel) -> Facts:
    """The kernel's sizes, weighted work and buffer access patterns."""
    inner = set(k.reduce.src[0].toposort()) if k.reduce else set()
    work = lane = 0.0
    for n in k.body.toposort():
        idx = n.dtype is dt.int32 and any(s.op is Ops.VAR for s in n.toposort())
        if (n.op in ALU and n.dtype is not dt.bool_ and not idx) or n.op is Ops.REDUCE:
            w = OP_WEIGHT.get(n.op, 1.0)
            work += w * (k.points if (n in inner or n.op is Ops.REDUCE) else k.out_points)
            if n.op in LANE_OPS: lane += w * (k.points if n in inner else k.out_points)
    acc: list[Access] = []
    for i, b in enumerate(k.inputs):
        loads = [l for l in k.loads if l.arg == i]
        axes = frozenset(v.arg[0] for l in loads for v in l.src[0].toposort() if v.op is Ops.VAR)
        acc.append(Access(b.dtype.itemsize, axes, _contig(loads[0].src[0], axes, k) if loads else None,
                          far=_far(loads[0].src[0], axes, k, b.dtype.itemsize) if loads else None))
    out_axes = frozenset(v.arg[0] for v in k.store.toposort() if v.op is Ops.VAR)
    acc.append(Access(k.output.dtype.itemsize, out_axes, _contig(k.store, out_axes, k), output=True))
    rows = tuple(k.row_axes)
    return Facts(tuple(a.size for a in k.axes), tuple(a.reduce for a in k.axes), work, tuple(acc),
                 vector_axis(k), k.output.dtype.itemsize, rows, 1 + len(k.reduces) if rows else 1, lane,
                 k.reduce is not None and k.reduce.src[0].op is Ops.MUL)


def _far(expr, axes, k: Kernel, itemsize: int) -> frozenset[int]:
    far = set()
    for a in axes:
        st = axis_stride(expr, a, k.axes[a].size)
        if st is None or abs(st) * itemsize >= FAR_BYTES: far.add(a)
    return frozenset(far)


def _contig(expr, axes, k: Kernel) -> int | None:
    for a in sorted(axes, reverse=True):
        if axis_stride(expr, a, k.axes[a].size) == 1: return a
    return None


# ---- the model's view of a schedule -------------------------------------------------
@dataclass(frozen=True)
class Vars:
    """Per axis the size at each level (numbers, or Z3 finite-choice values)."""
    grid: tuple
    thread: tuple
    loop: tuple
    upcast: tuple
    unroll: tuple
    vector: Any
    workers: Any
    order: Any = ()          # loop order: a tuple (() = axis order), or the solver's choice among orders
    stride: tuple = ()       # per axis the elements between adjacent threads' indices (``lane_stride``)

    def padded(self, a: int): return self.grid[a] * self.thread[a] * self.loop[a] * self.upcast[a] * self.unroll[a]


def lane_stride(option: Sequence[Split]) -> int:
    """Elements between adjacent threads' indices along an axis split as ``option``: the
    product of the pieces inside its THREAD piece (a LOOP there gives each thread its own
    chunk, so a warp's lanes land that far apart), 1 without threads."""
    at = next((i for i, p in enumerate(option) if p.level is Level.THREAD), None)
    return 1 if at is None else math.prod(p.size for p in option[at + 1:])


def vars_of(s: Schedule) -> Vars:
    n = range(len(s.splits))
    lv = lambda level: tuple(float(s.size(a, level)) for a in n)  # noqa: E731
    return Vars(lv(Level.GRID), lv(Level.THREAD), lv(Level.LOOP), lv(Level.UPCAST), lv(Level.UNROLL),
                float(s.vector), float(s.workers), s.order, tuple(float(lane_stride(o)) for o in s.splits))


# ---- parameters -----------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """Model constants beyond the Target's ceilings; ``machine.notes['cost']`` overrides."""
    freq: float = 3.0e9            # CPU core clock (Hz), derived from the peak when absent
    fma_pipes: float = 2.0
    fma_latency: float = 8.0       # cycles: chains needed = pipes x latency (16 measured to fill AVX-512 pipes)
    add_latency: float = 2.0       # one add/max step of a chain (a one-row fp32 sum: ~1.5-2 cycles per element;
                                   # 2 ranks 50 timed rowsum schedules best, fidelity-cpu-1core.json)
    vregs: float = 32.0            # vector registers
    loads_per_cycle: float = 2.0
    stores_per_cycle: float = 1.0
    loop_cycles: float = 1.5       # per executed innermost loop body
    max_body: float = 512.0        # weighted ALU ops of one unrolled innermost body
    overlap_loss: float = 0.25     # share of the smaller of compute and memory time not hidden
    gather_cost: float = 2.0       # load slots per lane of a gathered (strided) vector
    max_streams: float = 8.0       # rows one register tile may walk at once at full speed
    l1_bytes: float = 32 * 1024.0  # an input's slice for one register tile beyond this streams from L2
    l2_load_cost: float = 2.0      # load slots per load served by L2
    cache_bytes: float = 1.0 * 2**20   # per core, the level chunks are blocked for
    l3_bytes: float = 16.0 * 2**20     # shared last level: a kernel's data this small stays there between runs
    l3_bw_factor: float = 4.0          # L3 bandwidth / DRAM bandwidth
    worker_s: float = 2e-5         # waking one more worker thread (a parallel region)
    lane_cost: float = 4.0         # a lane-by-lane transcendental's cost over its OP_WEIGHT (an exp-sum:
                                   # ~12 cycles per element measured on one core, any vector width)
    # GPU
    base_regs: float = 24.0
    mem_latency_s: float = 1.3e-7  # one serial step of a thread's loop: a global round trip, partly overlapped with
                                   # the next step's loads (500 ns overrated long loops 4-6x: rank-fitted to the H100
                                   # fidelity sample of bench/results/h100-2026-11-23c, seed 0)
    sm_bw_share: float = 2.0       # one SM draws up to this many 1/cores shares of DRAM bandwidth (a grid of fewer
                                   # blocks than SMs streams at blocks x share / cores of it; fitted with mem_latency_s)
    l2_bw_factor: float = 3.0      # L2 bandwidth / DRAM bandwidth
    sector_bytes: float = 32.0
    combine_s: float = 4e-8        # one shared-memory combine step of a split reduce, per partial a thread holds
                                   # (rank-fitted with l1_lines_per_cycle to the H100 fidelity samples of seeds 0-2:
                                   # bench/results/h100-2026-11-23c, h100-2026-12-06c)
    l1_lines_per_cycle: float = 0.5   # cache lines (128 B) an SM's load path serves per cycle


def params(machine) -> Params:
    p = Params()
    if machine.has("threads"):  # a host CPU: its clock from its FMA peak
        lanes32 = max(1, machine.simd_bytes // 4)
        p = replace(p, freq=machine.flops_fp32 / max(1, machine.cores) / (p.fma_pipes * lanes32 * 2))
    extra = (getattr(machine, "notes", None) or {}).get("cost", {})
    known = {f.name for f in fields(Params)}
    return replace(p, **{k: float(v) for k, v in extra.items() if k in known})


# ---- the model ------------------------------------------------------------------------
def _prod(xs) -> Any:
    out: Any = 1.0
    for x in xs: out = x * out
    return out


def time(B, f: Facts, x: Vars, machine, p: Params) -> Any:
    """Modeled seconds of schedule ``x`` (numbers or Z3 terms, following ``B``)."""
    return gpu_time(B, f, x, machine, p) if machine.is_simt else cpu_time(B, f, x, machine, p)


def _footprint(acc: Access, ext: Sequence) -> Any:
    """Elements of a buffer touched while the axes run over the extents ``ext``."""
    return _prod(ext[a] for a in sorted(acc.axes))


def _nest(f: Facts, order: tuple[int, ...]) -> list[int]:
    """The output axes' serial loops inside a chunk, outer -> inner (reduce loops run inside
    them: the space keeps reduce axes innermost)."""
    return [a for a in (order or range(len(f.sizes))) if not f.reduce[a]]


def _levels(f: Facts, x: Vars, nest: list[int], padded: list) -> list:
    """Bytes one iteration of each loop of ``nest`` touches: entry i is the working set of
    loops nest[i:] at full extent (outer output loops at one register tile, reduce axes
    whole); the last entry is one register tile's panels."""
    out = []
    for i in range(len(nest) + 1):
        inner = set(nest[i:])
        ext = [padded[a] / x.grid[a] if f.reduce[a] or a in inner else x.upcast[a] for a in range(len(f.sizes))]
        ws = 0.0
        for acc in f.accesses: ws = ws + _footprint(acc, ext) * float(acc.itemsize)
        out.append(ws)
    return out


def _reuse_cost(B, acc: Access, x: Vars, nest: list[int], levels: list, p: Params) -> Any:
    """Load slots per load of ``acc``: its panel for a register tile comes back on the next
    iteration of the innermost (non-trivial) loop it does not depend on; from L1 when what
    one iteration touches fits L1, else from L2. Without such a loop it only streams (the
    prefetchers hide it: its traffic is counted in memory time)."""
    cost: Any = 1.0
    for i, a in enumerate(nest):   # outer -> inner: the innermost such loop decides
        if a not in acc.axes:
            cost = B.select_le(x.loop[a], 1.0, cost, B.select_le(levels[i + 1], p.l1_bytes, 1.0, p.l2_load_cost))
    return cost


def _chunk_traffic(B, acc: Access, f: Facts, x: Vars, nest: list[int], levels: list, padded: list,
                   cache: float) -> Any:
    """Elements of ``acc`` one chunk moves from memory: one register tile's panel, grown loop
    by loop outwards; a loop the buffer does not depend on re-reads it unless what one
    iteration of that loop touches stays in ``cache``."""
    ext = [padded[a] / x.grid[a] if f.reduce[a] else x.upcast[a] for a in range(len(f.sizes))]
    t = _footprint(acc, ext)
    for i in reversed(range(len(nest))):
        a = nest[i]
        t = t * (x.loop[a] if a in acc.axes else B.select_le(levels[i + 1], cache, 1.0, x.loop[a]))
    return t


def _across_chunks(B, acc: Access, f: Facts, x: Vars, ws: Any, t: Any, cache: float) -> Any:
    """Traffic of ``acc`` over all chunks, from ``t`` for one. Chunks run in block order (the
    last axis' chunks fastest, a worker's chunks consecutive): the next chunk finds what it
    shares with this one (``acc`` does not depend on that axis) still cached when one
    chunk's working set ``ws`` fits ``cache``."""
    for a in reversed(f.outs):
        t = t * (x.grid[a] if a in acc.axes else B.select_le(ws, cache, 1.0, x.grid[a]))
        ws = ws * x.grid[a]
    return t


def cpu_time(B, f: Facts, x: Vars, machine, p: Params) -> Any:
    """Modeled seconds on a CPU. What depends on the loop order ``x.order`` (cache reuse of
    loads, re-read traffic) is evaluated per order (``B.cases``: the solver's choice)."""
    outs, reds, n = f.outs, f.reds, len(f.sizes)
    chunks = _prod(x.grid[a] for a in outs)
    rounds = B.ceil(chunks / x.workers)                 # chunks of the busiest worker
    tile = _prod(x.upcast[a] for a in outs)
    unroll = _prod(x.unroll[a] for a in reds)
    padded = [x.padded(a) for a in range(n)]
    waste = _prod(padded[a] / f.sizes[a] for a in range(n))   # masked points still issued
    steps = _prod(x.loop[a] * x.grid[a] for a in range(n))      # innermost bodies executed
    lanes = max(1.0, machine.simd_bytes / f.itemsize)
    core_ops = machine.flops_fp32 / max(1, machine.cores) / p.freq  # ops per cycle per core
    vec = x.vector
    spill = B.max(1.0, (tile / vec + (2.0 if reds or f.rows else 0.0)) / p.vregs)
    # an unrolled body past the instruction cache / decoder's comfort runs slower
    body = tile * unroll / vec * (f.work / f.points)
    # transcendentals run lane by lane whatever the vector width (their code does not
    # vectorize), each a scalar sequence ``lane_cost`` times its vector weight
    alu_cycles = (f.work - f.lane_work + f.lane_work * p.lane_cost * vec) * waste * spill * (lanes / vec) / core_ops * \
        B.max(1.0, body / p.max_body)
    if reds or f.rows:   # an accumulator's updates wait on each other: a few chains leave the FMA pipes idle
        alu_cycles = B.max(alu_cycles, f.points * waste / tile * (p.fma_latency if f.fused else p.add_latency))
    # load slots per innermost body: each input's footprint over the register tile, as
    # vector loads (contiguous along the vector axis), broadcasts (independent of it) or
    # lane-by-lane gathers; dearer when the input's slice for one register tile misses
    # L1, or when the tile walks more rows (streams) at once than L1 and the prefetchers follow
    tile_ext = [x.upcast[a] * x.unroll[a] for a in range(n)]
    levels = {}

    def by_order(fn):   # fn(nest, levels) for the loop order, or each order of the solver's choice
        def one(order):
            nest = _nest(f, order)
            if order not in levels: levels[order] = _levels(f, x, nest, padded)
            return fn(nest, levels[order])
        return B.cases(x.order, one)
    loads = 0.0
    # a padded vector axis masks its lanes at every step (the mask is not uniform): its
    # contiguous loads go lane by lane (a gather's cost), its stores one lane at a time
    va = f.vector_axis
    whole = (lambda a, b: a) if va is None else (lambda a, b: B.select_le(padded[va], float(f.sizes[va]), a, b))
    for acc in f.accesses:
        if acc.output: continue
        per = _footprint(acc, tile_ext)
        if acc.contig is not None and acc.contig == f.vector_axis: per = per * whole(1.0, p.gather_cost * vec) / vec
        elif f.vector_axis in acc.axes: per = per * B.select_le(vec, 1.0, 1.0, p.gather_cost)
        per = per * B.max(1.0, acc.streams(tile_ext) / p.max_streams)
        loads = loads + per * by_order(lambda nest, lv: _reuse_cost(B, acc, x, nest, lv, p))
    out_pts = _prod(padded[a] for a in outs)
    # a row kernel walks each row once per pass (its loads repeat, its stores do not)
    mem_ops = steps * f.passes * loads / p.loads_per_cycle + out_pts * whole(1.0, vec) / vec / p.stores_per_cycle
    cycles = B.max(alu_cycles, mem_ops) + steps * f.passes * p.loop_cycles
    compute_s = rounds * (cycles / chunks) / p.freq
    # traffic: every chunk moves its own share, with the re-reads its loop order causes
    # (a row kernel streams its rows: its re-reads are the passes over a row, _rereads)
    def traffic_of(nest, lv):
        total = 0.0
        for acc in f.accesses:
            t = _chunk_traffic(B, acc, f, x, nest, lv, padded, p.cache_bytes) * float(acc.itemsize) * \
                (1.0 if acc.output else _rereads(B, f, x, p.cache_bytes))
            t = _across_chunks(B, acc, f, x, lv[0], t, p.cache_bytes)
            if not acc.output:   # more rows at once than the prefetchers follow: each stream slows down
                t = t * B.max(1.0, acc.streams(tile_ext) / p.max_streams)
            total = total + t
        return total
    traffic = by_order(traffic_of)
    # compulsory traffic from DRAM (from L3 when the kernel's data stays there between
    # runs); re-reads from L3
    once = sum(math.prod(f.sizes[a] for a in acc.axes) * acc.itemsize for acc in f.accesses)
    l3_bw = p.l3_bw_factor * machine.dram_bw
    memory_s = once / (l3_bw if once <= p.l3_bytes else machine.dram_bw) + (traffic - once) / l3_bw
    busy = B.min(chunks, x.workers)                     # workers that get a chunk
    # compute and memory overlap, never perfectly: the smaller one shows through in part
    # (max + loss x min, written as max and sum: one case split fewer for the solver)
    return machine.launch_s + (busy - 1.0) * p.worker_s + (1.0 - p.overlap_loss) * B.max(compute_s, memory_s) + \
        p.overlap_loss * (compute_s + memory_s)


def gpu_time(B, f: Facts, x: Vars, machine, p: Params) -> Any:
    outs, reds, n = f.outs, f.reds, len(f.sizes)
    blocks = _prod(x.grid[a] for a in range(n))
    threads = _prod(x.thread[a] for a in range(n))
    warps = B.ceil(threads / machine.warp)
    lane_use = threads / (warps * machine.warp)
    tile = _prod(x.upcast[a] for a in outs)
    tile_ext = [x.upcast[a] * x.unroll[a] for a in range(n)]
    live = 0.0
    for acc in f.accesses:
        if not acc.output: live = live + _footprint(acc, tile_ext)
    regs = B.min(float(machine.max_regs_per_thread), p.base_regs + tile + live)
    per_sm = B.min(float(machine.max_blocks_per_sm),
                   B.min(B.floor(machine.max_threads_per_sm / (warps * machine.warp)),
                         B.floor(machine.regs_per_sm / (regs * warps * machine.warp))))
    per_sm = B.max(1.0, per_sm)
    waves = B.ceil(blocks / (per_sm * machine.cores))   # the last wave may be a tail
    padded = [x.padded(a) for a in range(n)]
    waste = _prod(padded[a] / f.sizes[a] for a in range(n))
    chains = tile * per_sm * warps                      # independent work per SM
    issue = B.min(1.0, chains / 64.0)
    slots_per_wave = per_sm * machine.cores
    compute_s = waves * slots_per_wave * (f.work * waste / blocks) / (machine.flops_fp32 * issue * lane_use)
    # a thread's serial steps each wait one memory round trip
    t_red = _prod(x.thread[a] for a in reds or f.rows)
    steps = _prod(x.loop[a] for a in range(n))
    combines = f.passes - 1.0 if f.rows else 1.0        # a row kernel combines once per REDUCE
    held = _prod(x.upcast[a] for a in outs if a not in f.rows)   # partials each thread combines per step
    latency_s = waves * (steps * f.passes * p.mem_latency_s + combines * B.log2(t_red) * held * p.combine_s)
    # traffic: every block reads its footprint through L2; DRAM sees each buffer once
    blk_ext = [padded[a] / x.grid[a] for a in range(n)]
    l2, dram = 0.0, 0.0
    for i, acc in enumerate(f.accesses):
        c = acc.contig
        if c is None: run = 1.0
        else:
            inner = _prod(x.thread[a] for a in range(n) if _thread_rank(f, a) > _thread_rank(f, c))
            run = x.upcast[c] * B.select_le(inner, 1.0, x.thread[c], 1.0)
        coalesce = B.min(1.0, run * acc.itemsize / p.sector_bytes)
        again = 1.0 if acc.output else _rereads(B, f, x, p.l1_bytes)  # a row's later passes, from L1 or L2
        l2 = l2 + blocks * _footprint(acc, blk_ext) * acc.itemsize / coalesce * again
        dram = dram + _prod(float(f.sizes[a]) for a in sorted(acc.axes)) * acc.itemsize
    # a grid of fewer blocks than SMs draws only its SMs' share of the bandwidth
    busy_share = B.min(1.0, p.sm_bw_share * B.min(blocks, float(machine.cores)) / machine.cores)
    memory_s = B.max(dram / machine.dram_bw, l2 / (p.l2_bw_factor * machine.dram_bw)) / busy_share
    # the SM's load path: cache lines looked up per warp-wide load, over the busiest SM's blocks
    lines = 0.0
    for acc in f.accesses:
        if not acc.output: lines = lines + _load_lines(B, f, x, acc, machine.warp)
    l1_s = B.ceil(blocks / machine.cores) * warps * lines / (machine.sm_clock() * p.l1_lines_per_cycle)
    return machine.launch_s + B.max(B.max(B.max(compute_s, memory_s), l1_s), latency_s)


LINE_BYTES = 128.0


def _load_lines(B, f: Facts, x: Vars, acc: Access, warp: int) -> Any:
    """Cache lines one thread's loads of ``acc`` cost its warp: the warp-wide loads it issues
    (its register tile over the loops, in vectors of the width the renderer merges) times
    the lines each touches. A warp's lanes spread over the thread axes fastest first:
    lanes along an axis the access does not use share a line, lanes along its contiguous
    axis sit ``stride`` elements apart, lanes along another axis it uses each read their own."""
    n = len(f.sizes)
    rem, lines = float(warp), 1.0
    for a in sorted(range(n), key=lambda a: -_thread_rank(f, a)):
        la = B.min(x.thread[a], rem)
        rem = rem / la
        if a not in acc.axes: continue
        if a == acc.contig: lines = lines * B.min(la, B.ceil(la * x.stride[a] * acc.itemsize / LINE_BYTES))
        else: lines = lines * la
    elems = _prod(x.loop[a] * x.upcast[a] * x.unroll[a] for a in sorted(acc.axes))
    w = _lane_width(B, f, x, acc)
    # ... and at least the cycles its lanes' data take through the 128-byte path
    return elems * f.passes / w * B.max(lines, warp * w * acc.itemsize / LINE_BYTES)


def _lane_width(B, f: Facts, x: Vars, acc: Access) -> Any:
    """Elements of ``acc`` one lane loads at once: the register run along its contiguous axis
    up to 16 bytes (the renderer merges an unrolled block's neighbouring loads), or the
    vector width on the vector axis; a vector on another axis the access uses leaves its
    loads scalar (each lane's elements are per vector lane, not neighbours)."""
    c = acc.contig
    if c is None: return 1.0
    run = B.min(16.0 / acc.itemsize, x.upcast[c] * x.unroll[c])
    va = f.vector_axis
    if va is None or va not in acc.axes: return run
    return B.select_le(x.vector, 1.0, run, x.vector if va == c else 1.0)


def _thread_rank(f: Facts, a: int) -> int:
    """Position of axis ``a`` in the thread index (higher = faster varying): output axes
    outer, reduce axes inner, as ``ir.lower`` lays them out."""
    order = [o for o in f.outs if o not in f.rows] + list(f.rows) + f.reds
    return order.index(a)


def _rereads(B, f: Facts, x: Vars, cache: float) -> Any:
    """Times a row kernel reads its inputs: once when the rows one thread (block) works on
    at a time fit in ``cache`` (later passes hit it), once per pass when they do not."""
    if not f.rows: return 1.0
    ext = [x.padded(a) if a in f.rows else x.upcast[a] * x.thread[a] for a in range(len(f.sizes))]
    live = 0.0
    for acc in f.accesses:
        if not acc.output: live = live + _footprint(acc, ext) * float(acc.itemsize)
    return B.select_le(live, cache, 1.0, float(f.passes))


# ---- numeric entry points --------------------------------------------------------------
def modeled_time(kernel: Kernel, schedule: Schedule, machine, f: Facts | None = None, p: Params | None = None) -> float:
    """Modeled seconds of ``schedule`` for ``kernel`` on ``machine`` (``p``: other constants
    for the SIMT model than the machine's)."""
    if schedule.tensor_core is not None:  # not in the symbolic model yet: its own numeric model
        from .tc_cost import time_s
        return time_s(kernel, schedule, machine)
    if schedule.staging and machine.is_simt:  # a staged SIMT GEMM (ir/lower_staged.py): its own numeric model
        from .staged_cost import time_s as staged_s
        return staged_s(kernel, schedule, machine)
    return float(time(NUMERIC, f or facts(kernel), vars_of(schedule), machine, p or params(machine)))


def roofline_s(kernel: Kernel, machine) -> float:
    """Lower bound: the larger of peak-rate compute and compulsory traffic."""
    return max(kernel.flops / machine.flops_fp32, kernel.min_bytes / machine.dram_bw)

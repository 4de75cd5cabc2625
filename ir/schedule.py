"""``Schedule``: how a kernel's loop nest is mapped onto a machine.

One type whoever made it (Z3, BEAM, hand rules) and whichever backend runs it.
Per axis, an ordered list of splits (outer -> inner) over the levels below; the index
along the axis is the mixed-radix number formed by the pieces. A product larger than
the axis size pads the axis and guards the excess.

With ``tensor_core`` set, the M/N/K axes follow the convention of ``ir/tensorcore.py``
(THREAD there counts warps of the target's ``warp`` threads; UPCAST is a warp's tile) and ``staging``
gives the shared layout of each operand tile (pad, XOR swizzle of 16-byte units).
``staging`` without a tensor core is the shared-memory staged SIMT GEMM of fp32 GEMMs and
convolutions (its axis convention and layouts: ``ir/lower_staged.py``).

With ``family`` set (e.g. ``"hvx_gemm"``), the kernel is done by a native kernel template of
that schedule family (``ir/native.py``): ``params`` are the family's own decisions (named
integers: blocking, unroll, pipeline depth), the splits stay the plain loop nest. Both are
written to JSON only when set, so every older schedule keeps its version-1 JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from . import geometry_staged, wgmma
from . import tensorcore as tcm
from .target import Target

SCHEDULE_VERSION = 1


class Level(str, Enum):
    GRID = "grid"      # GPU blocks / CPU parallel chunks shared by `workers` threads
    THREAD = "thread"  # GPU threads of a block (on a reduce axis: split reduce across threads)
    LOOP = "loop"      # serial loop
    UPCAST = "upcast"  # register tile, fully unrolled, separate accumulators (output axes)
    UNROLL = "unroll"  # unrolled loop (reduce axes)


@dataclass(frozen=True)
class Split:
    level: Level
    size: int


@dataclass(frozen=True)
class TensorCore:
    """A matrix instruction and which kernel axes feed its M, N, K. ``m_outer``: more
    output axes flattened into M outside ``m_axis`` (outer -> inner), e.g. a conv's
    (image, row) around its pixel column (ir/tensorcore.py). ``producer``: warp
    specialization (wgmma with TMA operands only): one more warp, after the THREAD warps,
    issues every stage's copies while the THREAD warps (the consumer warpgroups) compute
    (ir/lower_wgmma.py); written to JSON only when set."""
    instr: str  # e.g. "mma.m16n8k16.f16.f32"
    m_axis: int
    n_axis: int
    k_axis: int
    m_outer: tuple[int, ...] = ()
    producer: bool = False

    def __post_init__(self):
        object.__setattr__(self, "m_outer", tuple(self.m_outer))  # JSON gives a list
        if not isinstance(self.producer, bool): raise ValueError(f"tensor_core producer must be true or false, not {self.producer!r}")

    def to_dict(self) -> dict[str, Any]:
        d = vars(self).copy()
        if not self.producer: del d["producer"]
        return d


@dataclass(frozen=True)
class Staging:
    """Input ``input`` staged in shared memory with a layout. ``tma``: the tile is copied
    by TMA (one thread's bulk tensor copies, completion on an mbarrier a stage; wgmma
    schedules on sm_90 only, see ir/tma.py) instead of every thread's copies of
    ``vector`` elements. Written to JSON only when set, so schedules without it keep
    their version-1 JSON; a reader that predates it rejects it as malformed."""
    input: int
    pad: int = 0        # elements appended to each row
    swizzle: int = 0    # XOR swizzle bits (of the 16-byte unit index)
    vector: int = 1     # elements per global->shared copy
    shift: int = 0      # the unit index bits XORed in start here (ir/tensorcore.smem_offset)
    tma: bool = False   # copied by TMA (cp.async.bulk.tensor) with mbarriers

    def to_dict(self) -> dict[str, Any]:
        d = vars(self).copy()
        if not self.tma: del d["tma"]
        return d


@dataclass(frozen=True)
class Schedule:
    splits: tuple[tuple[Split, ...], ...]
    order: tuple[int, ...] = ()     # axes' serial loops, outer -> inner; () = axis order
    vector: int = 1                 # SIMD lanes along the output's contiguous axis upcast
    workers: int = 1                # CPU threads
    tensor_core: TensorCore | None = None
    staging: tuple[Staging, ...] = ()
    stages: int = 1                 # software pipeline depth of staged copies
    version: int = field(default=SCHEDULE_VERSION)
    family: str = ""                # a native kernel template's family ("" = the loop nest itself)
    params: tuple[tuple[str, int], ...] = ()   # that family's decisions, sorted by name

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(sorted((str(k), v) for k, v in self.params)))

    def param(self, name: str, default: int | None = None) -> int:
        """One of the family's decisions (``default`` if absent; KeyError without one)."""
        for k, v in self.params:
            if k == name: return v
        if default is None: raise KeyError(f"schedule has no parameter {name!r}")
        return default

    # ---- construction helpers ------------------------------------------------
    @staticmethod
    def naive(kernel) -> "Schedule":
        """Every axis a plain serial loop."""
        return Schedule(tuple((Split(Level.LOOP, a.size),) for a in kernel.axes))

    def size(self, axis: int, level: Level) -> int:
        return math.prod(s.size for s in self.splits[axis] if s.level is level)

    def threads(self, warp: int | None = None) -> int:
        """Threads per block (with a tensor core, THREAD pieces count warps of ``warp`` lanes,
        the target's, and a producer warp comes on top)."""
        tc = self.tensor_core
        if tc and warp is None: raise ValueError("a tensor-core schedule's threads need the target's warp size")
        per = warp if tc else 1
        return math.prod(self.size(a, Level.THREAD) for a in range(len(self.splits))) * per + \
            (per if tc and tc.producer else 0)
    def blocks(self) -> int: return math.prod(self.size(a, Level.GRID) for a in range(len(self.splits)))
    def upcast(self) -> int: return math.prod(self.size(a, Level.UPCAST) for a in range(len(self.splits)))

    def with_axis(self, axis: int, splits: tuple[Split, ...]) -> "Schedule":
        return replace(self, splits=self.splits[:axis] + (tuple(splits),) + self.splits[axis + 1:])

    def loop_order(self) -> tuple[int, ...]:
        return self.order or tuple(range(len(self.splits)))

    # ---- serialization -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version,
                             "splits": [[[s.level.value, s.size] for s in ax] for ax in self.splits]}
        if self.order: d["order"] = list(self.order)
        if self.vector != 1: d["vector"] = self.vector
        if self.workers != 1: d["workers"] = self.workers
        if self.tensor_core: d["tensor_core"] = self.tensor_core.to_dict()
        if self.staging: d["staging"] = [s.to_dict() for s in self.staging]
        if self.stages != 1: d["stages"] = self.stages
        if self.family: d["family"] = self.family
        if self.params: d["params"] = {k: v for k, v in self.params}
        return d

    def to_json(self) -> str: return json.dumps(self.to_dict(), separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Schedule":
        if not isinstance(d, dict): raise ValueError("schedule must be a JSON object")
        if d.get("version") != SCHEDULE_VERSION:
            raise ValueError(f"unsupported schedule version {d.get('version')!r} (this superopt reads {SCHEDULE_VERSION})")
        try:
            if not isinstance(d["splits"], list): raise ValueError("splits must be a list of axes")
            splits = tuple(tuple(Split(Level(lv), _count(n, "split size")) for lv, n in ax) for ax in d["splits"])
            return Schedule(splits, tuple(_count(a, "order entry", 0) for a in d.get("order", ())),
                            _count(d.get("vector", 1), "vector"), _count(d.get("workers", 1), "workers"),
                            TensorCore(**d["tensor_core"]) if d.get("tensor_core") else None,
                            tuple(_staging(s) for s in d.get("staging", ())), _count(d.get("stages", 1), "stages"),
                            family=_family(d.get("family", "")), params=_params(d.get("params", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed schedule: {e}") from None

    @staticmethod
    def from_json(s: str) -> "Schedule":
        if len(s) > MAX_JSON_CHARS: raise ValueError(f"schedule JSON is {len(s)} characters (at most {MAX_JSON_CHARS})")
        if _depth(s) > MAX_JSON_DEPTH: raise ValueError(f"schedule JSON nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            return Schedule.from_dict(json.loads(s))
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"schedule is not valid JSON: {e}") from None

    def describe(self, kernel=None) -> str:
        parts = []
        for i, ax in enumerate(self.splits):
            tag = ("r" if kernel is not None and kernel.axes[i].reduce else "o") + str(i)
            parts.append(f"{tag}: " + " x ".join(f"{s.level.value} {s.size}" for s in ax))
        extra = [f"order {list(self.order)}"] if self.order else []
        if self.vector > 1: extra.append(f"vector {self.vector}")
        if self.workers > 1: extra.append(f"workers {self.workers}")
        if self.tensor_core: extra.append(f"tensor core {self.tensor_core.instr}" + (" + producer warp" if self.tensor_core.producer else ""))
        if self.staging:
            def lay(st: Staging) -> str:
                return (f" pad {st.pad}" if st.pad else "") + (f" swizzle {st.swizzle}@{st.shift}" if st.swizzle else "") + \
                    (" tma" if st.tma else "")
            extra.append("staged " + ", ".join(f"in{st.input}{lay(st)}" for st in self.staging))
        if self.stages > 1: extra.append(f"stages {self.stages}")
        if self.family:
            extra.append(f"family {self.family}" + "".join(f" {k}={v}" for k, v in self.params))
        return "; ".join(parts + extra)


MAX_JSON_CHARS = 1 << 20
MAX_JSON_DEPTH = 16


def _depth(s: str) -> int:
    """Deepest bracket nesting of a JSON text (outside strings), found without parsing it."""
    depth = best = 0
    in_str = esc = False
    for ch in s:
        if in_str:
            if esc: esc = False
            elif ch == "\\": esc = True
            elif ch == '"': in_str = False
        elif ch == '"': in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}": depth -= 1
    return best


def _count(v: Any, what: str, least: int = 1) -> int:
    """A whole number from JSON: 512.9, "512" and true are refused, not truncated or coerced."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise ValueError(f"{what} must be an integer, not {v!r}")
    n = v.__index__()
    if n < least: raise ValueError(f"{what} must be >= {least}, not {n}")
    return n


MAX_PARAMS = 32
MAX_PARAM = 1 << 30


def _family(v: Any) -> str:
    """A family name from JSON: a short identifier, never anything that could reach generated code."""
    if not isinstance(v, str) or len(v) > 32 or not all(c.isalnum() or c == "_" for c in v):
        raise ValueError(f"family must be a short identifier, not {v!r:.60}")
    return v


def _params(v: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(v, dict) or len(v) > MAX_PARAMS: raise ValueError(f"params must be an object of at most {MAX_PARAMS} integers")
    out = []
    for k, n in v.items():
        _family(k)
        n = _count(n, f"param {k}", 0)
        if n > MAX_PARAM: raise ValueError(f"param {k} = {n} is larger than {MAX_PARAM}")
        out.append((k, n))
    return tuple(out)


def _staging(d: dict[str, Any]) -> Staging:
    st = Staging(**d)
    if not isinstance(st.tma, bool): raise ValueError(f"staging tma must be true or false, not {st.tma!r}")
    return st


def check(kernel, s: Schedule, machine: Target) -> list[str]:
    """Every reason ``s`` is illegal for ``kernel`` on target ``machine`` (empty: legal).
    The one legality check shared by every producer of schedules; it counts resources from
    the schedule's geometry and never lowers."""
    errs: list[str] = []
    if s.version != SCHEDULE_VERSION: errs.append(f"schedule version {s.version}, expected {SCHEDULE_VERSION}")
    if len(s.splits) != len(kernel.axes):
        return errs + [f"schedule has {len(s.splits)} axes, kernel has {len(kernel.axes)}"]
    for i, (ax, sp) in enumerate(zip(kernel.axes, s.splits)):
        if not sp: errs.append(f"axis {i}: no splits"); continue  # noqa: E702
        if any(p.size < 1 for p in sp): errs.append(f"axis {i}: split sizes must be >= 1")
        levels = [p.level for p in sp]
        if len(set(levels)) != len(levels): errs.append(f"axis {i}: a level appears twice")
        prod = math.prod(p.size for p in sp)
        if prod < ax.size: errs.append(f"axis {i}: splits cover {prod} < size {ax.size}")
        if prod >= 2 * ax.size and prod > ax.size + 64:
            errs.append(f"axis {i}: splits pad {ax.size} to {prod} (too much waste)")
        if ax.reduce and Level.UPCAST in levels: errs.append(f"axis {i}: reduce axes unroll, they do not upcast")
        if ax.reduce and Level.GRID in levels and s.size(i, Level.GRID) > 1:
            errs.append(f"axis {i}: splitting a reduction across the grid (split-K) is not supported yet")
        if not machine.is_simt and Level.THREAD in levels and s.size(i, Level.THREAD) > 1:
            errs.append(f"axis {i}: thread level exists on GPUs only (SIMT targets)")
        if i in getattr(kernel, "row_axes", ()) and s.size(i, Level.GRID) > 1:
            errs.append(f"axis {i}: a row axis stays in one block (its REDUCEs fold it), no grid split")
    if sorted(s.loop_order()) != list(range(len(kernel.axes))): errs.append(f"order {s.order} is not a permutation of the axes")
    if s.order and getattr(kernel, "row_axes", None): errs.append("row kernels take no loop order (rows outside, passes over the row inside)")
    threads = s.threads(machine.warp)
    if threads > machine.max_threads: errs.append(f"{threads} threads per block > {machine.max_threads}")
    tile = s.upcast() // (machine.warp if s.tensor_core else 1)  # a warp's tile is spread over its lanes
    if tile > machine.max_upcast: errs.append(f"register tile {tile} > {machine.max_upcast}")
    unroll = math.prod(s.size(a, Level.UNROLL) for a in range(len(s.splits)))
    if s.tensor_core is None and unroll * s.upcast() > 4 * machine.max_upcast:
        errs.append(f"unroll x upcast {unroll * s.upcast()} too large")
    if s.workers < 1 or (machine.has("threads") and s.workers > machine.cores):
        errs.append(f"workers {s.workers} not in 1..{machine.cores}")
    widths = (1, 2, 4, 8, 16, 32) if machine.has("hvx") else (1, 2, 4, 8, 16)  # HVX: 32 int32 lanes = 128 B
    if s.vector not in widths: errs.append(f"vector width {s.vector} not in {','.join(map(str, widths))}")
    elif s.vector > 1:
        errs += _check_vector(kernel, s)
    tc_ok = s.tensor_core is not None and machine.has("mma.sync")
    if s.tensor_core is not None and not tc_ok: errs.append(f"tensor cores exist on GPUs only ({machine.name} has no mma.sync)")
    elif tc_ok and tcm.warp_fits(machine): errs.append(f"tensor core: {tcm.warp_fits(machine)}")
    if s.staging and not machine.is_simt: errs.append("shared-memory staging exists on GPUs only (SIMT targets)")
    tma = [st.input for st in s.staging if st.tma]
    if tma and (s.tensor_core is None or not s.tensor_core.instr.startswith("wgmma.")):
        errs.append(f"input {tma[0]}: TMA copies feed wgmma schedules only (sm_90a)")
    if tc_ok and not tcm.warp_fits(machine): errs += _check_tensor_core(kernel, s, machine)
    elif s.tensor_core is None and s.staging and machine.is_simt:  # the SIMT GEMM staged through shared memory
        errs += geometry_staged.check(kernel, s, machine)
    if s.stages < 1 or s.stages > 8: errs.append(f"stages {s.stages} not in 1..8")
    if s.params and not s.family: errs.append("schedule parameters without a family")
    if s.family:
        from .native import check as check_native   # the family's geometry and parameter rules
        errs += check_native(kernel, s, machine)
    if not errs and machine.is_simt and s.tensor_core is None and not s.staging and getattr(kernel, "row_axes", ()):
        errs += _check_row_shared(kernel, s, machine)
    return errs


def _check_row_shared(kernel, s: Schedule, machine) -> list[str]:
    """A row kernel's partials meet in shared memory: they must fit one block. The renderer
    may fold a warp's partials with shuffles instead (backends/cuda/shuffle.py), so this
    count errs on the side of refusing."""
    limit = machine.smem_per_block
    used = row_shared_bytes(kernel, s, machine.warp)
    return [f"shared memory {used} B > {limit} B per block (row partials: threads x rows x lanes)"] if limit and used > limit else []


def row_shared_bytes(kernel, s: Schedule, warp: int) -> int:
    """Shared bytes the row-kernel lowering (``ir.lower``, ``_row_total``) allocates for
    ``s`` on a target of ``warp`` lanes, counted from the schedule: per REDUCE of ``rdt``,
    with ``nrow`` rows in a thread's tile, ``T`` threads, ``L`` vector lanes and ``tr``
    threads sharing a row, 16-byte aligned buffers of
      lanes  T x nrow x L  (the vector lanes' partials, when the vector axis is a row axis)
      red    T x nrow x L  (the threads' partials, when tr > 1)
      mid    T/w x nrow x L  (the warps' totals, when tr is a multiple w of the warp past it)
      bc     T/tr x nrow x L  (the row's broadcast total, when tr > 1)."""
    rows = set(kernel.row_axes)
    if not rows or s.tensor_core is not None or s.staging: return 0
    threads, lanes = s.threads(), s.vector
    tr = math.prod(s.size(a, Level.THREAD) for a in kernel.reduce_axes or kernel.row_axes)
    vaxis = vector_axis(kernel) if lanes > 1 else None
    nrow = 1   # the tile's rows: its UPCAST slots off the row axes (the vector axis' last piece counts lanes)
    for a in range(len(kernel.axes)):
        if a in rows: continue
        for j, p in enumerate(s.splits[a]):
            if p.level is Level.UPCAST: nrow *= p.size // lanes if a == vaxis and j == len(s.splits[a]) - 1 else p.size
    cells = threads * nrow * lanes if lanes > 1 and vaxis in rows else 0
    if tr > 1:
        fold = warp if tr > warp and tr % warp == 0 else tr
        cells_red = threads * nrow * lanes
        cells_mid = threads // fold * nrow * lanes if fold != tr else 0
        cells_bc = threads // tr * nrow * lanes
    else:
        cells_red = cells_mid = cells_bc = 0
    size = lambda n, d: -(-n * d.itemsize // 16) * 16 if n else 0  # noqa: E731  (Shared.nbytes)
    return sum(size(c, red.dtype) for red in kernel.reduces for c in (cells, cells_red, cells_mid, cells_bc))


def vector_axis(kernel) -> int | None:
    """The output axis whose unit step moves the store by one element, if any."""
    from .node import axis_stride
    for a in kernel.output_axes:
        if axis_stride(kernel.store, a, kernel.axes[a].size) == 1: return a
    return None


def _check_vector(kernel, s: Schedule) -> list[str]:
    """The vector axis ends in an upcast the width divides. It may be padded: the lanes
    past the axis end are masked (loads read nothing, stores skip them; a predicated
    vector store where the backend has one)."""
    a = vector_axis(kernel)
    if a is None: return [f"vector width {s.vector}: the output has no contiguous axis"]
    sp = s.splits[a]
    if sp[-1].level is not Level.UPCAST or sp[-1].size % s.vector:
        return [f"vector width {s.vector}: axis {a} must end in an upcast that it divides"]
    return []


def _check_tensor_core(kernel, s: Schedule, machine) -> list[str]:
    tc = s.tensor_core
    if wgmma.is_wgmma(tc.instr):  # Hopper warpgroup MMA: its own geometry (ir/wgmma.py)
        return wgmma.check(kernel, s, machine)
    if tc.instr not in tcm.INSTRS: return [f"unknown tensor-core instruction {tc.instr!r} (know {sorted(tcm.INSTRS)})"]
    if tc.producer: return ["a producer warp feeds wgmma schedules only (sm_90a)"]
    if s.vector != 1 or s.order: return ["tensor-core schedules take no vector width or loop order"]
    m = tcm.match_tc(kernel, tc)
    if isinstance(m, str): return [f"tensor core: {m}"]
    if m.dtype is not tcm.INSTRS[tc.instr]: return [f"tensor core: {tc.instr} takes {tcm.INSTRS[tc.instr].name} operands, not {m.dtype.name}"]
    errs = [f"axis {a}: batch axes of a tensor-core schedule are GRID only" for a in m.batch
            if any(p.level is not Level.GRID and p.size > 1 for p in s.splits[a])]
    t = tcm.tiles(kernel, s, machine.warp)
    if isinstance(t, str): return errs + [f"tensor core: {t}"]
    by_input = {st.input: st for st in s.staging}
    if sorted(by_input) != sorted([m.a.input, m.b.input]) or len(s.staging) != 2:
        return errs + ["tensor core: both operands must be staged exactly once"]
    smem = 0
    for op, outer in ((m.a, t.bm), (m.b, t.bn)):
        st = by_input[op.input]
        rows, width = tcm.tile_shape(op, outer, t.bk)
        if op is m.a and op.k_major and st.vector > 1 and t.m_ext[-1] % st.vector:
            errs.append(f"input {op.input}: 16-byte copies along M need an inner M extent of {st.vector}s, not {t.m_ext[-1]}")
        if st.vector not in (1, op.vec): errs.append(f"input {op.input}: staged copies are 1 element" + (f" or {op.vec} (16 bytes)" if op.vec > 1 else " (unaligned operand)"))
        if width & (width - 1): errs.append(f"input {op.input}: tile rows of {width} elements (a power of two is needed)")
        if st.pad % tcm.UNIT or st.pad < 0: errs.append(f"input {op.input}: pad {st.pad} is not a multiple of {tcm.UNIT}")
        if st.swizzle and (st.shift < st.swizzle or (rows * width // tcm.UNIT) % (1 << st.swizzle)):
            errs.append(f"input {op.input}: swizzle {st.swizzle} bits at shift {st.shift} is not a bijection of the tile")
        if (rows * width // max(1, st.vector)) % t.threads: errs.append(f"input {op.input}: {rows}x{width} tile is not a whole number of copies per thread")
        smem += rows * (width + st.pad) * 2
    smem *= s.stages
    if smem > machine.smem_per_block: errs.append(f"shared memory {smem} B > {machine.smem_per_block} B per block")
    return errs

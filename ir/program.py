"""``Program``: a kernel lowered for one schedule — what every backend renders or emulates.

A Program is explicit about everything the schedule decided; a backend makes no
scheduling choice of its own.

Execution model (GPU-like, a CPU runs it too)
---------------------------------------------
- ``blocks`` independent blocks; each has ``threads`` threads; each thread executes
  ``body`` once. On a CPU ``threads == 1`` and ``workers`` OS threads share the blocks
  in contiguous chunks (at most one worker per block).
- Within a thread, each statement runs for ``lanes`` SIMD lanes in lockstep (``lanes``
  is the schedule's vector width, 1 when scalar). Every expression is evaluated per
  lane; an expression that does not depend on the lane variable is lane-uniform.
  Loop bounds, ``If`` conditions, register and shared-memory *array sizes* are uniform;
  values stored in registers are per lane (a register element is ``lanes`` wide).
- The block, thread and lane indices are the ``SPECIAL`` nodes ``special("block",
  blocks)``, ``special("thread", threads)``, ``special("lane", lanes)`` (see
  ``Program.block``/``.thread``/``.lane``). Loop variables are ``SPECIAL`` nodes too,
  with any other name (unique in the program).

Expressions are ``Node``s (ir/node.py). Inside a Program they use:
- ``LOAD(index, valid)`` arg=input slot: a global read of ``inputs[slot]`` (element
  index; a load whose valid is false reads nothing and yields 0), exactly as in Kernel;
- ``REG(index)`` arg=name: read element ``index`` of the thread's register array;
- ``SHARED(index)`` arg=name: read element ``index`` of the block's shared buffer;
- ``SPECIAL`` indices, ``CONST`` and ALU ops. Never ``VAR`` (kernel axes are gone) and
  never ``REDUCE`` (reductions are explicit register updates).

Vector memory access is implicit in the index: a load/store whose index has stride 1 in
the lane variable and whose valid is lane-uniform is a vector access of width ``lanes``;
stride 0 is a broadcast; anything else a gather/scatter. ``lane_stride`` is the one
classifier every backend uses.

Statements: ``Loop`` (serial, or ``unroll=True``: fully unrolled by the backend, see
``unrolled``), ``If``, ``Reg``/``Assign`` (per-thread register arrays: register tiles
from UPCAST are separate elements with constant indices), ``Store`` (global output
write), ``Shared``/``SharedStore``/``Barrier`` (block-shared memory; ``Barrier`` is
``__syncthreads``: every thread of the block reaches it, so it sits inside an ``If`` only
where the condition is the same for every thread of a block, e.g. the fused attention's
causal key-tile bound). ``lower``
puts every ``Shared`` declaration at the top of ``body`` (allocated once per block).

Reductions split across threads (THREAD level on a reduce axis) are lowered explicitly
to: partial accumulators per thread -> ``SharedStore`` of every partial -> ``Barrier``
-> ``If(reduce-thread index == 0)`` which folds the other threads' partials read with
``SHARED`` and stores the output. No special construct: backends only need shared
memory and barriers (a CUDA renderer may still pattern-match it into warp shuffles).

Tensor-core statements (GEMM schedules with ``Schedule.tensor_core``; lane layouts in
``ir/tensorcore.py``). Threads are grouped in warps of the target's ``warp`` consecutive threads; these
statements are executed by every thread of the block (never inside ``If`` except
``SharedCopy``):
- ``SharedCopy``: each thread copies ``width`` consecutive elements (16 bytes) of an input
  to a shared buffer; ``async_`` copies (``cp.async``) land only when a ``CopyWait``
  allows: ``CopyCommit`` closes the group of copies issued so far, ``CopyWait(n)`` waits
  until at most ``n`` committed groups are still in flight (then a ``Barrier`` publishes
  them to the other threads);
- ``FragLoad`` (``ldmatrix.x4``): lanes 8j..8j+7 give the shared element index of the
  rows of matrix j; register array ``name`` (16-bit) receives 2 elements per matrix at
  ``offset + 2j``;
- ``Mma``: D = A*B + C on a warp's fragments, in place on fp32 register array ``d``
  (4 elements at ``d_off``), A = 8 elements of ``a`` at ``a_off``, B = 4 of ``b`` at ``b_off``.
Register arrays touched by these are indexed by constants only.

Hopper warpgroup MMA (``TensorCore.instr`` ``wgmma.*``; geometry and descriptors in
``ir/wgmma.py``), executed by every thread of the block (never inside ``If``); a
warpgroup is 4 consecutive warps:
- ``SharedFence`` (``fence.proxy.async.shared::cta``): the thread's earlier shared writes
  become visible to wgmma's operand reads (before the ``Barrier`` that publishes them);
- ``WgmmaFence`` (``wgmma.fence``): orders the warpgroup's register accesses before the
  next ``Wgmma`` (needed before the first and after any other write of its accumulators);
- ``Wgmma``: D (64 x n, fp32 register array ``d`` from ``d_off``, n/2 elements a thread) +=
  A (64 x 16) * B (16 x n), A and B read from shared memory through matrix descriptors:
  the constant fields ``a_desc``/``b_desc`` (LBO, SBO, swizzle mode; start 0) plus the
  address of element ``a_start``/``b_start`` (warpgroup-uniform) of shared buffer
  ``a``/``b``; ``a_trans``/``b_trans``: the operand is MN-major. It is asynchronous:
  the accumulators are undefined and the operands may still be read until a ``WgmmaWait``
  retires it; ``WgmmaCommit`` closes the group of wgmmas issued so far, ``WgmmaWait(n)``
  waits until at most ``n`` groups are in flight.

TMA (bulk tensor copies, sm_90a; geometry in ``ir/tma.py``) with mbarriers:
- ``Mbarriers`` declares ``size`` mbarrier objects (8 bytes each, shared memory), at the top
  of ``body`` like ``Shared``;
- ``MbarInit`` (one thread, inside ``If``): barrier ``index`` expects ``count`` arrivals a
  phase, phase 0 in progress, no transaction bytes due;
- ``MbarArriveTx`` (``mbarrier.arrive.expect_tx``; inside ``If``): each executing thread adds
  ``bytes`` to the barrier's transaction count, then arrives; a phase completes when all its
  arrivals came and every expected byte landed, and the next phase begins;
- ``TmaLoad`` (``cp.async.bulk.tensor``; inside ``If``): each executing thread copies the box
  of ``map`` at ``coords`` (innermost first; elements outside the tensor read as zeros) to
  shared buffer ``name`` from element ``dst``, the box row-major (dimension 0 fastest) with
  the map's swizzle applied to the shared byte addresses; its bytes complete on barrier
  ``index`` of ``bar`` when it lands, at any time until a wait needs them;
- ``MbarWait`` (``mbarrier.try_wait.parity`` in a loop; every thread): waits until the phase
  of parity ``parity`` of barrier ``index`` has completed (passes at once when the barrier's
  current phase has the other parity). Its copies' data is then visible to the waiting
  threads and to wgmma (same async proxy: no ``SharedFence`` needed). ``MbarArriveTx`` with
  ``bytes`` 0 is a plain arrival (``mbarrier.arrive``).

Warp specialization: ``Roles`` holds ``If`` branches on disjoint thread conditions (whole
warpgroups where a branch issues wgmma) that run *concurrently*: each
thread runs the one branch its condition selects (threads in none skip the statement),
and the branches synchronize only through mbarriers, never a ``Barrier``. A branch may
run ahead of the others by as much as its mbarrier waits allow (a producer warp issuing
TMA copies into stages that consumer warpgroups release by arriving on "empty" barriers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator, Union

from . import dtype as dt
from .dtype import DType
from .kernel import Buffer
from .node import Node, Ops, TRUE, const, render, substitute, special


@dataclass(frozen=True)
class Loop:
    """``for var in range(var.size): body`` (``unroll``: the backend unrolls it fully)."""
    var: Node  # SPECIAL (name, size)
    body: tuple["Stmt", ...]
    unroll: bool = False

    @property
    def size(self) -> int: return self.var.arg[1]


@dataclass(frozen=True)
class If:
    """``if cond: body`` (cond lane-uniform)."""
    cond: Node
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Roles:
    """Concurrent branches (warp specialization): see the module docstring."""
    branches: tuple[If, ...]


@dataclass(frozen=True)
class Reg:
    """Declare a per-thread register array ``name[size]`` of ``dtype`` (uninitialized)."""
    name: str
    dtype: DType
    size: int


@dataclass(frozen=True)
class Assign:
    """``name[index] = value`` on a register array (index lane-uniform)."""
    name: str
    index: Node
    value: Node


@dataclass(frozen=True)
class Store:
    """``output[index] = value`` where ``valid`` (value cast to the output dtype)."""
    index: Node
    value: Node
    valid: Node = TRUE


@dataclass(frozen=True)
class Shared:
    """Declare a block-shared buffer ``name[size]`` of ``dtype`` (GPU shared memory)."""
    name: str
    dtype: DType
    size: int

    @property
    def nbytes(self) -> int:
        """Its bytes, 16-byte aligned as buffers are laid out one after another."""
        return -(-self.size * self.dtype.itemsize // 16) * 16


@dataclass(frozen=True)
class SharedStore:
    """``name[index] = value`` on a shared buffer, where ``valid``."""
    name: str
    index: Node
    value: Node
    valid: Node = TRUE


@dataclass(frozen=True)
class Barrier:
    """Every thread of the block waits here (``__syncthreads``); with ``threads`` > 0, the
    named barrier 1 of that many threads: every thread of the ``Roles`` branch it sits in
    (that branch's warps sync among themselves while the other roles run on)."""
    threads: int = 0


@dataclass(frozen=True)
class SharedCopy:
    """``name[dst : dst+width] = inputs[input][src : src+width]`` where ``valid`` (else zeros)."""
    name: str
    dst: Node
    input: int
    src: Node
    width: int
    valid: Node = TRUE
    async_: bool = False


@dataclass(frozen=True)
class CopyCommit:
    """Close the group of asynchronous copies issued so far (``cp.async.commit_group``)."""


@dataclass(frozen=True)
class CopyWait:
    """Wait until at most ``pending`` committed copy groups are in flight."""
    pending: int


@dataclass(frozen=True)
class FragLoad:
    """``ldmatrix.sync.aligned.m8n8.x4[.trans].b16`` from shared ``shared`` (row element
    index ``row`` per thread) into register array ``name`` at ``offset`` (8 elements)."""
    name: str
    offset: int
    shared: str
    row: Node
    trans: bool = False


@dataclass(frozen=True)
class Mma:
    """``mma.sync.aligned.m16n8k16.row.col.f32.<ab>.<ab>.f32``, accumulating in place."""
    instr: str
    d: str
    d_off: int
    a: str
    a_off: int
    b: str
    b_off: int


@dataclass(frozen=True)
class SharedFence:
    """``fence.proxy.async.shared::cta``: this thread's shared writes become visible to wgmma."""


@dataclass(frozen=True)
class WgmmaFence:
    """``wgmma.fence.sync.aligned``: register accesses before it precede the next wgmma."""


@dataclass(frozen=True)
class Wgmma:
    """``wgmma.mma_async.sync.aligned.m64n<n>k16.f32.<ab>.<ab>``, accumulating in place
    (``scale_d`` False: D = A*B, ignoring the old accumulators)."""
    instr: str
    n: int
    d: str
    d_off: int
    a: str
    a_start: Node
    a_desc: int
    a_trans: bool
    b: str
    b_start: Node
    b_desc: int
    b_trans: bool
    scale_d: bool = True


@dataclass(frozen=True)
class WgmmaCommit:
    """Close the group of wgmmas issued so far (``wgmma.commit_group``)."""


@dataclass(frozen=True)
class WgmmaWait:
    """Wait until at most ``pending`` committed wgmma groups are in flight."""
    pending: int


@dataclass(frozen=True)
class TensorMap:
    """A TMA tensor map (``CUtensorMap``, tiled): input ``input`` seen as a tensor of ``dims``
    elements (innermost first) whose dimension d steps by ``strides[d]`` elements (dims[0]: 1)
    from element ``offset``; one copy moves a ``box``; ``swizzle``: the shared-memory
    swizzle span in bytes (0 none, 32, 64, 128; address bits 4.. XOR bits 7..)."""
    input: int
    offset: int
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    box: tuple[int, ...]
    swizzle: int

    @property
    def rank(self) -> int: return len(self.dims)

    @property
    def box_elems(self) -> int: return math.prod(self.box)


@dataclass(frozen=True)
class Mbarriers:
    """Declare ``size`` mbarriers ``name[size]`` (shared memory, 8 bytes each)."""
    name: str
    size: int


@dataclass(frozen=True)
class MbarInit:
    """``mbarrier.init``: barrier ``bar[index]`` expects ``count`` arrivals a phase."""
    bar: str
    index: Node
    count: int


@dataclass(frozen=True)
class MbarArriveTx:
    """``mbarrier.arrive.expect_tx``: expect ``bytes`` more transaction bytes, then arrive."""
    bar: str
    index: Node
    bytes: int


@dataclass(frozen=True)
class MbarWait:
    """Wait until the phase of parity ``parity`` (0/1) of ``bar[index]`` has completed."""
    bar: str
    index: Node
    parity: Node


@dataclass(frozen=True)
class TmaLoad:
    """``cp.async.bulk.tensor``: the box of ``map`` at ``coords`` -> shared ``name`` from
    element ``dst``, completing its bytes on ``bar[index]``."""
    name: str
    dst: Node
    map: TensorMap
    coords: tuple[Node, ...]
    bar: str
    index: Node


@dataclass(frozen=True)
class Native:
    """The whole kernel done by a backend's native template of a schedule family
    (``ir/native.py``): the family, its decided parameters and the geometry the lowering
    recognized (named integers, e.g. a GEMM's m, n, k). A backend without the template
    fails the candidate's compile."""
    family: str
    params: tuple[tuple[str, int], ...]
    geometry: tuple[tuple[str, int], ...]

    def get(self, name: str) -> int:
        return dict(self.params + self.geometry)[name]


Stmt = Union[Native, Loop, If, Roles, Reg, Assign, Store, Shared, SharedStore, Barrier, SharedCopy, CopyCommit, CopyWait, FragLoad, Mma,
             SharedFence, WgmmaFence, Wgmma, WgmmaCommit, WgmmaWait, Mbarriers, MbarInit, MbarArriveTx, MbarWait, TmaLoad]


@dataclass(frozen=True, eq=False)
class Program:
    name: str
    inputs: tuple[Buffer, ...]
    output: Buffer
    blocks: int
    threads: int
    lanes: int
    workers: int
    body: tuple[Stmt, ...]
    kernel: object = None     # the Kernel it came from (metadata only)
    schedule: object = None   # the Schedule it came from (metadata only)

    @property
    def block(self) -> Node: return special("block", self.blocks)
    @property
    def thread(self) -> Node: return special("thread", self.threads)
    @property
    def lane(self) -> Node: return special("lane", self.lanes)

    def walk(self) -> Iterator[Stmt]: return walk(self.body)

    def describe(self) -> str:
        """Readable pseudo-code (for `superopt show`, errors and debugging)."""
        head = f"program {self.name}: blocks {self.blocks} x threads {self.threads} x lanes {self.lanes}" + \
            (f", workers {self.workers}" if self.workers > 1 else "")
        ins = [f"  in{i} {b.name}: {b.dtype.name}[{b.size}]" for i, b in enumerate(self.inputs)]
        return "\n".join([head, *ins, f"  out {self.output.name}: {self.output.dtype.name}[{self.output.size}]",
                          *_describe(self.body, 1)])


def walk(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    """Every statement, depth first, parents before children."""
    for s in body:
        yield s
        if isinstance(s, (Loop, If)):
            yield from walk(s.body)
        elif isinstance(s, Roles):
            yield from walk(s.branches)


def rewrite(p: "Program", f) -> "Program":
    """``p`` with every statement ``x`` but loops, ifs and roles (their bodies are rewritten
    too) replaced by ``f(x)``, dropped where that is None: a bug put in for a test, a part
    cut out for a timing probe."""
    def walk_(stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out = []
        for x in stmts:
            if isinstance(x, Loop): y = Loop(x.var, walk_(x.body), x.unroll)
            elif isinstance(x, If): y = If(x.cond, walk_(x.body))
            elif isinstance(x, Roles): y = Roles(walk_(x.branches))
            else: y = f(x)
            if y is not None: out.append(y)
        return tuple(out)
    return replace(p, body=walk_(p.body))


def unrolled(loop: Loop) -> tuple[Stmt, ...]:
    """The loop body repeated for var = 0..size-1 with the variable substituted."""
    return tuple(subst_stmt(s, {loop.var: const(i, dt.int32)}) for i in range(loop.size) for s in loop.body)


def subst_stmt(s: Stmt, m: dict[Node, Node]) -> Stmt:
    """A statement with nodes replaced in every expression it holds."""
    f = lambda n: substitute(n, m)  # noqa: E731
    if isinstance(s, Loop): return Loop(s.var, tuple(subst_stmt(x, m) for x in s.body), s.unroll)
    if isinstance(s, If): return If(f(s.cond), tuple(subst_stmt(x, m) for x in s.body))
    if isinstance(s, Roles): return Roles(tuple(subst_stmt(b, m) for b in s.branches))
    if isinstance(s, Assign): return Assign(s.name, f(s.index), f(s.value))
    if isinstance(s, Store): return Store(f(s.index), f(s.value), f(s.valid))
    if isinstance(s, SharedStore): return SharedStore(s.name, f(s.index), f(s.value), f(s.valid))
    if isinstance(s, SharedCopy): return SharedCopy(s.name, f(s.dst), s.input, f(s.src), s.width, f(s.valid), s.async_)
    if isinstance(s, FragLoad): return FragLoad(s.name, s.offset, s.shared, f(s.row), s.trans)
    if isinstance(s, Wgmma): return replace(s, a_start=f(s.a_start), b_start=f(s.b_start))
    if isinstance(s, (MbarInit, MbarArriveTx)): return replace(s, index=f(s.index))
    if isinstance(s, MbarWait): return replace(s, index=f(s.index), parity=f(s.parity))
    if isinstance(s, TmaLoad): return replace(s, dst=f(s.dst), coords=tuple(f(c) for c in s.coords), index=f(s.index))
    return s


def tensor_maps(p: "Program") -> list[TensorMap]:
    """The distinct tensor maps of ``p``'s TMA copies, in first-use order (the kernel's
    tensor-map parameters, in this order, after its buffers)."""
    out: list[TensorMap] = []
    for s in p.walk():
        if isinstance(s, TmaLoad) and s.map not in out: out.append(s.map)
    return out


def lane_stride(expr: Node, lane: Node) -> int | None:
    """How ``expr`` moves per lane: 0 (lane-uniform), k (affine, step k), None (irregular
    or not an integer index)."""
    if lane not in expr.toposort(): return 0
    if not expr.dtype.is_int: return None
    vals = [substitute(expr, {lane: const(i, dt.int32)}) for i in range(lane.arg[1])]
    steps = {(b - a).arg if (b - a).op is Ops.CONST else None for a, b in zip(vals, vals[1:])}
    return steps.pop() if len(steps) == 1 else None


def _describe(body: tuple[Stmt, ...], depth: int) -> list[str]:
    pad, out = "  " * depth, []
    for s in body:
        if isinstance(s, Loop):
            out.append(f"{pad}for {s.var.arg[0]} in {s.size}{' (unrolled)' if s.unroll else ''}:")
            out += _describe(s.body, depth + 1)
        elif isinstance(s, If):
            out.append(f"{pad}if {render(s.cond)}:")
            out += _describe(s.body, depth + 1)
        elif isinstance(s, Roles):
            out.append(f"{pad}concurrently (warp roles):")
            out += _describe(s.branches, depth + 1)
        elif isinstance(s, Native):
            out.append(f"{pad}native {s.family}(" + ", ".join(f"{k}={v}" for k, v in s.geometry + s.params) + ")")
        elif isinstance(s, Reg): out.append(f"{pad}reg {s.name}: {s.dtype.name}[{s.size}]")
        elif isinstance(s, Shared): out.append(f"{pad}shared {s.name}: {s.dtype.name}[{s.size}]")
        elif isinstance(s, Assign): out.append(f"{pad}{s.name}[{render(s.index)}] = {render(s.value)}")
        elif isinstance(s, Store):
            out.append(f"{pad}out[{render(s.index)}] = {render(s.value)}" + ("" if s.valid is TRUE else f"  if {render(s.valid)}"))
        elif isinstance(s, SharedStore):
            out.append(f"{pad}{s.name}[{render(s.index)}] = {render(s.value)}" + ("" if s.valid is TRUE else f"  if {render(s.valid)}"))
        elif isinstance(s, Barrier): out.append(f"{pad}barrier" + (f" of {s.threads} threads" if s.threads else ""))
        elif isinstance(s, SharedCopy):
            out.append(f"{pad}{s.name}[{render(s.dst)} +: {s.width}] = in{s.input}[{render(s.src)} +: {s.width}]"
                       + (" async" if s.async_ else "") + ("" if s.valid is TRUE else f"  if {render(s.valid)}"))
        elif isinstance(s, CopyCommit): out.append(f"{pad}copy commit")
        elif isinstance(s, CopyWait): out.append(f"{pad}copy wait <= {s.pending} pending")
        elif isinstance(s, FragLoad):
            out.append(f"{pad}{s.name}[{s.offset} +: 8] = ldmatrix.x4{'.trans' if s.trans else ''} {s.shared}[{render(s.row)}]")
        elif isinstance(s, Mma):
            out.append(f"{pad}{s.d}[{s.d_off} +: 4] += {s.instr}({s.a}[{s.a_off} +: 8], {s.b}[{s.b_off} +: 4])")
        elif isinstance(s, SharedFence): out.append(f"{pad}fence shared -> async proxy")
        elif isinstance(s, WgmmaFence): out.append(f"{pad}wgmma fence")
        elif isinstance(s, Wgmma):
            out.append(f"{pad}{s.d}[{s.d_off} +: {s.n // 2}] {'+' if s.scale_d else ''}= wgmma m64n{s.n}k16 "
                       f"{s.a}@[{render(s.a_start)}]{'^T' if s.a_trans else ''} desc {s.a_desc:#x}, "
                       f"{s.b}@[{render(s.b_start)}]{'^T' if s.b_trans else ''} desc {s.b_desc:#x}")
        elif isinstance(s, WgmmaCommit): out.append(f"{pad}wgmma commit")
        elif isinstance(s, WgmmaWait): out.append(f"{pad}wgmma wait <= {s.pending} pending")
        elif isinstance(s, Mbarriers): out.append(f"{pad}mbarriers {s.name}[{s.size}]")
        elif isinstance(s, MbarInit): out.append(f"{pad}mbarrier init {s.bar}[{render(s.index)}] arrivals {s.count}")
        elif isinstance(s, MbarArriveTx):
            out.append(f"{pad}mbarrier arrive {s.bar}[{render(s.index)}]" + (f" expect {s.bytes} bytes" if s.bytes else ""))
        elif isinstance(s, MbarWait): out.append(f"{pad}mbarrier wait {s.bar}[{render(s.index)}] parity {render(s.parity)}")
        elif isinstance(s, TmaLoad):
            m = s.map
            out.append(f"{pad}{s.name}[{render(s.dst)} +: {m.box_elems}] = tma in{m.input} box {list(m.box)} at "
                       f"[{', '.join(render(c) for c in s.coords)}] swizzle {m.swizzle}B -> {s.bar}[{render(s.index)}]")
    return out

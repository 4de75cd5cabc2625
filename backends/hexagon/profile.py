"""Kernel-level VLIW cycles: which packets ran how often, priced by the model.

qemu-hexagon logs every translation block it translates with its instructions
(``-d in_asm``: qemu's own disassembler) and every execution (``exec``, chaining off, so
each execution is logged). A translation block is a run of packets ending at a control
transfer.
Every executed block of the kernel is then priced twice under ``search/vliw.py``:
LLVM's own packets replayed in order (stalls included), and the Z3 packing of the same
instructions (straight-line; for a block that loops on itself also the modulo schedule;
a block of more than ``vliw.MAX_SOLVE`` instructions is packed window by window and
not pipelined). Execution counts are real (from the run); only the per-packet costs are modeled.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ...search import vliw
from ..base import Failure
from . import tools

KERNEL_SYMBOLS = ("block_", "so_kernel")
_SOLVED: dict = {}   # (instruction texts, upper, kind) -> PackResult: blocks recur across candidates
WINDOW = 32          # instructions per pack model in a block larger than vliw.MAX_SOLVE


def _solve(kind: str, instrs: list, upper: int, timeout_s: float, packets: list | None = None):
    """``vliw.pack`` / ``vliw.modulo`` of a block, cached; a block too large for one pack
    model (``packets`` given) is packed window by window (``vliw.pack_windows``)."""
    key = (kind, tuple(i.text for i in instrs), upper)
    if key not in _SOLVED:
        if kind == "pack" and packets is not None and len(instrs) > vliw.MAX_SOLVE:
            t0 = time.perf_counter()
            new, proved = vliw.pack_windows(packets, timeout_s, WINDOW)
            _SOLVED[key] = vliw.PackResult(vliw.replay(new), len(new), [], False, time.perf_counter() - t0,
                                           notes=[f"windows of {WINDOW}", "windows proved" if proved else ""])
        else:
            _SOLVED[key] = (vliw.pack if kind == "pack" else vliw.modulo)(instrs, timeout_s, upper=upper)
    return _SOLVED[key]
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2}\s){4}\s*[0-9a-f]{8}\s+(.*)$")


@dataclass
class Trace:
    counts: Counter                           # translation block pc -> executions
    blocks: dict[int, list[tuple[int, list[str]]]]  # pc -> packets (packet pc, instruction texts)
    loops: set[int]                           # blocks whose last packet branches back to their start


def trace(exe: Path, stdin: bytes, timeout: float = 120.0) -> Trace | Failure:
    """Run under qemu logging each translated block's instructions (``in_asm``, qemu's
    own Hexagon disassembler, HVX included) and each execution (``exec``, chaining off)."""
    t = tools.find_tools()
    if t is None: return Failure("launch", tools.missing_message())
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "exec.log"
        try:
            r = subprocess.run([t.qemu, "-d", "in_asm,nochain,exec", "-D", str(log), str(exe)], input=stdin,
                               capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Failure("timeout", f"profiled run longer than {timeout:.0f}s")
        if r.returncode: return Failure("crash", f"exit status {r.returncode}")
        return _parse(log.read_text(errors="replace"))


_INSN = re.compile(r"^0x([0-9a-f]+):\s+0x[0-9a-f]+\s+(.*)$")


def _parse(text: str) -> Trace:
    counts: Counter = Counter()
    blocks: dict[int, list[tuple[int, list[str]]]] = {}
    loops: set[int] = set()
    sym, cur, pk, pk_pc, start = None, None, None, None, None
    for line in text.splitlines():
        if line.startswith("IN: "):
            sym, cur, pk, start = line[4:].strip(), [], None, None
            continue
        if line.startswith("Trace"):
            parts = line.split()
            if parts[-1] in KERNEL_SYMBOLS: counts[int(parts[3].strip("[]").split("/")[1], 16)] += 1
            continue
        m = _INSN.match(line.strip())
        if not m or cur is None or sym not in KERNEL_SYMBOLS: continue
        pc, body = int(m.group(1), 16), m.group(2)
        if start is None:
            start = pc
            blocks[start] = cur
        if "{" in body or pk is None:
            pk, pk_pc = [], pc
            body = body.split("{", 1)[-1]
        end = "}" in body
        pk += [x.strip() for x in body.split("}", 1)[0].split(";") if x.strip()]
        if end:
            cur.append((pk_pc, pk))
            tail = body.split("}", 1)[1]
            jm = re.search(r"jump(?::\w+)?\s+pc\+(-?\d+)", " ".join(pk).lower())
            if "endloop" in tail or (jm and pk_pc + int(jm.group(1)) == start): loops.add(start)
            pk = None
    return Trace(counts, blocks, loops)


@dataclass
class KernelCycles:
    llvm_packets: int            # packets LLVM's code issued (dynamic count)
    llvm_cycles: int             # the same sequence replayed under the model (stalls included)
    z3_cycles: int               # every executed block repacked by Z3
    z3_pipelined_cycles: int     # self-looping blocks at their modulo-schedule II
    hot_loop: dict = field(default_factory=dict)  # the most executed self-loop: per-iteration figures
    solve_s: float = 0.0
    blocks: int = 0


def model(exe: Path, stdin: bytes, timeout_s: float = 2.0) -> KernelCycles | Failure:
    tr = trace(exe, stdin)
    if isinstance(tr, Failure): return tr
    t0 = time.perf_counter()
    lp = lc = zc = zp = 0
    hot: dict = {}
    for pc, n in tr.counts.items():
        if pc not in tr.blocks: continue
        blk = [vliw.classify_packet(p) for _, p in tr.blocks[pc]]
        instrs = [i for p in blk for i in p]
        if not instrs: continue
        llvm = vliw.replay(blk)
        ours = _solve("pack", instrs, llvm, timeout_s, blk)
        lp += n * len(blk)
        lc += n * llvm
        zc += n * ours.packets
        if n > 1 and pc in tr.loops:
            pipe = _solve("modulo", instrs, ours.packets, timeout_s)
            zp += n * pipe.ii + max(0, ours.packets - pipe.ii)
            if n > hot.get("executions", 0):
                hot = {"pc": hex(pc), "executions": n, "instructions": len(instrs), "llvm_packets": len(blk),
                       "llvm_cycles": vliw.steady_cycles(blk), "z3_cycles": ours.packets,
                       "z3_issued": ours.issued if ours.issued >= 0 else len(blk),
                       "z3_ii": pipe.ii, "proved": ours.proved and pipe.proved}
        else:
            zp += n * ours.packets
    return KernelCycles(lp, lc, zc, zp, hot, time.perf_counter() - t0, len(tr.counts))


def static_loops(source: str, timeout_s: float = 2.0) -> list[dict] | Failure:
    """Every innermost loop of the kernel in ``clang -S`` output: clang's packets per
    iteration (and their modeled cycles) next to the Z3 packing and modulo schedule of
    the same instructions."""
    asm = tools.assembly(source)
    if isinstance(asm, Failure): return asm
    rows = []
    for lp in vliw.innermost_loops(asm):
        if lp.function not in KERNEL_SYMBOLS: continue
        llvm = vliw.replay(lp.packets)
        ours = _solve("pack", lp.instrs, llvm, timeout_s, lp.packets)
        pipe = _solve("modulo", lp.instrs, ours.packets, timeout_s)
        rows.append({"label": lp.label, "instructions": len(lp.instrs), "hvx": lp.hvx,
                     "clang_packets": len(lp.packets), "clang_cycles": llvm, "clang_steady_cycles": vliw.steady_cycles(lp.packets),
                     "z3_packets": ours.issued if ours.issued >= 0 else len(lp.packets), "z3_cycles": ours.packets, "z3_ii": pipe.ii,
                     "proved": ours.proved and pipe.proved, "solve_s": round(ours.solve_s + pipe.solve_s, 2)})
    return rows

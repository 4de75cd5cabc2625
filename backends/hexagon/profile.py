"""Kernel-level VLIW cycles: which packets ran how often, priced by the model.

qemu-hexagon logs every translation block it executes (``-d nochain,exec``: chaining
off, so each execution is logged). A translation block is a run of packets ending at a
control transfer; its packets come from ``llvm-objdump -d`` of the same executable.
Every executed block of the kernel is then priced twice under ``search/vliw.py``:
LLVM's own packets replayed in order (stalls included), and the Z3 packing of the same
instructions (straight-line; for a block that loops on itself also the modulo schedule).
Execution counts are real (from the run); only the per-packet costs are modeled.
"""
from __future__ import annotations

import glob
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from superopt.search import vliw
from ..base import Failure
from . import tools

KERNEL_SYMBOLS = ("block_", "so_kernel")
_SOLVED: dict = {}   # (instruction texts, upper, kind) -> PackResult: blocks recur across candidates


def _solve(kind: str, instrs: list, upper: int, timeout_s: float):
    key = (kind, tuple(i.text for i in instrs), upper)
    if key not in _SOLVED:
        _SOLVED[key] = (vliw.pack if kind == "pack" else vliw.modulo)(instrs, timeout_s, upper=upper)
    return _SOLVED[key]
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2}\s){4}\s*[0-9a-f]{8}\s+(.*)$")


def objdump() -> str | None:
    """llvm-objdump (Debian: package llvm, or any versioned install)."""
    return shutil.which("llvm-objdump") or next(iter(sorted(glob.glob("/usr/lib/llvm-*/bin/llvm-objdump"))), None)


def disassemble(exe: Path) -> dict[int, tuple[list[str], bool]]:
    """pc of each packet -> (instruction texts, ends a translation block)."""
    tool = objdump()
    if tool is None: raise RuntimeError("llvm-objdump not found")
    text = subprocess.run([tool, "-d", str(exe)], capture_output=True, text=True, timeout=120).stdout
    packets: dict[int, tuple[list[str], bool]] = {}
    cur: list[str] = []
    start = None
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m: continue
        pc, body = int(m.group(1), 16), m.group(2)
        if "{" in body:
            start, cur = pc, []
            body = body.split("{", 1)[1]
        end = "}" in body
        part = body.split("}", 1)[0]
        cur += [x.strip() for x in part.split(";") if x.strip()]
        if end and start is not None:
            tail = body.split("}", 1)[1]
            ends = "endloop" in tail or any(re.search(r"\b(jump|jumpr|call|callr|trap0|dealloc_return)\b", i) for i in cur)
            packets[start] = ([i for i in cur if i], ends)
            start = None
    return packets


def block_at(packets: dict[int, tuple[list[str], bool]], pc: int) -> list[list[str]]:
    """The packets of the translation block starting at ``pc``."""
    pcs = sorted(packets)
    out = []
    for p in pcs[pcs.index(pc):]:
        instrs, ends = packets[p]
        out.append(instrs)
        if ends or len(out) >= 256: break
    return out


def tb_counts(exe: Path, stdin: bytes, timeout: float = 120.0) -> Counter | Failure:
    """Executions of each translation block of the kernel's functions."""
    t = tools.find_tools()
    if t is None: return Failure("launch", tools.missing_message())
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "exec.log"
        try:
            r = subprocess.run([t.qemu, "-d", "nochain,exec", "-D", str(log), str(exe)], input=stdin,
                               capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Failure("timeout", f"profiled run longer than {timeout:.0f}s")
        if r.returncode: return Failure("crash", f"exit status {r.returncode}")
        counts: Counter = Counter()
        with open(log) as f:
            for line in f:
                if not line.startswith("Trace"): continue
                parts = line.split()
                if parts[-1] in KERNEL_SYMBOLS:
                    counts[int(parts[3].strip("[]").split("/")[1], 16)] += 1
    return counts


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
    counts = tb_counts(exe, stdin)
    if isinstance(counts, Failure): return counts
    packets = disassemble(exe)
    t0 = time.perf_counter()
    lp = lc = zc = zp = 0
    hot: dict = {}
    for pc, n in counts.items():
        if pc not in packets: continue
        blk = [vliw.classify_packet(p) for p in block_at(packets, pc)]
        instrs = [i for p in blk for i in p]
        if not instrs: continue
        llvm = vliw.replay(blk)
        ours = _solve("pack", instrs, llvm, timeout_s)
        lp += n * len(blk)
        lc += n * llvm
        zc += n * ours.packets
        loops_to_self = n > 1 and _self_loop(packets, pc, blk)
        if loops_to_self:
            pipe = _solve("modulo", instrs, ours.packets, timeout_s)
            zp += n * pipe.ii + max(0, ours.packets - pipe.ii)
            if n > hot.get("executions", 0):
                hot = {"pc": hex(pc), "executions": n, "instructions": len(instrs), "llvm_packets": len(blk),
                       "llvm_cycles": vliw.steady_cycles(blk), "z3_cycles": ours.packets, "z3_issued": ours.issued if ours.issued >= 0 else len(blk),
                       "z3_ii": pipe.ii,
                       "proved": ours.proved and pipe.proved}
        else:
            zp += n * ours.packets
    return KernelCycles(lp, lc, zc, zp, hot, time.perf_counter() - t0, len(counts))


def _self_loop(packets, pc: int, blk) -> bool:
    """A block that branches back to its own start (hardware loop or jump)."""
    pcs = sorted(packets)
    last_pc = pcs[pcs.index(pc) + len(blk) - 1]
    last = packets[last_pc][0]
    return any(hex(pc)[2:] in i for i in last) or _endloop_to(pc, packets, last_pc)


def _endloop_to(pc: int, packets, last_pc: int) -> bool:
    # objdump marks ``:endloop0`` after the packet; the loop start is the loop0() target
    return packets[last_pc][1] and not any(re.search(r"\bjump", i) for i in packets[last_pc][0])


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
        ours = _solve("pack", lp.instrs, llvm, timeout_s)
        pipe = _solve("modulo", lp.instrs, ours.packets, timeout_s)
        rows.append({"label": lp.label, "instructions": len(lp.instrs), "hvx": lp.hvx,
                     "clang_packets": len(lp.packets), "clang_cycles": llvm, "clang_steady_cycles": vliw.steady_cycles(lp.packets),
                     "z3_packets": ours.issued if ours.issued >= 0 else len(lp.packets), "z3_cycles": ours.packets, "z3_ii": pipe.ii,
                     "proved": ours.proved and pipe.proved, "solve_s": round(ours.solve_s + pipe.solve_s, 2)})
    return rows

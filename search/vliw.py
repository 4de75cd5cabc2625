"""HVX (Hexagon V66, 128-byte mode) VLIW machine description and a Z3 packet scheduler.

Machine description (sources):
- Packets hold up to 4 instructions in slots 0-3 (Hexagon V66 Programmer's Reference
  Manual, 80-N2040-42, "Instruction packets"; "Instruction classes": ALU32 any slot,
  XTYPE and J slots 2/3, LD/ST slots 0/1, CR slot 3).
- HVX execution resources: load, store, shift, permute (xlane) and two multipliers;
  "double vector" instructions take a pair (both multipliers, or shift + permute)
  (Hexagon V66 HVX Programmer's Reference Manual, 80-N2040-44, "VLIW packing rules";
  the same split appears as the CVI_LD/CVI_ST/CVI_SHIFT/CVI_XLANE/CVI_MPY0/CVI_MPY1
  units and the per-class slot lists of LLVM's HexagonDepIICHVX.td itineraries, whose
  comments name the classes used below: VA = any one of the four compute units, VA_DV
  = a pair, VX = one multiplier in slot 2/3, VX_DV = both multipliers, VS = shift,
  VRMPYV = vector x vector vrmpy accumulate, VSPLAT = vsplat/vinsert,
  VP = permute, VP_VS = permute + shift, aligned LOAD in slot 0/1, STORE in slot 0,
  unaligned load/store in slot 0 blocking slot 1 and using the permute unit).
  The HVX classes' slots and units are *read* from those itineraries, copied in
  ``search/data/hvx_v66.tsv`` (default) and ``hvx_v73.tsv`` (``use_cpu("v73")``), one
  representative opcode a class (``_REPRESENTATIVE``). From the v66 table: a vector x
  vector ``vrmpy`` accumulate takes both multipliers (one on v73), the Rt form one; an
  aligned ``vmem`` load or store takes its load/store unit plus any one compute unit;
  ``vsplat``/``vinsert`` take slot 2/3 and a multiplier; ``.new`` stores only the store
  unit. A constant extender (``##``, or a constant too wide for the field) takes a slot;
  a ``.new`` consumer sits in its producer's packet; a solo instruction (``trap0``,
  ``barrier``, ...) sits alone.
- Latency (HVX PRM, "Instruction latency"): an HVX result is usable by the next packet,
  except by an *early source* operand (the inputs of a multiply other than its
  accumulator, the shifted/counted input of a shift, the permuted input of a permute,
  unaligned store data): that consumer interlocks for one packet unless a packet
  separates it from its producer. Scalar loads and multiplies are modeled at 2 packets
  (LLVM's V66 scalar itineraries); other scalar results at 1. ``.new`` operands are read
  in the producer's packet (latency 0). Reads happen before writes within a packet, so
  a write-after-read pair may share a packet.

The scheduler takes a straight-line block (a loop body) as parsed ``Instr``s, builds its
dependence DAG and asks Z3 for the fewest packets (cycles, stalls included as empty
packets) and, for loops, the smallest initiation interval of a modulo schedule
(software pipelining). A block of more than ``MAX_SOLVE`` instructions is packed window
by window (``pack_windows``: runs of clang's packets repacked, kept only where the whole
replays no slower). ``replay`` prices an existing packet sequence (clang's) under the
same model so both are measured with one ruler.
"""
from __future__ import annotations

import ctypes
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import z3

from . import vliw_bounds, vliw_list

SLOTS = 4
MAX_SOLVE = 64   # instructions per block handed to Z3; larger blocks are packed window by window
UNITS = ("ld", "st", "mpy0", "mpy1", "shift", "xlane")
_ANY1 = (("mpy0",), ("mpy1",), ("shift",), ("xlane",))
_PAIR = (("mpy0", "mpy1"), ("shift", "xlane"))
_DATA = Path(__file__).with_name("data")
# resource names of LLVM's Hexagon itineraries -> the units one stage takes together
_TSV_UNITS = {"CVI_LD": ("ld",), "CVI_ST": ("st",), "CVI_MPY0": ("mpy0",), "CVI_MPY1": ("mpy1",),
              "CVI_SHIFT": ("shift",), "CVI_XLANE": ("xlane",), "CVI_MPY01": ("mpy0", "mpy1"),
              "CVI_XLSHF": ("xlane", "shift")}


@dataclass(frozen=True)
class IClass:
    """Slot and HVX-unit needs of one instruction class."""
    name: str
    slots: tuple[int, ...]
    units: tuple[tuple[str, ...], ...] = ((),)  # alternatives, each a set of units taken together
    noslot1: bool = False                        # occupies slot 0 and blocks slot 1
    early: bool = False                          # its vector inputs are early sources
    latency: int = 1                             # packets until the result is usable
    hvx: bool = False


def itineraries(cpu: str = "v66") -> dict[str, tuple[tuple[int, ...], bool, tuple[tuple[str, ...], ...]]]:
    """LLVM opcode -> (slots, blocks slot 1, unit alternatives) from ``data/hvx_<cpu>.tsv``
    (LLVM's Hexagon itineraries: each ``[c1:A|B nextN]`` stage takes one of its resources;
    two single-slot stages SLOT0 then SLOT1 mean slot 0 with slot 1 blocked)."""
    if cpu in _ITIN: return _ITIN[cpu]
    out = {}
    for line in (_DATA / f"hvx_{cpu}.tsv").read_text().splitlines():
        if line.startswith("#") or "stages=[" not in line: continue
        op = line.split("\t")[0]
        stages = re.findall(r"\[c\d+:([^ \]]+) next\d+\]", line)
        slot_stages = [st for st in stages if re.match(r"SLOT\d", st)]
        slots = tuple(sorted({int(x[4:]) for st in slot_stages[:1] for x in st.split("|") if x[4:].isdigit()}))
        noslot1 = len(slot_stages) > 1
        alts: list[tuple[str, ...]] = [()]
        for st in stages:
            if not st.startswith("CVI_"): continue
            choice = [_TSV_UNITS[x] for x in st.split("|") if x in _TSV_UNITS]
            if choice: alts = [a + c for a in alts for c in choice]
        out[op] = (slots, noslot1, tuple(dict.fromkeys(tuple(sorted(set(a))) for a in alts)))
    _ITIN[cpu] = out
    return out


_ITIN: dict[str, dict] = {}
# one representative LLVM opcode per class: the class's slots and units are read from its row
_REPRESENTATIVE = {
    "VA": "V6_vaddw", "VA_DV": "V6_vaddw_dv", "VX": "V6_vrmpybus_acc", "VX_DV": "V6_vmpybus",
    "VRMPYV": "V6_vrmpyubv_acc",   # vector x vector vrmpy accumulate: both multipliers on v66, one on v73
    "VS": "V6_vasrwh", "VP": "V6_valignb", "VP_VS": "V6_vunpackub",
    "VSPLAT": "V6_lvsplatw",        # vsplat / vinsert: slots 2/3 and a multiplier
    "VLOAD": "V6_vL32b_ai", "VLOADCUR": "V6_vL32b_cur_ai", "VLOADTMP": "V6_vL32b_tmp_ai",
    "VLOADU": "V6_vL32Ub_ai", "VSTORE": "V6_vS32b_ai", "VSTORENEW": "V6_vS32b_new_ai",
    "VSTOREU": "V6_vS32Ub_ai",
}
_EARLY = {"VX", "VX_DV", "VRMPYV", "VS", "VP", "VP_VS", "VSTOREU", "VSPLAT"}
CPU = "v66"


def build_classes(cpu: str = "v66") -> dict[str, IClass]:
    """The instruction classes of ``cpu`` (``v66`` default, ``v73`` selectable): HVX classes
    from the itinerary table, scalar classes from the PRM's slot rules."""
    it = itineraries(cpu)
    cl = []
    for name, op in _REPRESENTATIVE.items():
        slots, noslot1, units = it[op]
        cl.append(IClass(name, (0,) if noslot1 else slots, units, noslot1, name in _EARLY,
                         0 if name in ("VLOADCUR", "VLOADTMP") else 1, True))
    cl += [IClass("ALU32", (0, 1, 2, 3)), IClass("XTYPE", (2, 3)), IClass("MPY", (2, 3), latency=2),
           IClass("LD", (0, 1), latency=2), IClass("ST", (0, 1)), IClass("J", (2, 3)), IClass("CR", (3,))]
    return {c.name: c for c in cl}


CLASSES = build_classes("v66")


def use_cpu(cpu: str) -> None:
    """Switch the packet model to another table (``v66`` or ``v73``), in place."""
    global CPU
    CLASSES.clear()
    CLASSES.update(build_classes(cpu))
    CPU = cpu


# ---- classification of clang's Hexagon assembly -------------------------------------
_VP_OPS = ("valign", "vlalign", "vror", "vdelta", "vrdelta", "vshuff", "vdeal", "vpack", "vsetq",
           "vlut", "vswap")
_VS_OPS = ("vasr", "vasl", "vlsr", "vnormamt", "vpopcount", "vcl0", "vround", "vrotr")
_VX_OPS = ("vmpy", "vrmpy", "vdmpy", "vtmpy", "vmpa", "vrsad", "vdsad", "vabsdiff")
_ALU32 = ("add", "sub", "and", "or", "xor", "combine", "mux", "sxtb", "sxth", "zxtb", "zxth", "aslh",
          "asrh", "cmp", "tfr", "nop", "not", "neg")
_REG = re.compile(r"\b([rvqp])(\d+)(?::(\d+))?(\.new|\.cur|\.tmp)?\b", re.I)


@dataclass(frozen=True)
class Instr:
    text: str
    cls: str
    defs: tuple[str, ...]
    uses: tuple[str, ...]
    new_uses: tuple[str, ...] = ()     # read as .new in the producer's packet
    early_uses: tuple[str, ...] = ()   # early-source operands
    mem: str = ""                       # "" | "load" | "store"
    branch: bool = False
    words: int = 1                      # 2 with a constant extender (immext takes a slot too)
    region: str = ""                    # the buffer a memory access touches when known: distinct regions never alias

    @property
    def iclass(self) -> IClass: return CLASSES[self.cls]


def classify_packet(texts: list[str]) -> list[Instr]:
    """Instructions of one packet; a constant extender (``immext``) is fused into the
    instruction it extends, which then takes two of the four slots."""
    out: list[Instr] = []
    ext = False
    for t in texts:
        if t.strip().startswith("immext"):
            ext = True
            continue
        ins = classify(t)
        out.append(replace(ins, words=max(2, ins.words)) if ext else ins)
        ext = False
    # a new-value operand written as ``Nx.new`` / ``Ox.new`` (qemu's disassembly: scalar /
    # vector) names its producer by position; read it as a same-packet use of every
    # register of that kind the packet writes
    for k, ins in enumerate(out):
        for kind, reg in (("n", "r"), ("o", "v")):
            if re.search(rf"\b{kind}\d+\.new\b", ins.text.lower()):
                prod = tuple(r for j, o in enumerate(out) if j != k for r in o.defs if r.startswith(reg))
                out[k] = ins = replace(ins, new_uses=ins.new_uses + prod)
    return _sequential(out)


def _sequential(pk: list[Instr]) -> list[Instr]:
    """Order a packet's instructions as a sequential program with the same meaning: a
    packet reads old values, so a reader goes before the writer of the same register,
    except a ``.new`` reader, which goes after it."""
    n = len(pk)
    before = {j: set() for j in range(n)}   # j must come after every i in before[j]
    for i in range(n):
        for j in range(n):
            if i == j: continue
            if any(r in pk[j].defs for r in pk[i].uses) and not any(r in pk[i].defs for r in pk[j].uses):
                before[j].add(i)            # i reads the old value j overwrites
            if any(r in pk[i].defs for r in pk[j].new_uses):
                before[j].add(i)
    order, done = [], set()
    while len(order) < n:
        ready = [j for j in range(n) if j not in done and before[j] <= done]
        j = ready[0] if ready else next(j for j in range(n) if j not in done)
        order.append(j)
        done.add(j)
    return [pk[j] for j in order]


def _regs(s: str) -> list[tuple[str, str]]:
    out = []
    for m in _REG.finditer(s):
        k, a, b, suf = m.group(1).lower(), int(m.group(2)), m.group(3), (m.group(4) or "").lower()
        for n in ([a, int(b)] if b is not None else [a]):
            out.append((f"{k}{n}", suf))
    return out


def classify(text: str) -> Instr:
    """One assembly instruction -> class, registers defined/used, memory effect."""
    t = text.strip().rstrip(";")
    low = t.lower()
    branch = bool(re.search(r"\bjump\b|\bcall\b|\bjumpr\b", low))
    pred = re.match(r"if\s*\((!?)([pq]\d+)(\.new)?\)\s*", low)
    body = low[pred.end():] if pred else low
    uses: list[str] = []
    new_uses: list[str] = []
    if pred:
        (new_uses if pred.group(3) else uses).append(pred.group(2))
    lhs, op, rhs = _split_assign(body)
    store = bool(re.match(r"\s*(v?mem\w*)\s*\(", lhs))
    load = not store and bool(re.search(r"\bv?mem\w*\s*\(", rhs))
    defs: list[str] = []
    if store:
        uses += [r for r, _ in _regs(lhs)]
    else:
        for r, _ in _regs(lhs):
            defs.append(r)
        if op != "=" and op:   # accumulate: the destination is read too
            uses += defs
        if pred and not store:  # a conditional write keeps the old value otherwise
            uses += defs
    for r, suf in _regs(rhs):
        (new_uses if suf == ".new" else uses).append(r)
    # post-increment addressing writes its base register
    for m2 in re.finditer(r"\(\s*(r\d+)\s*\+\+", low):
        defs.append(m2.group(1))
    cls = _class_of(body, lhs, rhs, store, load, bool(pred), bool(op) and op != "=")
    early: list[str] = []
    c = CLASSES[cls]
    if c.early:
        early = [r for r, _ in _regs(rhs) if r.startswith("v")]
        if op != "=" and op:
            early = [r for r in early if r not in defs]
    return Instr(t, cls, tuple(dict.fromkeys(defs)), tuple(dict.fromkeys(uses)), tuple(dict.fromkeys(new_uses)),
                 tuple(dict.fromkeys(early)), "store" if store else "load" if load else "", branch,
                 SLOTS if _SOLO.match(body) else 2 if _extended(low) else 1)


# instructions marked isSolo (alone in their packet): modeled as taking all four slots
_SOLO = re.compile(r"\s*(trap[01]|rte|barrier|isync|syncht|brkpt|k0lock|k0unlock|crswap|ciad|siad|wait|resume|swi|cswi|tlb\w*)\b")


def _extended(low: str) -> bool:
    """Does the instruction need a constant extender (``immext``, a slot of its own)? ``##``
    always; otherwise a ``#`` constant outside the smallest common unextended field: s16 for
    ``add(rX,#)`` / ``rX = #`` (A2_addi / A2_tfrsi), none for ``vmem`` offsets (not
    extendable), s8 for anything else (conservative: cmp/and/or take s10, mux s8)."""
    if "##" in low: return True
    if "vmem" in low: return False
    for m in re.finditer(r"#(-?(?:0x[0-9a-f]+|\d+))\b", low):
        v = int(m.group(1), 0)
        wide = re.search(r"=\s*add\s*\(\s*r\d+\s*,\s*#|^\s*r\d+\s*=\s*#", low)
        lo, hi = (-(1 << 15), (1 << 15) - 1) if wide else (-1024, 1023) if "mem" in low else \
            (0, 1023) if re.match(r"\s*loop[01]", low) else (-128, 127)   # s11:0 offsets, u10 trip counts
        if not lo <= v <= hi: return True
    return False


def _split_assign(body: str) -> tuple[str, str, str]:
    """``lhs op rhs`` at the top-level assignment (op is =, +=, -=, |=, &=, ^=)."""
    depth = 0
    for k, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch == "=" and body[k + 1:k + 2] != "=" and body[k - 1:k] not in ("=", "!", "<", ">"):
            j = k - 1 if body[k - 1:k] in ("+", "-", "|", "&", "^") else k
            return body[:j].strip(), body[j:k + 1], body[k + 1:].strip()
    return "", "", body


def _class_of(body: str, lhs: str, rhs: str, store: bool, load: bool, pred: bool, acc: bool = False) -> str:
    qreg = bool(re.search(r"\bq\d+", body))   # HVX vector predicates
    vec = bool(re.search(r"\bv\d+", body)) or "vmem" in body or qreg
    if re.search(r"\bjump|\bcall|endloop", body): return "J"
    if re.match(r"\s*loop[01]|\s*p3:0|\s*lc\d|\s*sa\d|\s*usr|\s*m\d\b", body) or re.search(r"\bloop[01]\s*\(", body):
        return "CR"
    if vec:
        if store:
            if "vmemu" in lhs: return "VSTOREU"
            return "VSTORENEW" if re.search(r"\.new\b", rhs) else "VSTORE"
        if load:
            if "vmemu" in rhs: return "VLOADU"
            return "VLOADCUR" if re.search(r"\.cur\b", lhs) else "VLOADTMP" if re.search(r"\.tmp\b", lhs) else "VLOAD"
        name = re.search(r"\b(v[a-z0-9_]+)\s*\(", rhs)
        fn = name.group(1) if name else ""
        pair_dst = ":" in lhs
        if fn.startswith(("vsplat", "vinsert")): return "VSPLAT"
        # vector x vector vrmpy accumulate (V6_vrmpy{ub,b,bus}v_acc): both multipliers on v65-v69
        if fn == "vrmpy" and acc and not pair_dst and len(re.findall(r"\bv\d+", rhs)) >= 2: return "VRMPYV"
        # Vd.h = vmpy(Vu.h, Vv.h / Rt.h):<<1:..sat (V6_vmpyhvsrs, vmpyhss, vmpyhsrs) take both multipliers
        if any(fn.startswith(o) for o in _VX_OPS): return "VX_DV" if pair_dst or fn.startswith("vmpyi") and ".h" in rhs or fn == "vmpy" and ".h" in lhs else "VX"
        # predicate <-> vector moves (vand(Q,R), vand(V,R)) are CVI_VX_LATE; predicate logic
        # (and(Qs,!Qt), or, not) CVI_VA_DV (instruction types in LLVM's hvx_hexagon_protos.h)
        if fn == "vand" and re.search(r"\b[qr]\d+", rhs): return "VX"
        if not fn and qreg and not re.search(r"\bv\d+", body): return "VA_DV"
        if fn.startswith(("vshuffe", "vshuffo")): return "VA"
        if fn.startswith(("vunpack", "vzxt", "vsxt", "vzb", "vsb", "vzh", "vsh")): return "VP_VS"
        if fn.startswith(("vshuff", "vdeal")) and pair_dst: return "VP_VS"
        if any(fn.startswith(o) for o in _VS_OPS): return "VS"
        if any(fn.startswith(o) for o in _VP_OPS): return "VP"
        if not fn and re.match(r"\s*v\d+(:\d+)?\s*$", rhs): return "VA_DV" if pair_dst else "VA"  # vector copy
        return "VA_DV" if pair_dst or "vcombine" in fn else "VA"
    if store: return "ST"
    if load: return "LD"
    fn = re.search(r"\b([a-z_0-9]+)\s*\(", rhs)
    f = fn.group(1) if fn else ""
    if f.startswith("mpy") or f.startswith("vmpy") or f.startswith("vrmpy") or f.startswith("vdmpy"): return "MPY"
    if not f or f in _ALU32 or f.startswith("cmp"): return "ALU32"
    return "XTYPE"


# ---- parsing clang -S output ----------------------------------------------------------
@dataclass
class Loop:
    label: str
    packets: list[list[Instr]]
    function: str = ""

    @property
    def instrs(self) -> list[Instr]: return [i for p in self.packets for i in p]
    @property
    def hvx(self) -> int: return sum(i.iclass.hvx for i in self.instrs)


def parse_packets(lines: list[str]) -> list[list[str]]:
    """Assembly lines of one basic block -> packets (lists of instruction texts)."""
    packets, cur, inside = [], [], False
    for raw in lines:
        s = raw.split("//")[0].strip()
        if not s or s.startswith("."): continue
        if s.startswith("{"):
            inside, cur = True, []
            s = s[1:].strip()
            if not s: continue
        if s.startswith("}"):
            packets.append(cur); inside = False  # noqa: E702
            continue
        if s.endswith("}") or "}" in s and s.rstrip().endswith(("endloop0", "endloop1", "endloop01")):
            part = s.split("}")[0].strip()
            cur += [x.strip() for x in part.split(";") if x.strip()]
            packets.append(cur); inside = False  # noqa: E702
            continue
        parts = [x.strip() for x in s.split(";") if x.strip()]
        if inside: cur += parts
        else: packets.append(parts)
    return [p for p in packets if p]


def innermost_loops(asm: str) -> list[Loop]:
    """Single-block loops (hardware ``endloop0`` or a branch back to their own label)."""
    loops: list[Loop] = []
    label, block, func = None, [], ""
    for raw in asm.splitlines():
        s = raw.strip()
        lab = re.match(r"^([A-Za-z_.$][\w.$]*):\s*(//.*)?$", s)
        if lab:
            name = lab.group(1)
            if not name.startswith(".L") or name.startswith(".LBB"):
                if not name.startswith(".LBB"): func = name
                _close(loops, label, block, func)
                label, block = name, []
            continue
        block.append(raw)
    _close(loops, label, block, func)
    return loops


def _close(loops: list[Loop], label: str | None, block: list[str], func: str) -> None:
    if label is None or not block: return
    text = "\n".join(block)
    back = re.search(r"endloop0|jump(:\w+)?\s+" + re.escape(label) + r"\b", text)
    if not back: return
    loops.append(Loop(label, [classify_packet(p) for p in parse_packets(block)], func))


# ---- dependences ----------------------------------------------------------------------
@dataclass(frozen=True)
class Dep:
    src: int
    dst: int
    latency: int
    distance: int = 0   # iterations between producer and consumer (loop-carried when > 0)
    same: bool = False  # a ``.new`` read: the consumer must sit in its producer's packet


def dependences(instrs: list[Instr], loop: bool = True) -> list[Dep]:
    """RAW/WAR/WAW register deps and conservative memory ordering; loop-carried ones with
    distance 1 when ``loop``."""
    deps: list[Dep] = []
    n = len(instrs)
    order = [(i, j, 0) for i in range(n) for j in range(i + 1, n)]
    if loop: order += [(i, j, 1) for i in range(n) for j in range(0, i + 1)]
    for i, j, dist in order:
        a, b = instrs[i], instrs[j]
        lat = None
        same = False
        for r in a.defs:
            if r in b.new_uses and dist == 0:
                lat, same = max(lat or 0, 0), True
            if r in b.uses:
                l = _raw_latency(a, b, r)
                if dist and _redefined_between(instrs, i, j, r, dist): continue
                if not dist and any(r in instrs[k].defs for k in range(i + 1, j)): continue
                lat = max(lat or 0, l)
            if r in b.defs: lat = max(lat or 0, 1)
        for r in a.uses:   # write after read: may share the packet
            if r in b.defs: lat = max(lat or 0, 0)
        if (a.mem == "store" and b.mem or a.mem and b.mem == "store") and not (a.region and b.region and a.region != b.region):
            lat = max(lat or 0, 1 if a.mem == "store" else 0)
        if b.branch and not dist and not (lat and lat > 0): lat = max(lat or 0, 0)
        if lat is not None and not (dist and i == j and lat == 0):
            deps.append(Dep(i, j, lat, dist, same and lat == 0))
    return deps


def _raw_latency(a: Instr, b: Instr, r: str) -> int:
    lat = a.iclass.latency
    if a.iclass.hvx and a.cls not in ("VLOADCUR", "VLOADTMP") and r in b.early_uses: lat = max(lat, 2)
    return lat


def _redefined_between(instrs: list[Instr], i: int, j: int, r: str, dist: int) -> bool:
    """Across the back edge: is r written again after i (rest of this iteration) or before j?"""
    return any(r in instrs[k].defs for k in range(i + 1, len(instrs))) or any(r in instrs[k].defs for k in range(0, j))


# ---- schedules -------------------------------------------------------------------------
@dataclass
class PackResult:
    packets: int          # cycles of the block, stalls included (= packets issued + empty ones)
    issued: int           # non-empty packets (-1: no schedule better than ``upper`` was found)
    assignment: list[int]
    proved: bool          # optimality under the model proved
    solve_s: float
    ii: int | None = None # modulo schedule: packets per iteration in steady state
    notes: list[str] = field(default_factory=list)


def _at_most(terms: list, k: int) -> z3.BoolRef:
    """``z3.PbLe`` with unit coefficients over Bool terms, without its per-term coercion
    (the packet model states thousands of these; building them dominated small solves)."""
    ctx = terms[0].ctx
    args = (z3.Ast * len(terms))(*(t.as_ast() for t in terms))
    ones = (ctypes.c_int * len(terms))(*([1] * len(terms)))
    return z3.BoolRef(z3.Z3_mk_pble(ctx.ref(), len(terms), args, ones, k), ctx)


def _resource_constraints(instrs: list[Instr], res: list, nres: int, windows: list[range] | None = None) -> list:
    """Per packet (``res[i]`` = the packet, or the packet modulo II): slots form a matching
    (Hall's condition over every slot subset) and each HVX unit serves at most one
    instruction (alternatives are chosen by Bool variables). ``windows``: the packets each
    instruction is otherwise confined to (the terms of the others would be false; leaving
    them out keeps the model small)."""
    cons = []
    n = len(instrs)
    win = windows or [range(nres)] * n
    at = [{r: res[i] == r for r in win[i]} for i in range(n)]
    # slot demands: an unaligned vector access needs slot 0 and blocks slot 1
    items = [(i, d) for i, ins in enumerate(instrs) for d in _slot_demands(ins)]
    subsets = sorted((tuple(k for k in range(SLOTS) if m >> k & 1) for m in range(1, 1 << SLOTS)), key=len)
    # unit usage: fixed for single-alternative classes, chosen otherwise
    use: list[dict[str, object]] = []
    for i, ins in enumerate(instrs):
        alts = ins.iclass.units
        if len(alts) == 1:
            use.append({u: True for u in alts[0]})
            continue
        ch = [z3.Bool(f"alt{i}_{k}") for k in range(len(alts))]
        cons.append(z3.PbEq([(c, 1) for c in ch], 1))
        use.append({u: z3.Or([ch[k] for k, a in enumerate(alts) if u in a]) for u in UNITS if any(u in a for a in alts)})
    for r in range(nres):
        stated: set[tuple] = set()   # subsets are in increasing size: the same terms again are implied
        for sub in subsets:
            idx = tuple(k for k, (i, sl) in enumerate(items) if r in at[i] and set(sl) <= set(sub))
            if len(idx) <= len(sub) or idx in stated: continue
            stated.add(idx)
            cons.append(_at_most([at[items[k][0]][r] for k in idx], len(sub)))
        for u in UNITS:
            terms = [at[i][r] if use[i][u] is True else z3.And(at[i][r], use[i][u]) for i in range(n) if u in use[i] and r in at[i]]
            if len(terms) > 1: cons.append(_at_most(terms, 1))
    return cons


def _lower_bound(instrs: list[Instr]) -> int:
    n = len(instrs)
    lb = math.ceil(sum(i.words for i in instrs) / SLOTS)
    hv_units = sum(min(len(a) for a in i.iclass.units) for i in instrs if i.iclass.hvx and not i.mem)
    lb = max(lb, math.ceil(hv_units / 4))
    for kind in ("ld", "st"):
        lb = max(lb, sum(1 for i in instrs if all(kind in a for a in i.iclass.units)))
    mpy = sum(min(sum(u.startswith("mpy") for u in a) for a in i.iclass.units) for i in instrs)
    lb = max(lb, math.ceil(mpy / 2))
    return max(lb, 1)


def _end_packet_bound(instrs: list[Instr], deps: list[Dep], cap: int = 4096) -> int:
    """A lower bound on packets, and on issued ones, from the first and the last non-empty
    packet: the last holds a set closed under 0-latency successors (a successor cannot
    issue earlier, nor later than the last), the first one closed under 0-latency
    predecessors, and the rest needs ``_lower_bound`` packets more. The least over every
    such set that fits one packet (at most ``cap`` sets a side; more and that side is
    skipped) bounds both. It proves what the solver finds hard: 16 multiplies filling 8
    packets two by two leave no room beside the last two for their own loads."""
    n = len(instrs)
    if not n: return 0
    demands = [_slot_demands(i) for i in instrs]
    bound = 0
    for last in (True, False):
        near: list[set[int]] = [set() for _ in range(n)]   # must share the packet (or come after / before it)
        barred = [False] * n                                # a latency >= 1 neighbour on that side: cannot be there
        for d in deps:
            if d.distance: continue
            a, b = (d.src, d.dst) if last else (d.dst, d.src)
            if d.latency > 0: barred[a] = True
            else: near[a].add(b)
            if d.same: near[b].add(a)
        closures = []
        for i in range(n):
            c, todo = {i}, [i]
            while todo and len(c) <= SLOTS:
                for j in near[todo.pop()] - c: c.add(j); todo.append(j)
            if len(c) <= SLOTS and not any(barred[j] for j in c): closures.append(frozenset(c))
        sets = _fitting_unions(sorted(set(closures), key=sorted), instrs, demands, cap)
        if sets is None or not sets: continue
        memo: dict[tuple, int] = {}
        side = None
        for sset in sets:
            key = tuple(sorted((instrs[i].cls, instrs[i].words) for i in sset))
            if key not in memo: memo[key] = 1 + _lower_bound([x for k, x in enumerate(instrs) if k not in sset]) if len(sset) < n else 1
            side = memo[key] if side is None else min(side, memo[key])
        bound = max(bound, side or 0)
    return bound


def _slot_time_bound(instrs: list[Instr], deps: list[Dep], start: int, limit: int) -> int:
    """Packets needed by slot capacity over time (``vliw_bounds``), from the block's first
    packets (releases: earliest packets) and from its last ones (releases: packets that
    must follow), at least ``start``; checked up to ``limit``."""
    asap, tail = _windows(len(instrs), deps)
    out = start
    for rel in (asap, tail):
        dem = [(sl, rel[i]) for i, ins in enumerate(instrs) for sl in _slot_demands(ins)]
        out = max(out, vliw_bounds.packets_needed(dem, SLOTS, start, limit))
    return out


def _fitting_unions(closures: list[frozenset], instrs: list[Instr], demands: list, cap: int) -> set[frozenset] | None:
    """Every union of the closed sets that fits one packet (None past ``cap`` of them)."""
    out: set[frozenset] = set()

    def grow(start: int, cur: frozenset) -> bool:
        for k in range(start, len(closures)):
            u = cur | closures[k]
            if u == cur or len(u) > SLOTS or u in out: continue
            if not vliw_list.fits([demands[i] for i in u], [instrs[i].iclass.units for i in u], SLOTS): continue
            out.add(u)
            if len(out) > cap or not grow(k + 1, u): return False
        return True
    return out if grow(0, frozenset()) else None


def pack(instrs: list[Instr], timeout_s: float = 10.0, upper: int | None = None) -> PackResult:
    """Fewest packets (cycles) for one straight pass through the block. A list schedule
    (``vliw_list``) gives a feasible packing first, and lower bounds (resources, critical
    path, the first/last packet, slot capacity over time) the floor; one Z3 model up to the
    list schedule's length (``_Packer``, reused between checks under assumptions) is asked
    one packet below the best known until it refuses, so an optimal list schedule costs one
    (unsat) check. ``upper``: the cycles of a known feasible schedule (clang's, replayed);
    the list schedule replaces it only when faster. An inconclusive solver answer keeps the
    bound unproved. At the cycles found, the packing with the fewest non-empty packets is
    kept (``issued``), searched the same way."""
    t0 = time.perf_counter()
    n = len(instrs)
    deps = dependences(instrs, loop=False)
    floor = _lower_bound(instrs)   # of packets and of issued ones
    lo = max(floor, _critical_path(n, deps))
    hi = upper if upper is not None else 2 * sum(max(1, d.latency) for d in deps) + n + 1
    best, asg, proved = hi, [], True
    greedy = list_schedule(instrs, deps)
    if greedy and max(greedy) + 1 < best: best, asg = max(greedy) + 1, greedy
    big = upper is not None and n > MAX_SOLVE   # too big for the solver: keep the best known
    if asg and not big and (lo < best or len(set(asg)) > floor):   # stronger bounds, where the list schedule may not be optimal
        floor = max(floor, _end_packet_bound(instrs, deps))
        lo = max(lo, floor)
        if lo < best: lo = _slot_time_bound(instrs, deps, lo, best)
    if big: lo, proved = best, False
    if lo < best and not asg:   # no packing known: climb (or bisect below ``upper``) with one model per count
        while lo < best:
            mid = (lo + best - 1) // 2 if upper is not None else lo
            r, a = _pack_check(instrs, deps, mid, timeout_s)
            if r == z3.sat: best, asg = max(a) + 1, a
            else: proved, lo = proved and r == z3.unsat, mid + 1
            if upper is None and r == z3.sat: break
    solver = _Packer(instrs, deps, best, timeout_s) if asg and not big and (lo < best or len(set(asg)) > floor) else None
    if solver is not None and lo < best:
        best, asg, ok = _descend(lo, best, asg, lambda p: solver.check(p), lambda a: max(a) + 1)
        proved &= ok
    if solver is not None:
        _, asg, _ = _descend(floor, len(set(asg)), asg, lambda k: solver.check(best, k), lambda a: len(set(a)))
    return PackResult(best, len(set(asg)) if asg else -1, asg, proved, time.perf_counter() - t0)


def _descend(lo: int, best: int, asg: list[int], check, measure) -> tuple[int, list[int], bool]:
    """The least k in [lo, best] that ``check(k)`` (a solver answer, a witness) accepts,
    ``best`` being known feasible with ``asg``: asked one below the best known until refused
    (the list schedule is optimal or a few packets off, a feasible check is cheap and its
    witness may be better than asked, ``measure``; refusals are the costly answers, and this
    asks one). Feasibility is monotone in k. Returns (k, witness, every answer conclusive)."""
    while lo < best:
        r, a = check(best - 1)
        if r != z3.sat: return best, asg, r == z3.unsat
        best, asg = min(best - 1, measure(a)), a
    return best, asg, True


class _Packer:
    """One Z3 model of the straight schedule over ``horizon`` packets, checked under
    assumptions (at most ``p`` packets, at most ``k`` of them issued) so that what the
    solver learns in one check carries to the next and the model is built once."""

    def __init__(self, instrs: list[Instr], deps: list[Dep], horizon: int, timeout_s: float):
        n = len(instrs)
        self.cyc = [z3.Int(f"c{i}") for i in range(n)]
        self.length = z3.Int("packets")
        s = self.solver = z3.Solver()
        s.set("timeout", int(timeout_s * 1000))
        asap, tail = _windows(n, deps)
        c, P = self.cyc, self.length
        s.add(P <= horizon)
        s.add([z3.And(c[i] >= asap[i], c[i] < P - tail[i]) for i in range(n)])  # ASAP/ALAP windows prune the search
        self.windows = [range(asap[i], horizon - tail[i]) for i in range(n)]
        s.add(_resource_constraints(instrs, c, horizon, self.windows))
        for d in deps: s.add(c[d.dst] == c[d.src] if d.same else c[d.dst] >= c[d.src] + d.latency)
        s.add([c[i] == P - 1 for i in range(n) if instrs[i].branch])
        self.horizon = horizon
        self.lits: dict[tuple[str, int], z3.BoolRef] = {}

    def _lit(self, kind: str, v: int) -> z3.BoolRef:
        """The assumption literal for "at most ``v`` packets" / "at most ``v`` issued"."""
        if (kind, v) not in self.lits:
            b = self.lits[(kind, v)] = z3.Bool(f"{kind}{v}")
            self.solver.add(z3.Implies(b, self.length <= v if kind == "p" else z3.PbLe([(u, 1) for u in self._used()], v)))
        return self.lits[(kind, v)]

    def _used(self) -> list:
        """Per packet: does it hold an instruction (built once, for the first issued bound)."""
        if not hasattr(self, "used"):
            self.used = [z3.Or([x == q for x, w in zip(self.cyc, self.windows) if q in w] or [z3.BoolVal(False)])
                         for q in range(self.horizon)]
        return self.used

    def check(self, p: int, max_issued: int | None = None):
        lits = [self._lit("p", p)] + ([self._lit("k", max_issued)] if max_issued is not None else [])
        r = self.solver.check(*lits)
        return r, ([self.solver.model().eval(x, model_completion=True).as_long() for x in self.cyc] if r == z3.sat else [])


def _slot_demands(ins: Instr) -> tuple[tuple[int, ...], ...]:
    """The slots one instruction takes: an unaligned vector access slot 0 and slot 1 (blocked),
    a constant extender any one more."""
    c = ins.iclass
    own = ((0,), (1,)) if c.noslot1 else (c.slots,)
    return own + (tuple(range(SLOTS)),) * (ins.words - 1)


def _edges(deps: list[Dep]) -> list[tuple[int, int, int, bool]]:
    return [(d.src, d.dst, d.latency, d.same) for d in deps if d.distance == 0]


def feasible(instrs: list[Instr], deps: list[Dep], asg: list[int]) -> bool:
    """Does the packet assignment meet the model ``_pack_check`` states: every dependence,
    branches in the last packet, slots and units of every packet?"""
    if len(asg) != len(instrs) or any(a < 0 for a in asg): return False
    for s, d, lat, same in _edges(deps):
        if asg[d] != asg[s] if same else asg[d] < asg[s] + lat: return False
    if any(ins.branch and asg[i] != max(asg) for i, ins in enumerate(instrs)): return False
    packets: dict[int, list[int]] = {}
    for i, a in enumerate(asg): packets.setdefault(a, []).append(i)
    return all(vliw_list.fits([_slot_demands(instrs[i]) for i in mem], [instrs[i].iclass.units for i in mem], SLOTS)
               for mem in packets.values())


def list_schedule(instrs: list[Instr], deps: list[Dep]) -> list[int]:
    """A feasible packing by greedy list scheduling (two priorities: longest latency path to
    the block's end, then program order; the shorter, then fewer issued packets kept);
    empty where neither meets the model."""
    n = len(instrs)
    if not n: return []
    _, tail = _windows(n, deps)
    demands = [_slot_demands(i) for i in instrs]
    alts = [i.iclass.units for i in instrs]
    edges, branch = _edges(deps), [i.branch for i in instrs]
    found = []
    for prio in (tail, [0] * n):
        a = vliw_list.schedule(demands, alts, edges, branch, SLOTS, prio)
        if a is not None and feasible(instrs, deps, a): found.append(a)
    return min(found, key=lambda a: (max(a), len(set(a)))) if found else []


def pack_windows(packets: list[list[Instr]], timeout_s: float = 10.0, window: int = MAX_SOLVE) -> tuple[list[list[Instr]], bool]:
    """A block too large for one model: runs of consecutive packets (at most ``window``
    instructions) are each repacked by ``pack`` below their own replayed cycles, and the
    concatenation is kept where the whole replays faster, or as fast in fewer packets, than
    the original (stalls across windows included). Returns (packets, all windows proved)."""
    out: list[list[Instr]] = []
    proved = True
    win: list[list[Instr]] = []
    for pk in packets + [None]:  # type: ignore[list-item]
        if pk is not None and sum(map(len, win)) + len(pk) <= window:
            win.append(pk)
            continue
        if win:
            flat = [i for p in win for i in p]
            r = pack(flat, timeout_s, upper=replay(win))
            proved &= r.proved
            if r.assignment:
                slots = sorted(set(r.assignment))
                out += [[i for i, a in zip(flat, r.assignment) if a == c] for c in slots]
            else:
                out += win
        win = [pk] if pk is not None else []
    a, b = replay(out), replay(packets)
    return (out, proved) if a < b or a == b and len(out) <= len(packets) else (packets, proved)


def _pack_check(instrs: list[Instr], deps: list[Dep], p: int, timeout_s: float, max_issued: int | None = None):
    n = len(instrs)
    cyc = [z3.Int(f"c{i}") for i in range(n)]
    s = z3.Solver()
    s.set("timeout", int(timeout_s * 1000))
    asap, tail = _windows(n, deps)
    s.add([z3.And(cyc[i] >= asap[i], cyc[i] < p - tail[i]) for i in range(n)])  # ASAP/ALAP windows prune the search
    s.add(_resource_constraints(instrs, cyc, p))
    for d in deps: s.add(cyc[d.dst] == cyc[d.src] if d.same else cyc[d.dst] >= cyc[d.src] + d.latency)
    s.add([cyc[i] == p - 1 for i in range(n) if instrs[i].branch])
    if max_issued is not None:   # at most this many packets hold an instruction
        s.add(z3.PbLe([(z3.Or([c == q for c in cyc]), 1) for q in range(p)], max_issued))
    r = s.check()
    return r, ([s.model().eval(c).as_long() for c in cyc] if r == z3.sat else [])


def _windows(n: int, deps: list[Dep]) -> tuple[list[int], list[int]]:
    """Earliest packet of each instruction, and packets that must follow it (dependences
    within one pass only)."""
    asap, tail = [0] * n, [0] * n
    fwd = sorted((d for d in deps if d.distance == 0), key=lambda d: d.dst)
    for d in fwd: asap[d.dst] = max(asap[d.dst], asap[d.src] + d.latency)
    for d in sorted(fwd, key=lambda d: -d.src): tail[d.src] = max(tail[d.src], tail[d.dst] + d.latency)
    return asap, tail


def _critical_path(n: int, deps: list[Dep]) -> int:
    dist = [1] * n
    for d in sorted((d for d in deps if d.distance == 0), key=lambda d: d.dst):
        dist[d.dst] = max(dist[d.dst], dist[d.src] + d.latency)
    return max(dist) if n else 0


def modulo(instrs: list[Instr], timeout_s: float = 10.0, max_stages: int = 4, upper: int | None = None) -> PackResult:
    """Software pipelining: the smallest initiation interval II such that iteration k's
    instructions issue at t_i + k*II with every resource used once per packet slot modulo
    II and every dependence (loop-carried ones too) met. Register renaming across the
    overlapped iterations (modulo variable expansion) is assumed, as in a pipelined loop
    the renderer unrolls."""
    t0 = time.perf_counter()
    n = len(instrs)
    deps = dependences(instrs, loop=True)
    # anti/output dependences vanish under modulo variable expansion; true ones stay
    deps = [d for d in deps if _is_true(instrs, d)]
    lo = _lower_bound(instrs)
    if upper is not None and n > MAX_SOLVE: lo = upper
    straight = _critical_path(n, deps)
    hi = upper if upper is not None else 4 * n + 8
    best: tuple[int, list[int]] | None = None
    proved = True
    while lo < hi:   # bisection below ``upper``: feasibility is taken as monotone in II
        ii = (lo + hi) // 2 if best is not None or upper is not None else lo
        res, asg = _modulo_check(instrs, deps, ii, max(straight, ii) + ii * max_stages, timeout_s)
        if res == z3.sat:
            best, hi = (ii, asg), ii
        else:
            proved &= res == z3.unsat
            lo = ii + 1
    if best is None:
        if upper is None: raise RuntimeError("no modulo schedule found")
        # the straight schedule repeated is always a valid one
        return PackResult(upper, upper, [], proved, time.perf_counter() - t0, upper, ["not pipelined"])
    ii, asg = best
    return PackResult(max(asg) + 1, len({a % ii for a in asg}), asg, proved, time.perf_counter() - t0, ii,
                      [f"{max(asg) // ii + 1} stages"])


def _modulo_check(instrs: list[Instr], deps: list[Dep], ii: int, horizon: int, timeout_s: float):
    n = len(instrs)
    t = [z3.Int(f"t{i}") for i in range(n)]
    k = [z3.Int(f"k{i}") for i in range(n)]
    r = [z3.Int(f"r{i}") for i in range(n)]
    s = z3.Solver()
    s.set("timeout", int(timeout_s * 1000))
    asap, _ = _windows(n, deps)
    for i in range(n):
        s.add(t[i] == ii * k[i] + r[i], r[i] >= 0, r[i] < ii, k[i] >= 0, t[i] >= asap[i], t[i] < horizon)
    s.add(_resource_constraints(instrs, r, ii))
    for d in deps: s.add(t[d.dst] == t[d.src] if d.same else t[d.dst] >= t[d.src] + d.latency - ii * d.distance)
    s.add([r[i] == ii - 1 for i in range(n) if instrs[i].branch])
    res = s.check()
    return res, ([s.model().eval(x).as_long() for x in t] if res == z3.sat else [])


def _is_true(instrs: list[Instr], d: Dep) -> bool:
    a, b = instrs[d.src], instrs[d.dst]
    if any(r in b.uses or r in b.new_uses for r in a.defs): return True
    if a.mem == "store" and b.mem: return True
    if b.branch: return True
    return a.mem == "load" and b.mem == "store" and d.distance == 0 and d.latency > 0


def replay(packets: list[list[Instr]], iterations: int = 1) -> int:
    """Cycles an in-order core spends on a given packet sequence (repeated ``iterations``
    times, as a loop), stalling each packet until its operands are ready."""
    flat = [i for p in packets for i in p]
    pk = [k for k, p in enumerate(packets) for _ in p]
    deps = dependences(flat, loop=iterations > 1)
    start: dict[tuple[int, int], int] = {}
    cyc = -1
    for it in range(iterations):
        for k in range(len(packets)):
            ready = cyc + 1
            for d in deps:
                if pk[d.dst] != k: continue
                src_it = it - d.distance
                if src_it < 0 or (d.distance == 0 and pk[d.src] >= k): continue
                ready = max(ready, start[(src_it, pk[d.src])] + d.latency)
            start[(it, k)] = cyc = ready
    return cyc + 1


def steady_cycles(packets: list[list[Instr]]) -> float:
    """Cycles per iteration of a loop in steady state (replayed, warm-up excluded)."""
    return (replay(packets, 6) - replay(packets, 2)) / 4

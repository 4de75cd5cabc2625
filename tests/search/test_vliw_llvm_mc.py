"""Every packet the Z3 scheduler forms from real HVX blocks is accepted by llvm-mc (the
assembler checks Hexagon slot/unit rules), and a packed block's packet count is the one
qemu's c20 packet counter reports (skipped where the tools are absent)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from superopt.search import vliw

LLVM_MC = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
MC = ["-triple=hexagon", "-mcpu=hexagonv66", "-mattr=+hvxv66,+hvx-length128b", "-filetype=obj"]

BLOCKS = {
    "vrmpy_vv": ["v0 = vmem(r0+#0)", "v1 = vmem(r1+#0)", "v2.w += vrmpy(v0.b,v1.b)", "v3.w += vrmpy(v0.ub,v1.b)",
                 "v4.uw += vrmpy(v1.ub,v0.ub)", "v5.w = vadd(v6.w,v7.w)", "v8.w = vadd(v9.w,v10.w)",
                 "r0 = add(r0,#128)", "r1 = add(r1,#128)"],
    "vrmpy_rt": ["v0 = vmem(r0+#0)", "v1.w += vrmpy(v0.ub,r2.b)", "v2.w += vrmpy(v0.ub,r3.b)",
                 "v3.w += vrmpy(v0.ub,r4.b)", "v4.w += vrmpy(v0.ub,r5.b)", "v5 = vmem(r1+#0)",
                 "v6.w += vrmpy(v5.ub,r2.b)", "v7.w = vadd(v1.w,v2.w)", "vmem(r6+#0) = v7"],
    "vmem": ["v0 = vmem(r0+#0)", "v1 = vmem(r0+#1)", "v2 = vmem(r0+#2)", "vmem(r1+#0) = v3",
             "vmem(r1+#1) = v4", "v5.w = vadd(v6.w,v7.w)", "v8.w = vsub(v9.w,v10.w)", "v11 = vmemu(r2+#0)",
             "vmemu(r3+#0) = v12", "v13.cur = vmem(r4+#0)", "v14.w = vadd(v13.w,v15.w)"],
    "vsplat": ["v0 = vsplat(r0)", "v1 = vsplat(r1)", "v2.w += vrmpy(v3.ub,r2.b)", "v4.w += vrmpy(v5.ub,r3.b)",
               "v6.w = vadd(v0.w,v1.w)", "v7.w = vinsert(r4)", "v8 = vmem(r5+#0)"],
    "valign_vasr": ["v0 = valign(v1,v2,r0)", "v3 = valign(v4,v5,r1)", "v6.w = vasr(v7.w,r2)",
                    "v8.w = vasr(v9.w,r3)", "v10.h = vasr(v11.w,v12.w,r4):sat", "v13 = vlalign(v14,v15,r5)",
                    "v16.w = vadd(v0.w,v3.w)", "v17 = vmem(r6+#0)", "vmem(r7+#0) = v6"],
    "extenders": ["r0 = add(r1,##100000)", "r2 = ##74565", "r3 = add(r4,#5)", "r5 = add(r6,#7)",
                  "r7 = add(r8,##-70000)", "v0 = vmem(r9+#0)", "v1.w += vrmpy(v0.ub,r10.b)", "r11 = #3"],
    "solo": ["r0 = #1", "r6 = #93", "trap0(#1)", "r2 = add(r3,#1)", "r4 = add(r5,#1)", "v0 = vmem(r7+#0)"],
    "new_value": ["v0.w = vadd(v1.w,v2.w)", "vmem(r0+#0) = v0.new", "v3.w = vasr(v4.w,r1)",
                  "vmem(r2+#0) = v3.new", "v5.w += vrmpy(v6.b,v7.b)", "v8 = vmem(r3+#0)"],
}


def packets_of(instrs: list[vliw.Instr]) -> list[list[vliw.Instr]]:
    r = vliw.pack(instrs)
    assert r.assignment, "no schedule"
    return [[i for i, a in zip(instrs, r.assignment) if a == c] for c in sorted(set(r.assignment))]


def asm(packets: list[list[vliw.Instr]]) -> str:
    text = "".join("{\n" + "".join(f"\t{i.text}\n" for i in p) + "}\n" for p in packets)
    labels = sorted(set(re.findall(r"\.LBB\w+", text)))   # branch/loop targets of clang's code, defined here
    return text + "".join(f"{lab}:\n\tnop\n" for lab in labels)


def _rejected(pks: list[list[vliw.Instr]], tmp_path) -> list:
    bad = []
    for k, p in enumerate(pks):   # each packet on its own: the error names the packet
        src = tmp_path / f"p{k}.s"
        src.write_text(asm([p]))
        r = subprocess.run([LLVM_MC, *MC, str(src), "-o", str(tmp_path / f"p{k}.o")], capture_output=True, text=True)
        if r.returncode or "error" in r.stderr: bad.append((k, [i.text for i in p], r.stderr.strip()[:200]))
    return bad


@pytest.mark.skipif(LLVM_MC is None, reason="llvm-mc not installed")
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_z3_packets_accepted_by_llvm_mc(name, tmp_path):
    instrs = [vliw.classify(t) for t in BLOCKS[name]]
    pks = packets_of(instrs)
    assert not _rejected(pks, tmp_path), _rejected(pks, tmp_path)
    assert len(pks) < len(instrs)   # the solver did pack something


@pytest.mark.skipif(LLVM_MC is None or shutil.which("clang") is None, reason="llvm-mc/clang not installed")
def test_z3_repacked_clang_loops_accepted_by_llvm_mc(tmp_path):
    # clang's innermost loops of an int8 conv (HVX vrmpy, vmem, requantize) and its start-up
    # (trap0 syscalls), each repacked by Z3 (branches left out): every packet assembles
    from superopt.backends.base import get
    from superopt.backends.hexagon import rules, tools
    from superopt.ir.lower import lower
    from superopt.kernels import Workload
    from superopt.search.machine import load
    m = load("hexagon")
    k = Workload.make("qconv2d", N=1, C=32, H=8, W=8, K=32, R=3, S=3).kernel
    text = tools.assembly(get("hexagon", m).source(lower(k, rules.hand(k, m), m)))
    assert isinstance(text, str), str(text)
    loops, hvx = 0, 0
    for lp in vliw.innermost_loops(text):
        ins = [i for i in lp.instrs if not i.branch and "endloop" not in i.text]
        if not ins or len(ins) > vliw.MAX_SOLVE: continue
        r = vliw.pack(ins, timeout_s=5.0, upper=vliw.replay([[i] for i in ins]))
        if not r.assignment: continue
        pks = [[i for i, a in zip(ins, r.assignment) if a == c] for c in sorted(set(r.assignment))]
        bad = _rejected(pks, tmp_path)
        assert not bad, (lp.label, bad)
        loops, hvx = loops + 1, hvx + sum(i.iclass.hvx for i in ins)
    assert loops >= 3 and hvx > 0


CLANG = shutil.which("clang") or shutil.which("clang-14")
LLD = shutil.which("ld.lld") or shutil.which("ld.lld-14")
QEMU = shutil.which("qemu-hexagon-static") or shutil.which("qemu-hexagon")

# c20 -> r0 (the raw transfer-from-control-register word; NOTES: 0x6a14c000)
_C20 = "\t.word 0x6a14c000\n"


@pytest.mark.skipif(None in (LLVM_MC, CLANG, LLD, QEMU), reason="hexagon toolchain not installed")
def test_packed_block_packets_match_qemu_c20():
    instrs = [vliw.classify(t) for t in BLOCKS["vrmpy_rt"]]
    pks = packets_of(instrs)
    setup = "{\n\tr0 = add(r29,#-1024)\n\tr1 = add(r29,#-1536)\n\tr6 = add(r29,#-2048)\n}\n"
    align = "{\n\tr29 = and(r29,#-128)\n}\n"
    body = (".text\n.globl _start\n_start:\n" + align + setup + _C20 + "{\n\tr20 = r0\n}\n"
            + setup + asm(pks) + _C20
            + "{\n\tr0 = sub(r0,r20)\n\tr6 = #93\n}\n{\n\ttrap0(#1)\n}\n")
    # the first read clobbers r0 (a block pointer), so the pointers are set again after it;
    # the exit status is the c20 difference (qemu counts issued packets; stalls are not modeled)
    with tempfile.TemporaryDirectory() as d:
        s, o, exe = (os.path.join(d, n) for n in ("k.s", "k.o", "k"))
        open(s, "w").write(body)
        subprocess.run([LLVM_MC, *MC, s, "-o", o], check=True)
        subprocess.run([LLD, "-static", "-e", "_start", o, "-o", exe], check=True)
        r = subprocess.run([QEMU, exe], capture_output=True, timeout=30)
    # counted between the two reads: r20 = r0, the setup packet, the block, the second read
    assert r.returncode == 1 + 1 + len(pks) + 1, (r.returncode, len(pks))

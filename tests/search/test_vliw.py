"""The HVX VLIW model and the Z3 packet scheduler (no Hexagon tools needed)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from superopt.search import vliw

LOOP_ASM = """
k:
\t{
\t\tloop0(.LBB0_6,r5)
\t\tv2 = vmem(r0++#1)
\t}
.LBB0_6:                                // =>This Inner Loop Header: Depth=1
\t{
\t\tv1.w += vrmpy(v2.b,v3.b)
\t\tv2 = vmem(r0++#1)
\t}
\t{
\t\tv0.w += vrmpy(v2.b,v3.b)
\t\tv3.cur = vmem(r1++#1)
\t}
\t{
\t\tnop
\t\tv3 = vmem(r3++#1)
\t} :endloop0
.LBB0_7:
\t{
\t\tv1.w += vrmpy(v2.b,v3.b)
\t}
"""


def test_classify_hvx_and_scalar():
    c = vliw.classify
    acc = c("v1.w += vrmpy(v2.b,v3.b)")
    assert acc.cls == "VRMPYV" and acc.defs == ("v1",) and set(acc.uses) == {"v1", "v2", "v3"}
    assert set(acc.early_uses) == {"v2", "v3"}          # the accumulator is not an early source
    ld = c("v2 = vmem(r0++#1)")
    assert ld.cls == "VLOAD" and ld.mem == "load" and set(ld.defs) == {"v2", "r0"} and ld.uses == ("r0",)
    assert c("v3.cur = vmem(r1+#0)").cls == "VLOADCUR"
    assert c("v0 = vmemu(r1+#0)").cls == "VLOADU"
    st_ = c("vmem(r2+#0) = v31.new")
    assert st_.cls == "VSTORENEW" and st_.mem == "store" and st_.new_uses == ("v31",) and not st_.defs
    assert c("v1:0.h = vmpy(v2.ub,v3.b)").cls == "VX_DV"
    assert c("v1:0 = vshuff(v2,v3,r7)").cls == "VP_VS"
    assert c("v4.w = vasr(v1.w,r4)").cls == "VS"
    assert c("v4 = valign(v1,v2,r4)").cls == "VP"
    assert c("v4.w = vadd(v1.w,v2.w)").cls == "VA"
    assert c("r0 = add(r0,#128)").cls == "ALU32"
    assert c("r9 = asl(r3,#7)").cls == "XTYPE"
    assert c("r1 = memw(r0+#4)").cls == "LD"
    assert c("loop0(.LBB0_10,r12)").cls == "CR"
    # requantize / predicated-store classes (LLVM hvx_hexagon_protos.h instruction types)
    assert c("q0 = vsetq2(r1)").cls == "VP" and c("q0 = vsetq2(r1)").defs == ("q0",)
    assert c("v2 = vand(q0,r0)").cls == "VX" and c("q0 = vand(v31,r1)").cls == "VX"
    assert c("q1 = and(q0,!q2)").cls == "VA_DV"
    assert c("v4.h = vshuffe(v4.h,v4.h)").cls == "VA" and c("v3.b = vdeal(v3.b)").cls == "VP"
    # V6_vmpyhvsrs takes CVI_MPY01 (LLVM's itinerary; llvm-mc rejects two a packet, or one beside a vrmpy)
    assert c("v3.h = vmpy(v3.h,v4.h):<<1:rnd:sat").cls == "VX_DV" and c("v3.b = vasr(v3.h,v3.h,r0):rnd:sat").cls == "VS"
    pst = c("if (q2) vmem(r8+#0) = v3")
    assert pst.cls == "VSTORE" and set(pst.uses) == {"q2", "r8", "v3"}
    j = c("if (!p0.new) jump:nt .LBB0_1")
    assert j.cls == "J" and j.branch and j.new_uses == ("p0",)


def test_packet_reads_old_values():
    # in one packet the store reads r0 before the add writes it: sequentially, store first
    seq = vliw.classify_packet(["r0 = add(r0,#4)", "memw(r1+#0) = r0"])
    assert [i.mem for i in seq] == ["store", ""]
    # a .new consumer goes after its producer
    seq = vliw.classify_packet(["vmem(r2+#0) = v31.new", "v31.w = vasr(v1.w,r4)"])
    assert seq[0].defs == ("v31",)


def test_new_value_operands_by_position():
    # qemu prints new-value stores as Nx.new (scalar) / Ox.new (vector): same-packet producers
    seq = vliw.classify_packet(["V2.w += vrmpy(V31.b,V3.b)", "vmem(R22+#0x0) = O2.new"])
    assert seq[1].new_uses == ("v2",)
    r = vliw.pack(seq)
    assert r.assignment[1] >= r.assignment[0]
    seq = vliw.classify_packet(["immext(#0x10cc0)", "R0 = add(pc,##0x10cc0)", "memw(R29+#0x54) = N0.new"])
    assert len(seq) == 2 and seq[0].words == 2 and seq[1].new_uses == ("r0",)


def test_resources_bound_packets():
    c = vliw.classify
    assert vliw.pack([c(f"r{i} = add(r{i + 8},#1)") for i in range(4)]).packets == 1
    assert vliw.pack([c(f"r{i} = add(r{i + 8},#1)") for i in range(5)]).packets == 2
    # one vector load unit per packet
    assert vliw.pack([c("v0 = vmem(r0+#0)"), c("v1 = vmem(r1+#0)")]).packets == 2
    # a vector x vector vrmpy accumulate takes both multipliers (v66 itineraries: CVI_MPY01):
    # one a packet, beside two vector adds (shift/permute units); the Rt form takes one,
    # so two of those fit a packet, a third cannot
    vv = [c("v0.w += vrmpy(v8.b,v9.b)"), c("v1.w += vrmpy(v10.b,v11.b)")]
    adds = [c("v2.w = vadd(v12.w,v13.w)"), c("v3.w = vadd(v14.w,v15.w)")]
    assert vliw.pack(vv[:1] + adds).packets == 1
    assert vliw.pack(vv).packets == 2
    rt = [c(f"v{k}.w += vrmpy(v{k + 8}.ub,r{k}.b)") for k in range(3)]
    assert all(i.cls == "VX" for i in rt)
    assert vliw.pack(rt[:2] + adds).packets == 1
    assert vliw.pack(rt).packets == 2
    # aligned vector loads/stores take a compute unit too (llvm-mc agrees): load + store + two
    # Rt vrmpy fit (shift, permute, two multipliers); load + store + vv vrmpy + vasr don't
    ldst = [c("v20 = vmem(r0+#0)"), c("vmem(r1+#0) = v21")]
    assert vliw.pack(ldst + rt[:2]).packets == 1
    assert vliw.pack(ldst + vv[:1] + [c("v4.w = vasr(v5.w,r3)")]).packets == 2
    # vsplat: slot 2/3 and a multiplier
    sp = c("v5 = vsplat(r7)")
    assert sp.cls == "VSPLAT" and vliw.pack([sp] + rt[:2]).packets == 2
    # a constant extender takes a slot
    assert c("r1 = add(r2,##100000)").words == 2 and c("r1 = add(r2,#1)").words == 1
    assert vliw.pack([c("r1 = add(r2,##100000)")] + [c(f"r{i} = add(r{i + 8},#1)") for i in (3, 4, 5)]).packets == 2
    # on v73 the vector x vector accumulate takes one multiplier
    vliw.use_cpu("v73")
    try:
        assert vliw.pack(vv).packets == 1
    finally:
        vliw.use_cpu("v66")


def test_early_source_latency():
    c = vliw.classify
    # an add feeding a multiplier input needs one packet between them; feeding the accumulator does not
    assert vliw.pack([c("v0.w = vadd(v1.w,v2.w)"), c("v3.w = vrmpy(v0.b,v4.b)")]).packets == 3
    assert vliw.pack([c("v0.w = vadd(v1.w,v2.w)"), c("v0.w += vrmpy(v5.b,v4.b)")]).packets == 2
    assert vliw.replay([[c("v0.w = vadd(v1.w,v2.w)")], [c("v3.w = vrmpy(v0.b,v4.b)")]]) == 3


def test_fewest_issued_packets_at_the_fewest_cycles():
    c = vliw.classify
    # the early-source stall makes 3 cycles; the two independent adds fill packets that issue anyway
    block = [c("v0.w = vadd(v1.w,v2.w)"), c("v3.w = vrmpy(v0.b,v4.b)"), c("r1 = add(r2,#1)"), c("r3 = add(r4,#1)")]
    r = vliw.pack(block)
    assert r.packets == 3 and r.issued == 2 and r.assignment[2] != 1 and r.assignment[3] != 1


def test_large_block_packed_by_windows():
    c = vliw.classify
    ops = ["v{a}.w = vadd(v{b}.w,v{c}.w)", "v{a}.w += vrmpy(v{b}.b,v{c}.b)", "v{a} = vmem(r{b}+#0)", "r{a} = add(r{b},#1)"]
    instrs = [c(ops[k % 4].format(a=k % 7, b=(k * 3) % 7, c=(k * 5) % 7)) for k in range(90)]
    seq = [[i] for i in instrs]   # one instruction a packet, as a poor packetizer would
    new, _ = vliw.pack_windows(seq, 2.0, 16)
    assert sorted(i.text for p in new for i in p) == sorted(i.text for i in instrs)
    assert len(new) < len(seq) and vliw.replay(new) < vliw.replay(seq)
    flat = [i for p in new for i in p]
    for p in new:   # every packet is legal on its own
        assert len(p) <= 4 and vliw.pack(p).packets == 1
    # the new order keeps every dependence of the old one (same values read and written)
    pos = {id(i): k for k, i in enumerate(flat)}
    for d in vliw.dependences(instrs, loop=False):
        if d.latency > 0: assert pos[id(instrs[d.src])] < pos[id(instrs[d.dst])]


def test_loop_parse_and_pipeline():
    loops = vliw.innermost_loops(LOOP_ASM)
    assert [l.label for l in loops] == [".LBB0_6"]
    body = loops[0]
    assert len(body.packets) == 3 and len(body.instrs) == 6 and body.hvx == 5
    straight = vliw.pack(body.instrs)
    piped = vliw.modulo(body.instrs, upper=straight.packets)
    assert piped.ii <= straight.packets
    assert piped.ii >= 3  # three vector loads, one load unit
    assert vliw.steady_cycles(body.packets) >= piped.ii


_OPS = ["v{d}.w = vadd(v{a}.w,v{b}.w)", "v{d}.w += vrmpy(v{a}.b,v{b}.b)", "v{d} = vmem(r{a}+#0)",
        "v{d}.w = vasr(v{a}.w,r{b})", "r{d} = add(r{a},r{b})", "vmem(r{a}+#0) = v{b}", "v{d} = valign(v{a},v{b},r1)"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_OPS) - 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=9))
def test_pack_is_legal_and_no_worse_than_sequential(prog):
    instrs = [vliw.classify(_OPS[o].format(d=d, a=a, b=b)) for o, d, a, b in prog]
    r = vliw.pack(instrs)
    assert r.packets <= vliw.replay([[i] for i in instrs])
    # independent check of the assignment: dependences and per-packet resources
    for d in vliw.dependences(instrs, loop=False):
        assert r.assignment[d.dst] >= r.assignment[d.src] + d.latency
    for p in set(r.assignment):
        inp = [i for i, a in zip(instrs, r.assignment) if a == p]
        assert len(inp) <= 4
        assert sum(i.cls.startswith("VLOAD") for i in inp) <= 1
        assert sum(i.cls == "VSTORE" for i in inp) <= 1
        assert sum(i.cls == "VX" for i in inp) + 2 * sum(i.cls in ("VRMPYV", "VX_DV") for i in inp) <= 2
        assert sum(i.cls in ("VS", "VP") for i in inp) <= 2
        assert sum(i.iclass.hvx and not i.mem for i in inp) <= 4

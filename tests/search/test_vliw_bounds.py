"""The packer's list schedule and lower bounds (search/vliw_list.py, vliw_bounds.py): the
list schedule meets the model, the bounds never exceed the optimum, and the packer's answer
is the optimum the solver alone finds by climbing from below."""
from __future__ import annotations

import z3
from hypothesis import given, settings, strategies as st

from superopt.search import vliw

_OPS = ["v{d}.w = vadd(v{a}.w,v{b}.w)", "v{d}.w += vrmpy(v{a}.b,v{b}.b)", "v{d} = vmem(r{a}+#0)",
        "v{d}.w = vasr(v{a}.w,r{b})", "r{d} = add(r{a},r{b})", "vmem(r{a}+#0) = v{b}", "v{d} = valign(v{a},v{b},r1)",
        "r{d} = memw(r{a}+#4)", "v{d}.w += vrmpy(v{a}.ub,r{b}.b)", "v{d} = vsplat(r{a})", "r{d} = add(r{a},##100000)",
        "v{d} = vmemu(r{a}+#0)"]
_PROG = st.lists(st.tuples(st.integers(0, len(_OPS) - 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                 min_size=1, max_size=10)


def _least_sat(check, start: int = 1) -> int:
    """The least count the solver accepts, asked upward from ``start`` (how the packer
    searched before it had a list schedule)."""
    k = start
    while check(k)[0] != z3.sat: k += 1
    return k


@settings(max_examples=30, deadline=None)
@given(_PROG)
def test_list_schedule_bounds_and_optimum(prog):
    instrs = [vliw.classify(_OPS[o].format(d=d, a=a, b=b)) for o, d, a, b in prog]
    deps = vliw.dependences(instrs, loop=False)
    greedy = vliw.list_schedule(instrs, deps)
    assert greedy and vliw.feasible(instrs, deps, greedy)
    r = vliw.pack(instrs)
    assert r.proved and vliw.feasible(instrs, deps, r.assignment)
    assert r.packets <= max(greedy) + 1
    # the optimum and the fewest issued packets at it, asked of the solver alone
    assert r.packets == _least_sat(lambda p: vliw._pack_check(instrs, deps, p, 20.0))
    assert r.issued == _least_sat(lambda k: vliw._pack_check(instrs, deps, r.packets, 20.0, max_issued=k))
    # every bound at most the optimum; the end-packet one bounds issued packets too
    end = vliw._end_packet_bound(instrs, deps)
    assert end <= r.issued <= r.packets
    assert vliw._slot_time_bound(instrs, deps, 1, r.packets) <= r.packets


def test_feasible_rejects_what_the_model_forbids():
    c = vliw.classify
    block = [c("v0 = vmem(r0+#0)"), c("v1 = vmem(r1+#0)"), c("v2.w = vadd(v0.w,v1.w)")]
    deps = vliw.dependences(block, loop=False)
    assert vliw.feasible(block, deps, [0, 1, 2])
    assert not vliw.feasible(block, deps, [0, 0, 1])   # two vector loads, one load unit
    assert not vliw.feasible(block, deps, [0, 1, 1])   # the add reads v1 a packet too early


def _gemm_body() -> list[vliw.Instr]:
    """16 Rt-form vrmpy (two a packet fill 8), each followed by the loads of its operands."""
    out = [f"v{2 * k + j}.w += vrmpy(v{16 + j}.ub,r{6 + k}.b)" for k in range(8) for j in range(2)]
    out += ["v16 = vmem(r4+#0)", "v17 = vmem(r4+#1)", "r4 = add(r4,#256)"]
    out += [f"r{6 + k} = memw(r5+#{32 * k})" for k in range(1, 8)] + ["r6 = memw(r5++#4)"]
    return [vliw.classify(t) for t in out]


def test_end_packet_bound_proves_what_the_solver_times_out_on():
    # the last packet can hold at most... none of the multiplies: each needs its loads after
    # it (write after read), and with them it overflows a packet; so 16 multiplies at two a
    # packet need 8 packets before the last one
    body = _gemm_body()
    deps = vliw.dependences(body, loop=False)
    assert vliw._lower_bound(body) == 8 and vliw._end_packet_bound(body, deps) == 9
    r = vliw.pack(body, timeout_s=0.5)
    assert r.packets == 9 and r.issued == 9 and r.proved


def test_slot_time_bound_counts_what_early_packets_cannot_hold():
    # two extended adds fill packet 0; the loads they feed take slots 0/1 only, so packets
    # 1 and 2 leave slots empty, and 31 slot demands need 9 packets, not ceil(31/4) = 8
    out = ["r4 = add(r1,##0)", "r5 = add(r3,##0)"] + [f"r{6 + k} = memw(r5+#{32 * k})" for k in range(8)]
    out += [f"v{2 * k} = vsplat(r{6 + k})" for k in range(8)] + [f"v{2 * k + 1} = v{2 * k}" for k in range(8)]
    out += ["v16 = vmem(r4+#0)", "v17 = vmem(r4+#1)", "r4 = add(r4,#256)"]
    body = [vliw.classify(t) for t in out]
    deps = vliw.dependences(body, loop=False)
    assert vliw._lower_bound(body) == 8 and vliw._slot_time_bound(body, deps, 8, 12) == 9
    r = vliw.pack(body, timeout_s=0.5)
    assert r.packets == 9 and r.proved

"""GEMM workloads, their inputs, reference and emulator runs, and the 16-bit closeness
check shared by the emulator tests of the tensor-core, wgmma, TMA, staged and split-K
paths (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from superopt.backends.emu import run_program
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.program import Program, rewrite
from superopt.kernels.registry import Workload
from superopt.verify import poison

TOL16 = {"float16": 2e-3, "bfloat16": 1.6e-2}   # one rounding of the output, fp32 accumulation


def gemm_kernel(kind: str, dtype: str, M: int, N: int, K: int, batch: int = 2):
    """``matmul``, or ``bmm_kn`` / ``bmm_nk`` (B stored [K,N] / [N,K]) of ``batch``."""
    if kind == "matmul": return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]
    return Workload.make("bmm", B=batch, M=M, N=N, K=K, b_layout=kind[4:], dtype=dtype).kernels[0]


def close16(got, ref, d: str) -> bool:
    return bool(np.all(np.abs(got - ref) <= TOL16[d] * np.maximum(1.0, np.abs(ref))))


def normal_inputs(k, seed: int = 0) -> list[np.ndarray]:
    """Standard-normal inputs of ``k`` in storage form."""
    rng = np.random.default_rng(seed)
    return [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]


def reference_values(k, ins) -> np.ndarray:
    """The interpreter's output of ``k`` on ``ins``, as float64 values."""
    return dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)


def emu_written_close(k, s, machine, seed: int = 0, max_blocks: int = 4096):
    """Lower ``s`` for ``machine``, run it on the emulator on ``normal_inputs(k, seed)`` and
    compare every written element with the interpreter at those points: (program, run,
    written linear indices, whether all are within 16-bit tolerance)."""
    from superopt.ir.lower import lower
    ins = normal_inputs(k, seed)
    p = lower(k, s, machine)
    r = run_program(p, ins, max_blocks=max_blocks)
    pts = np.flatnonzero(r.written.reshape(-1))
    ref = run_kernel(k, ins, points=pts)
    got = dt.to_values(r.output.reshape(-1)[pts], k.output.dtype).astype(np.float64)
    return p, r, pts, close16(got, ref, k.output.dtype.name)


def emu_plan(k, plan, ins, machine=None) -> tuple[np.ndarray, list]:
    """Run a plan's steps (search/plan.py) on the emulator in order, every block, each step's
    schedule legal and every output element written: (the last step's output as float64
    values, each step's counters)."""
    from superopt.ir.lower import lower
    from superopt.ir.schedule import check
    from superopt.search.machine import H100
    machine = machine or H100
    outs, counters = [], []
    for x in plan.steps:
        assert not check(x.kernel, x.schedule, machine), x.kernel.name
        r = run_program(lower(x.kernel, x.schedule, machine), x.operands(ins, outs), max_blocks=1 << 20)
        assert r.written.all(), x.kernel.name
        outs.append(r.output)
        counters.append(r.counters)
    return dt.to_values(outs[-1], k.output.dtype).astype(np.float64), counters


def emu_values(p, ins, k, max_blocks: int = 64):
    """The emulator's run of program ``p`` and its output as float64 values."""
    r = run_program(p, ins, max_blocks=max_blocks)
    return r, dt.to_values(r.output, k.output.dtype).astype(np.float64)


@st.composite
def wgmma_shapes(draw, n_tiles: int = 1, k_steps: int = 3, max_stages: int = 3):
    """A wgmma GEMM case: (dtype, kind, M, N, K, bm, bn, bk, warpgroups along M, along N,
    stages), with 1-2 block tiles along M, up to ``n_tiles`` along N, up to ``k_steps`` K steps."""
    d = draw(st.sampled_from(["float16", "bfloat16"]))
    kind = draw(st.sampled_from(["matmul", "bmm_kn", "bmm_nk"]))
    wgm, wgn, mt = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    tn = draw(st.sampled_from([16, 32, 64, 128]))
    bk = draw(st.sampled_from([16, 32, 64]))
    bm, bn = 64 * mt * wgm, tn * wgn
    M, N, K = bm * draw(st.integers(1, 2)), bn * draw(st.integers(1, n_tiles)), bk * draw(st.integers(1, k_steps))
    return d, kind, M, N, K, bm, bn, bk, wgm, wgn, draw(st.integers(1, max_stages))


def gpu_values(cuda, p, k, ins):
    """Program ``p`` compiled on the cuda backend and run once on ``ins`` (the output
    poisoned first: NaN shows unwritten elements): (the compiled kernel, its output as float64)."""
    c = cuda.compile(p)
    assert hasattr(c, "handle"), f"compile failed: {c}"
    out = cuda.run(c, [a.reshape(-1) for a in ins], poison(k.output))
    assert isinstance(out, np.ndarray), f"launch failed: {out}"
    return c, dt.to_values(out.reshape(k.output.shape), k.output.dtype).astype(np.float64)


def gpu_wrong(c, got, ref) -> tuple[np.ndarray, str]:
    """Elements of a GPU run ``got`` (compiled kernel ``c``) off the reference by more than
    2e-2 relative, and a report of them for an assertion message."""
    bad = ~(np.abs(got - ref) <= 2e-2 * np.maximum(1.0, np.abs(ref)))
    return bad, (f"{bad.sum()} of {bad.size} wrong (registers {c.handle.registers}); first at "
                 f"{np.argwhere(bad)[:8].tolist()}; NaN (unwritten) {np.isnan(got).sum()}")


def mutate(p: Program, f) -> Program:
    """``p`` with every statement ``x`` but loops and ifs, in their bodies too, replaced by
    ``f(x)`` (dropped where that is None): a program with a bug put in (``ir.program.rewrite``)."""
    return rewrite(p, f)

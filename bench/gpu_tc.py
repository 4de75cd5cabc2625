"""Tensor-core GEMMs on the GPU vs PyTorch, in one run: the bert suite's GEMMs in fp16 and
bf16, matmul 4096^3 fp16, and the ResNet 3x3 conv 32x64x56x56 -> 64 fp16 (stride 1, pad
1) as implicit GEMM in NCHW and NHWC (torch: cuDNN, NHWC as channels_last tensors).

Per workload: the hand rule's tensor-core schedule (its tuning time includes the Z3
shared-layout solve; the proof result and the layout are recorded), the emulator's bank
conflict count of that schedule (first block only; ``--emu`` to compute, it is pure
CPU work), then ``bench/gpu.py``'s own verify-and-time path (fresh random inputs against
the reference, CUDA events, L2 flushed, rotated inputs, median) and torch timed the same
way in the same process. ``--split-k`` times split-K plans (ir/splitk.py: a partial
tensor-core GEMM on a grid S times larger, then a combine kernel; both verified end to
end, the sum of their median times) of GEMMs whose grids underfill the SMs
(1024x1024x8192, 512x512x4096), for S = 2, 4, 8 and the model's pick, next to the unsplit
kernel and torch. ``--wgmma`` also times Hopper wgmma schedules of each GEMM and convolution
(search/wgmma_space.variants; a conv's over ``CONV_TIMED_EXT`` M tilings; verified the
same way) next to the hand rule's kernel and torch. ``--variants`` also times a few other tile shapes of each GEMM
(verified the same way) to show where the hand rule stands; ``--solver`` the optimum of
the tensor-core space under the model (search/tc_space.py). ``--staged`` runs fp32 GEMMs
instead (matmul 2048^3 and the bert suite's GEMMs in fp32): the hand rule's register-tile
kernel, every shared-memory staged SIMT variant (search/hand.STAGED_TILES, ir/lower_staged.py;
verified the same way, with the model's time and, with ``--emu``, the emulator's bank
conflicts) and torch (cuBLAS fp32). Prints a table last.

    python3 bench/gpu_tc.py --out tc.json [--emu] [--variants] [--solver] [--split-k] [--wgmma] [--only NAME,...]
    python3 bench/gpu_tc.py --staged --out staged.json [--emu] [--no-gpu]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu as bench_gpu  # noqa: E402  (bench/gpu.py: the verify-and-time path)

from superopt.ir import tensorcore as tcm  # noqa: E402
from superopt.ir.lower import lower  # noqa: E402
from superopt.ir.schedule import Level, Schedule, check  # noqa: E402
from superopt.kernels.registry import Workload  # noqa: E402
from superopt.kernels.suites import suite  # noqa: E402
from superopt.search import banks  # noqa: E402
from superopt.search.hand import gpu  # noqa: E402

G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
VARIANTS = [  # (bm, bn, bk, wm, wn, stages)
    (128, 128, 32, 2, 2, 3), (128, 128, 32, 2, 2, 4), (128, 128, 64, 2, 2, 3), (128, 256, 32, 2, 4, 3),
    (256, 128, 32, 4, 2, 3), (64, 128, 32, 2, 2, 4), (128, 64, 32, 2, 2, 4)]
CONV_VARIANTS = [  # (M extents outer -> inner over the hand rule's M axes, bn, bk, wm, wn, stages)
    ((2, 8, 8), 64, 32, 2, 2, 3), ((2, 8, 8), 64, 64, 2, 2, 3), ((2, 8, 8), 64, 32, 2, 2, 4), ((4, 8, 8), 64, 32, 4, 1, 3),
    ((4, 8, 8), 64, 32, 2, 2, 3), ((8, 8), 64, 32, 2, 2, 3), ((64,), 64, 32, 2, 2, 3), ((64,), 64, 64, 1, 1, 2)]


def workloads() -> list[Workload]:
    out = []
    for w in suite("bert"):
        out.append(w)
        p = dict(w.params); p["dtype"] = "bfloat16"  # noqa: E702
        out.append(Workload.make(w.kind, name=w.name.replace("gemm", "gemm_bf16").replace("bmm", "bmm_bf16"), **p))
    out.append(Workload.make("matmul", name="matmul_4096x4096x4096_fp16", M=4096, N=4096, K=4096, dtype="float16"))
    for layout in ("nchw", "nhwc"):
        out.append(Workload.make("conv2d", name=f"conv3x3_32x64x56x56_64_{layout}_fp16", N=32, C=64, H=56, W=56, K=64,
                                 R=3, S=3, stride=1, pad=1, layout=layout, dtype="float16"))
    return out


def staged_workloads() -> list[Workload]:
    """fp32 GEMMs for the staged SIMT variants: matmul 2048^3, the bert suite's GEMMs in fp32."""
    out = [Workload.make("matmul", name="matmul_2048x2048x2048_fp32", M=2048, N=2048, K=2048, dtype="float32")]
    for w in suite("bert"):
        p = dict(w.params); p["dtype"] = "float32"  # noqa: E702
        out.append(Workload.make(w.kind, name=w.name.replace("gemm", "gemm_fp32").replace("bmm", "bmm_fp32"), **p))
    return out


def staged_rows(k, be, args, rng) -> list[dict]:
    """Every distinct staged SIMT variant of ``k``: tiles, schedule, modeled time, emulator
    conflicts (``--emu``, first block) and the verified GPU time (with a GPU)."""
    from superopt.search.cost import modeled_time
    from superopt.search.hand import STAGED_TILES, staged_simt
    out, seen = [], set()
    for tile in STAGED_TILES:
        s = staged_simt(k, _M, *tile)
        if s is None or s in seen: continue
        seen.add(s)
        out.append({"tiles": tile, "schedule": s.to_dict(), "describe": s.describe(k), "modeled_s": modeled_time(k, s, _M),
                    **({"emu": emu_conflicts(k, s, _M)} if args.emu else {}),
                    **(time_schedule(k, s, be, args.reps, rng) if be else {})})
    return out


def torch_callable(w: Workload, xs):
    """torch's op for ``w``; an NHWC conv runs on channels_last views (cuDNN's NHWC kernels)."""
    from superopt.vendor import torch_fn
    if w.kind == "conv2d" and w.args["layout"] == "nhwc":
        import torch.nn.functional as F
        p = w.args
        x, wt = xs[0].permute(0, 3, 1, 2), xs[1].permute(0, 3, 1, 2)   # (N,H,W,C) -> NCHW view, channels_last strides
        return lambda: F.conv2d(x, wt, stride=p["stride"], padding=p["pad"], groups=p["groups"])
    return torch_fn(w, xs)


def variant(k, bm, bn, bk, wm, wn, stages) -> Schedule | None:
    """The tensor-core schedule of these tiles (M/N padded as the space allows), solved layouts."""
    from superopt.search import tc_space
    mt = tcm.match(k)
    M, N, K = (k.axes[a].size for a in (mt.m, mt.n, mt.k))
    if not (tc_space.tile_fits(M, bm) and tc_space.tile_fits(N, bn)) or K % bk: return None
    return _solved(k, tc_space.make(k, mt, bm, bn, bk, wm, wn, min(stages, K // bk)))


def conv_variant(k, hand: Schedule, m_ext, bn, bk, wm, wn, stages) -> Schedule | None:
    """A conv tile over the hand rule's GEMM view, M flattened over its last ``len(m_ext)`` M axes."""
    from superopt.search import tc_space
    tc = hand.tensor_core
    mt = tcm.match(k, tc.m_axis, tc.n_axis, tc.k_axis, tc.m_outer[len(tc.m_outer) + 1 - len(m_ext):])
    K = k.axes[mt.k].size
    if isinstance(mt, str) or len(mt.m_axes) != len(m_ext) or K % bk: return None
    steps = K // bk * math.prod(k.axes[a].size for a in mt.window)
    return _solved(k, tc_space.make(k, mt, math.prod(m_ext), bn, bk, wm, wn, min(stages, steps), m_ext))


def _solved(k, s: Schedule) -> Schedule | None:
    s = replace(s, staging=banks.staging(k, s, bench_gpu_machine().warp)[0])
    return None if check(k, s, bench_gpu_machine()) else s


_M = None


def bench_gpu_machine():
    return _M


def emu_conflicts(k, s, m) -> dict:
    from superopt.backends.emu import run_program
    from superopt.verify import random_inputs
    r = run_program(lower(k, s, m), [a.reshape(-1) for a in random_inputs(k, np.random.default_rng(0))], blocks=np.array([0]))
    return {"bank_conflicts": r.counters.bank_conflicts, "shared_wavefronts": r.counters.shared_wavefronts,
            "races": r.counters.races, "blocks_run": 1}


def time_schedule(k, s, be, reps, rng) -> dict:
    from superopt.backends.base import Failure
    from superopt.verify import compare, poison, random_inputs
    c = be.compile(lower(k, s, be.machine))
    if isinstance(c, Failure): return {"ok": False, "failure": str(c)}
    ins = random_inputs(k, rng)
    out = poison(k.output)
    t = be.time(c, [a.reshape(-1) for a in ins], out, runs=reps)
    if isinstance(t, Failure): return {"ok": False, "failure": str(t)}
    v = compare(k, out, ins, rng)
    return {"ok": v.ok, "rel_err": v.rel_err, "median_s": t.median_s, "registers": c.handle.registers,
            "local_bytes": c.handle.local_bytes}


SPLIT_K_SHAPES = ((1024, 1024, 8192), (512, 512, 4096))


def time_plan(k, plan, be, reps: int, rng) -> dict:
    """A plan's steps (search/plan.py) compiled, run in order on random inputs and the last
    output verified against ``k``'s reference; each step timed on its own (L2 flushed), and
    the whole plan timed as the runtime runs it: its kernels back to back over shared buffers
    (``run_sequence``, L2 flushed once before each run), that output verified too.
    ``median_s`` is the whole plan's time, ``steps_sum_s`` the sum of the steps' medians."""
    from superopt.backends.base import Failure
    from superopt.verify import compare, poison, random_inputs
    rec = {"kind": plan.kind, "modeled_s": plan.modeled_s, "whole_modeled_s": plan.whole_s,
           "steps": [{"kernel": x.kernel.name, "describe": x.schedule.describe(x.kernel), "blocks": x.schedule.blocks()}
                     for x in plan.steps]}
    cs = [be.compile(lower(x.kernel, x.schedule, be.machine)) for x in plan.steps]
    bad = next((c for c in cs if isinstance(c, Failure)), None)
    if bad is not None: return {**rec, "ok": False, "failure": str(bad)}
    ins = [a.reshape(-1) for a in random_inputs(k, rng)]
    shaped = [a.reshape(k.inputs[i].shape) for i, a in enumerate(ins)]
    outs = []
    for x, c in zip(plan.steps, cs):
        r = be.run(c, x.operands(ins, outs), poison(x.kernel.output))
        if not isinstance(r, np.ndarray): return {**rec, "ok": False, "failure": str(r)}
        outs.append(r.reshape(-1))
    v = compare(k, outs[-1].reshape(k.output.shape), shaped, rng)
    ts = []
    for j, (x, c) in enumerate(zip(plan.steps, cs)):
        t = be.time(c, x.operands(ins, outs), poison(x.kernel.output), runs=reps)
        if isinstance(t, Failure): return {**rec, "ok": False, "failure": str(t)}
        rec["steps"][j].update(median_s=t.median_s, registers=c.handle.registers)
        ts.append(t.median_s)
    # buffers: the inputs, then each step's output; a step's args: its output, then its operands
    bufs = [*ins, *(poison(x.kernel.output).reshape(-1) for x in plan.steps)]
    at_in, at_out = list(range(len(ins))), list(range(len(ins), len(bufs)))
    args = [[at_out[j], *x.operands(at_in, at_out)] for j, x in enumerate(plan.steps)]
    seq = be.run_sequence(cs, args, bufs, [len(bufs) - 1], runs=reps)
    if isinstance(seq, Failure): return {**rec, "ok": False, "failure": f"as one sequence: {seq}"}
    (got,), t = seq
    w = compare(k, got.reshape(k.output.shape), shaped, rng)
    return {**rec, "ok": v.ok and w.ok, "rel_err": max(v.rel_err, w.rel_err), "median_s": t.median_s,
            "spread": (min(t.samples), max(t.samples)), "steps_sum_s": sum(ts)}


def plan_row(k, hand, be, args, rng) -> dict | None:
    """The model's plan of ``k`` (a convolution: its relayout plan even where the model keeps it
    whole) timed; with ``--wgmma``, the final kernel's warp-specialized variants too (the
    copies' times are the plan's)."""
    from superopt.search import plan as plans
    from superopt.search import wgmma_space
    from superopt.search.cost import modeled_time
    pick = plans.best(k, _M)
    p = pick
    orders = plans.k_last_orders(k) if p is None and k.kind == "conv" else {}
    if orders: p = plans.relayout_plan(k, _M, orders)
    if p is None: return None
    r = {"model_picks": pick is not None, **time_plan(k, p, be, args.reps, rng)}
    if p.kind == "relayout":   # each copy's other schedules: the solver's runners-up and the hand rule
        from superopt.search.z3opt import solve
        r["copy_variants"] = []
        for x in p.steps[:-1]:
            alts = [("hand", gpu(x.kernel, _M))] + [(f"solver {i}", c.schedule) for i, c in enumerate(solve(x.kernel, _M, top_k=6).candidates)]
            for name, cs in alts:
                r["copy_variants"].append({"kernel": x.kernel.name, "source": name, "describe": cs.describe(x.kernel),
                                           "modeled_s": modeled_time(x.kernel, cs, _M), **time_schedule(x.kernel, cs, be, args.reps, rng)})
    if args.wgmma and p.kind == "relayout":
        f = p.final
        r["final_variants"] = [{"tiles": t, "describe": ws.describe(f.kernel), **time_final(k, p, ws, be, args.reps, rng)}
                               for t, ws in wgmma_space.variants(f.kernel, _M) if "ws" in t and _timed_view(f.kernel, t)]
    return r


def time_final(k, p, s, be, reps: int, rng) -> dict:
    """Plan ``p`` with its last step's schedule replaced by ``s``, timed (``time_plan``)."""
    from superopt.search.plan import Plan
    return time_plan(k, Plan(p.kind, (*p.steps[:-1], replace(p.final, schedule=s)), p.modeled_s, p.whole_s, p.detail), be, reps, rng)


def split_k_rows(be, reps: int, rng) -> list[dict]:
    """Split-K plans against the unsplit tensor-core kernel and torch, per shape."""
    from superopt.search import plan as plans
    from superopt.search import tc_space
    from superopt.vendor import time_torch, torch_fn, torch_inputs
    out = []
    for M, N, K in SPLIT_K_SHAPES:
        w = Workload.make("matmul", name=f"splitk_{M}x{N}x{K}_fp16", M=M, N=N, K=K, dtype="float16")
        k = w.kernel
        (t_un, s_un), = tc_space.best(k, _M, 1)
        t0 = time.perf_counter()
        pick = plans.split_k(k, _M)
        r = {"workload": w.name, "flops": w.flops, "unsplit": {"describe": s_un.describe(k), "modeled_s": t_un,
                                                              "blocks": s_un.blocks(), **time_schedule(k, s_un, be, reps, rng)},
             "model_pick": pick.detail["splits"] if pick else None, "split_solve_s": time.perf_counter() - t0, "plans": []}
        for n in sorted({2, 4, 8} | ({pick.detail["splits"]} if pick else set())):
            plan = plans.split_plan(k, _M, n, t_un)
            if plan is not None: r["plans"].append({"splits": n, **time_plan(k, plan, be, reps, rng)})
        fn = torch_fn(w, torch_inputs(w, w.random_inputs(seed=1)))
        r["torch_s"] = statistics.median(time_torch(fn, reps, _M.l2_bytes))
        out.append(r)
        un = r["unsplit"].get("median_s")
        print(f"{w.name}: unsplit {un * 1e3 if un else float('nan'):.3f} ms, torch {r['torch_s'] * 1e3:.3f} ms, model picks S={r['model_pick']}", flush=True)
        for p in r["plans"]:
            print(f"    S={p['splits']}: ok={p['ok']} " + (f"{p['median_s'] * 1e3:.3f} ms (" + " + ".join(f"{x['median_s'] * 1e3:.3f}" for x in p["steps"])
                  + f"), modeled {p['modeled_s'] * 1e3:.3f} ms" if p.get("median_s") else p.get("failure", "")), flush=True)
    return out


# a convolution's wgmma variants timed: M tiles of whole 64-pixel rows (56 + 8 padded:
# one panel, TMA-copyable either layout) or the unpadded 2 x 8 x 8 images x rows x columns
CONV_TIMED_EXT = ([2, 64], [4, 64], [2, 8, 8])


def _timed_view(k, key) -> bool:
    """A GEMM's variant, or a conv's over ``CONV_TIMED_EXT`` tiles ending along the output
    column (the output axis other than N stored densest)."""
    if not isinstance(key[-1], dict): return True
    view = key[-1]
    col = min((a for a in k.output_axes if a != view["n"]), key=lambda a: tcm.axis_stride(k.store, a, k.axes[a].size) or 1 << 40)
    return view["m_ext"] in CONV_TIMED_EXT and view["m_axes"][-1] == col


def _write(path: str, doc: dict) -> None:
    with open(path + ".tmp", "w") as f: json.dump(doc, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    global _M
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--only", default="")
    ap.add_argument("--emu", action="store_true", help="count bank conflicts on the emulator (first block)")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--solver", action="store_true", help="also time the tensor-core space's optimum under the model (search/tc_space)")
    ap.add_argument("--split-k", action="store_true", help="time split-K plans of GEMMs whose grids underfill the SMs")
    ap.add_argument("--wgmma", nargs="?", const="all", choices=("all", "ws"),
                    help="also time wgmma (sm_90a) schedules of the GEMMs (search/wgmma_space); 'ws': the warp-specialized ones only")
    ap.add_argument("--no-gpu", action="store_true", help="schedules, solver and emulator only")
    ap.add_argument("--plans", action="store_true",
                    help="also time each workload's plan (search/plan.py); a convolution's relayout plan whether the model picks it or not")
    ap.add_argument("--staged", action="store_true", help="fp32 GEMMs: hand rule vs shared-memory staged SIMT variants vs torch")
    args = ap.parse_args(argv)
    command = "python3 bench/gpu_tc.py " + " ".join(argv if argv is not None else sys.argv[1:])
    be = None
    if args.no_gpu:
        from superopt.search.machine import H100
        _M = H100
    else:
        from superopt.backends.base import get
        be = get("cuda")
        _M = be.machine
    from superopt.vendor import time_torch, torch_inputs
    only = {x for x in args.only.split(",") if x}
    rng = np.random.default_rng(0)
    results, rows = [], []
    for w in (staged_workloads() if args.staged else workloads()):
        if only and w.name not in only: continue
        (k,) = w.kernels
        t0 = time.perf_counter()
        banks._CACHE.clear()  # the solve counts in this kernel's tuning time
        s = gpu(k, _M)
        tune_s = time.perf_counter() - t0
        from superopt.search.cost import modeled_time
        r = {"workload": w.name, "flops": w.flops, "schedule": s.to_dict(), "describe": s.describe(k), "tune_s": tune_s,
             "modeled_s": modeled_time(k, s, _M)}
        if s.tensor_core is not None:
            _, info = banks.staging(k, s, _M.warp)
            r["layouts"] = {x: vars(lay) for x, lay in info.items()}
        if args.emu: r["emu"] = emu_conflicts(k, s, _M)
        if be is not None:
            r.update(bench_gpu.run_ours(w, be, args.reps, rng))
            r["verify_and_time_s"] = time.perf_counter() - t0 - tune_s
            fn = torch_callable(w, torch_inputs(w, w.random_inputs(seed=1)))
            ts = time_torch(fn, args.reps, _M.l2_bytes)
            r["torch_s"] = statistics.median(ts)
            if args.solver and s.tensor_core is not None:
                from superopt.search import tc_space
                t0s = time.perf_counter()
                (ms, ss), = tc_space.best(k, _M, 1)
                r["solver"] = {"schedule": ss.to_dict(), "describe": ss.describe(k), "modeled_s": ms,
                               "solve_s": time.perf_counter() - t0s, **time_schedule(k, ss, be, args.reps, rng)}
            if args.variants and s.tensor_core is not None:
                r["variants"] = []
                for v in (CONV_VARIANTS if k.kind == "conv" else VARIANTS):
                    vs = conv_variant(k, s, *v) if k.kind == "conv" else variant(k, *v)
                    if vs is not None: r["variants"].append({"tiles": v, **time_schedule(k, vs, be, args.reps, rng)})
        if args.plans and be is not None: r["plan"] = plan_row(k, s, be, args, rng)
        if args.staged: r["staged"] = staged_rows(k, be, args, rng)
        if args.wgmma:
            from superopt.search import wgmma_space
            r["wgmma"] = [{"tiles": t, "describe": ws.describe(k), **({"emu": emu_conflicts(k, ws, _M)} if args.emu else {}),
                           **(time_schedule(k, ws, be, args.reps, rng) if be else {})} for t, ws in wgmma_space.variants(k, _M)
                          if (args.wgmma == "all" or "ws" in t) and _timed_view(k, t)]
        results.append(r)
        rows.append(_row(r))
        print(_fmt(rows[-1]), flush=True)
        if args.out:  # after every workload, so a run stopped early keeps what it measured
            _write(args.out, {"command": command, "device": be.device if be else None, "partial": True, "results": results})
        if r.get("solver", {}).get("median_s"):
            print(f"    solver pick {r['solver']['describe']}: ok={r['solver']['ok']} {w.flops / r['solver']['median_s'] / 1e12:.0f} TF/s", flush=True)
        if r.get("plan"):
            p = r["plan"]
            print(f"    plan {p['kind']} (model {'picks' if p['model_picks'] else 'keeps it whole'}): ok={p.get('ok')} "
                  + (f"{w.flops / p['median_s'] / 1e12:.0f} TF/s = {r['torch_s'] / p['median_s']:.2f}x torch as one sequence "
                     f"({p['median_s'] * 1e6:.1f} us; steps alone " + " + ".join(f"{x['median_s'] * 1e6:.1f}" for x in p["steps"]) + " us)"
                     if p.get("median_s") else p.get("failure", "")), flush=True)
            for v in p.get("copy_variants", []):
                print(f"      copy {v['kernel']} {v['source']}: ok={v.get('ok')} modeled {v['modeled_s'] * 1e6:.1f} us "
                      + (f"measured {v['median_s'] * 1e6:.1f} us" if v.get("median_s") else v.get("failure", "")), flush=True)
            for v in p.get("final_variants", []):
                print(f"      final {v['tiles']}: ok={v.get('ok')} " + (f"{v['median_s'] * 1e6:.1f} us" if v.get("median_s") else v.get("failure", "")), flush=True)
        for v in r.get("wgmma", []):
            print(f"    wgmma {v['tiles']}: ok={v.get('ok')} conflicts {v.get('emu', {}).get('bank_conflicts', '-')} "
                  + (f"{w.flops / v['median_s'] / 1e12:.0f} TF/s regs {v.get('registers')}" if v.get("median_s") else v.get("failure", "")), flush=True)
        for v in r.get("staged", []):
            print(f"    staged {v['tiles']}: ok={v.get('ok')} conflicts {v.get('emu', {}).get('bank_conflicts', '-')} "
                  f"modeled {w.flops / v['modeled_s'] / 1e12:.0f} TF/s "
                  + (f"{w.flops / v['median_s'] / 1e12:.1f} TF/s ({r['torch_s'] / v['median_s']:.2f}x torch) regs {v.get('registers')}"
                     if v.get("median_s") else v.get("failure", "")), flush=True)
        for v in r.get("variants", []):
            print(f"    variant {v['tiles']}: ok={v['ok']} "
                  + (f"{w.flops / v['median_s'] / 1e12:.0f} TF/s regs {v.get('registers')}" if v.get("median_s") else v.get("failure", "")), flush=True)
    out = {"command": command, "device": be.device if be else None, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "torch_fp32_matmul": _torch_fp32_mode(), "results": results}
    if args.split_k and be is not None: out["split_k"] = split_k_rows(be, args.reps, rng)
    if be is not None: be.close()
    if args.out: _write(args.out, out)
    print("\n" + _fmt(HEADER))
    for row in rows: print(_fmt(row))
    for r in results:  # the fastest verified staged variant of each fp32 GEMM
        done = [v for v in r.get("staged", []) if v.get("ok") and v.get("median_s")]
        if done and r.get("torch_s"):
            b = min(done, key=lambda v: v["median_s"])
            print(f"{r['workload'][:36]}: best staged {b['tiles']} {r['flops'] / b['median_s'] / 1e12:.1f} TF/s = "
                  f"{r['torch_s'] / b['median_s']:.2f}x torch" + (f", hand rule {r['torch_s'] / r['median_s']:.2f}x" if r.get("median_s") else ""))
    ratios = [r["torch_s"] / r["median_s"] for r in results if r.get("ok") and r.get("torch_s") and r.get("median_s")]
    if ratios: print(f"geomean vs torch {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}x ({be.device['name']})")
    return 0


def _torch_fp32_mode() -> dict | None:
    """How torch ran its fp32 GEMMs (TF32 off: cuBLAS fp32 FMAs, the baseline the fp32 rows compare with)."""
    try:
        import torch
        return {"allow_tf32": torch.backends.cuda.matmul.allow_tf32, "precision": torch.get_float32_matmul_precision()}
    except ImportError:
        return None


HEADER = ("workload", "ok", "ours ms", "torch ms", "vs torch", "ours TF/s", "torch TF/s", "tune s", "conflicts")


def _row(r) -> tuple:
    ours, th = r.get("median_s"), r.get("torch_s")
    tf = lambda s: f"{r['flops'] / s / 1e12:.0f}" if s else "-"  # noqa: E731
    conf = r.get("emu", {}).get("bank_conflicts", "-")
    return (r["workload"][:36], {True: "yes", False: "NO"}.get(r.get("ok"), "-"), f"{ours * 1e3:.3f}" if ours else "-",
            f"{th * 1e3:.3f}" if th else "-", f"{th / ours:.2f}x" if ours and th else "-", tf(ours), tf(th),
            f"{r['tune_s']:.1f}", conf)


def _fmt(row) -> str:
    w = (36, 4, 9, 9, 8, 10, 10, 7, 9)
    return " ".join(str(c).ljust(n) if i == 0 else str(c).rjust(n) for i, (c, n) in enumerate(zip(row, w)))


if __name__ == "__main__":
    sys.exit(main())

"""``superopt plan SCRIPT.py|GRAPH.json``: the fusion plan of every graph a lazy-Tensor
script realizes: kernels, their fused ops, bytes moved, peak memory and modeled time,
unfused / default rule / planned."""
from __future__ import annotations

import argparse
import json
import runpy
import sys
import traceback
from pathlib import Path

from superopt.commands.args import positive_float, positive_int
from superopt.cli import UserError

HELP = "plan fusion (what to store, what to recompute) for a lazy-Tensor script or graph file; compare with unfused and the default rule"
GRAPH_FORMAT, GRAPH_VERSION = "superopt.graph", 1


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SCRIPT_OR_GRAPH", help="a Python script that builds and realizes superopt Tensors, or a graph .json")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script ('--' separates them)")
    p.add_argument("--machine", default="cpu", help="machine model: cpu, h100, h200 (default cpu)")
    p.add_argument("--timeout", type=positive_float, default=30.0, metavar="S", help="solver time per graph (default 30 s)")
    p.add_argument("--peak-limit", type=positive_int, metavar="BYTES", help="keep intermediate buffers alive at once within BYTES")
    p.add_argument("--schedules", choices=["hand", "z3"],
                   help="re-rank the candidate plans by the schedule cost model of their kernels under these schedules")
    p.add_argument("--execute", action="store_true",
                   help="run the script's kernels (through the plans) instead of only recording its graphs")
    p.add_argument("--kernels", choices=["planned", "all", "none"], default="planned",
                   help="which plans' kernels to list (default: the planned one)")
    p.add_argument("--save-graph", metavar="FILE", help="write the recorded graphs to FILE (.json) for later planning")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"source", "machine", "graphs": [{"shape", "dtype", "nodes", "candidates", '
                        '"plans": {"unfused"|"default"|"planned": {"kernels", "flops", "bytes", "peak_bytes", "time_s", '
                        '"hand_time_s", "kernel_list": [{"output", "name", "min_bytes", "time_s", "ops"}]}}, "kept", '
                        '"proved", "solve_s", "scheduled_s"}]}. Superopt\'s flags go before SCRIPT\'s own; "--" starts the script\'s')


def _own_options(args: argparse.Namespace) -> None:
    """Options given after SCRIPT land in script_args (argparse.REMAINDER); take ours back."""
    rest, takes = list(args.script_args), {"--machine": "machine", "--timeout": "timeout", "--peak-limit": "peak_limit",
                                           "--kernels": "kernels", "--save-graph": "save_graph", "--schedules": "schedules"}
    flags = {"--execute": "execute", "--json": "json"}
    while rest:
        a = rest[0]
        if a == "--": rest.pop(0); break  # noqa: E702
        if a in takes and len(rest) > 1:
            conv = {"timeout": float, "peak_limit": int}.get(takes[a], str)
            try:
                setattr(args, takes[a], conv(rest[1]))
            except ValueError:
                raise UserError(f"{a}: bad value {rest[1]!r}") from None
            del rest[:2]
        elif a in flags: setattr(args, flags[a], True); rest.pop(0)  # noqa: E702
        elif a in ("-v", "--verbose"): args.verbosity = max(getattr(args, "verbosity", 0), 0) + 1; rest.pop(0)  # noqa: E702
        elif a in ("-q", "--quiet"): args.verbosity = -1; rest.pop(0)  # noqa: E702
        else: break
    args.script_args = rest


# ---- graph files -------------------------------------------------------------------------
def save_graphs(roots, path: Path) -> None:
    from superopt.ir.kernel import _arg_json
    from superopt.ir.node import toposort
    nodes = toposort(*roots)
    ids = {n: i for i, n in enumerate(nodes)}
    d = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION,
         "nodes": [[n.op.value, n.dtype.name, [ids[s] for s in n.src], _arg_json(n.arg)] for n in nodes],
         "roots": [ids[r] for r in roots]}
    path.write_text(json.dumps(d))


def load_graphs(path: Path) -> list:
    from superopt.ir import dtype as dt
    from superopt.ir.graph import shape
    from superopt.ir.kernel import _arg_py
    from superopt.ir.node import Node, Ops
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict) or d.get("format") != GRAPH_FORMAT: raise ValueError("not a superopt graph file")
        if d.get("version") != GRAPH_VERSION: raise ValueError(f"graph format version {d.get('version')!r}, this superopt reads {GRAPH_VERSION}")
        nodes: list = []
        for op, dtn, src, arg in d["nodes"]:
            if any(not 0 <= i < len(nodes) for i in src): raise ValueError("a node reads a later node")
            nodes.append(Node(Ops(op), dt.dtype_by_name(dtn), tuple(nodes[i] for i in src), _arg_py(arg)))
        roots = [nodes[i] for i in d["roots"]]
        for r in roots: shape(r)   # checks the graph's shapes
        return roots
    except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: {' '.join(str(e).split())[:200]}") from None


def _record(args, script: Path, machine, plans: dict, progress=None) -> list:
    """Run the script; return the roots it realized (kernelized through plans with --execute,
    which are kept in ``plans``)."""
    from superopt.capture import capture
    from superopt.search import fusion
    from superopt.ir import context
    roots: list = []
    argv, path0 = sys.argv, sys.path[0]
    sys.argv, sys.path[0] = [str(script)] + list(args.script_args), str(script.parent.resolve())

    def planner(r):
        if r not in roots:
            roots.append(r)
            if progress: progress(len(roots), None, "graphs recorded")
        if not args.execute: return None
        if r not in plans: plans[r] = fusion.plan(r, machine, args.peak_limit, args.timeout, args.schedules)
        return plans[r].materialize

    import contextlib
    # with --json the script's prints must not mix into the one JSON object on stdout
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
    try:
        with quiet_stdout, context.use(planner=planner), capture(execute=args.execute):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit:
        pass
    except Exception:
        traceback.print_exc()
        raise UserError(f"{script} failed (graphs realized before the failure: {len(roots)})") from None
    finally:
        sys.argv, sys.path[0] = argv, path0
    return roots


# ---- report ------------------------------------------------------------------------------
def _b(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB": return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _t(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.3f} ms"


def solve(root, machine, args):
    from superopt.search import fusion
    try:
        return fusion.plan(root, machine, args.peak_limit, args.timeout, args.schedules)
    except ValueError as e:
        raise UserError(str(e)) from None


def summary(root, machine, args, p) -> dict:
    """One graph's three plans and their kernels: what the text report prints and ``--json`` holds."""
    from superopt.capture import display_name
    from superopt.ir.graph import shape
    from superopt.search import fusion
    plans = {}
    for name, mat, c in (("unfused", fusion.unfused_plan(root), p.unfused), ("default", fusion.default_plan(root), p.default),
                         ("planned", p.materialize, p.cost)):
        steps = p.steps if name == "planned" else kz_steps(root, mat)
        kernels = [] if args.kernels == "none" or (args.kernels == "planned" and name != "planned") else [
            {"output": st.output, "name": display_name(st.kernel), "min_bytes": st.kernel.min_bytes,
             "time_s": fusion.kernel_time(st.kernel, machine), "ops": fusion.describe_ops(ops)}
            for st, (_, ops) in zip(steps, fusion.kernel_nodes(root, mat))]
        plans[name] = {"kernels": c.kernels, "flops": c.flops, "bytes": c.bytes, "peak_bytes": c.peak_bytes,
                       "time_s": c.time_s, "hand_time_s": fusion.hand_time(steps, machine), "kernel_list": kernels}
    return {"shape": list(shape(root)), "dtype": root.dtype.name, "nodes": len(root.toposort()),
            "candidates": len(fusion.candidates(root)), "machine": machine.name, "plans": plans, "kept": p.source,
            "proved": p.proved, "solve_s": p.solve_s, "scheduled_s": p.scheduled_s or None}


def report(root, machine, args, p=None) -> None:
    p = p or solve(root, machine, args)
    print_summary(summary(root, machine, args, p), args)


def print_summary(d: dict, args) -> None:
    print(f"graph -> {tuple(d['shape'])} {d['dtype']}: {d['nodes']} nodes, {d['candidates']} that may be stored; "
          f"machine {d['machine']}")
    print(f"  {'plan':<9}{'kernels':>8}{'flops':>18}{'bytes moved':>14}{'peak memory':>14}{'modeled time':>15}"
          f"{'hand-rule sched.':>18}")
    for name, c in d["plans"].items():
        print(f"  {name:<9}{c['kernels']:>8}{c['flops']:>18,}{_b(c['bytes']):>14}{_b(c['peak_bytes']):>14}{_t(c['time_s']):>15}"
              f"{_t(c['hand_time_s']):>18}")
    print("  (modeled time: launches + roofline per kernel, what the plan minimizes; hand-rule sched.: the schedule "
          "cost model under hand-rule schedules)")
    how = "proved optimal under the model" if d["proved"] else f"best found in {args.timeout:g} s"
    kept = {"solver": "the solver's plan", "local": "the best single-node-flip plan (the solver found nothing better)", "default": "the default rule (the solver found nothing strictly better)",
            "unfused": "the unfused plan"}[d["kept"]]
    pl = d["plans"]
    print(f"  planned = {kept}; solver: {how}, {d['solve_s']:.1f} s; "
          f"{pl['default']['time_s'] / pl['planned']['time_s']:.2f}x vs default, "
          f"{pl['unfused']['time_s'] / pl['planned']['time_s']:.2f}x vs unfused")
    if d["scheduled_s"]:
        print(f"  re-ranked under {args.schedules} schedules (the schedule cost model): "
              + ", ".join(f"{k} {_t(v)}" for k, v in d["scheduled_s"].items()) + f" -> kept {d['kept']}")
    for name, c in pl.items():
        if args.kernels == "none" or (args.kernels == "planned" and name != "planned"): continue
        print(f"  kernels ({name}):")
        for k in c["kernel_list"]:
            print(f"    {k['output']:<6} {k['name']:<28} {_b(k['min_bytes']):>10} {_t(k['time_s']):>11}  {k['ops']}")


def kz_steps(root, mat):
    import importlib
    return importlib.import_module("superopt.ir.kernelize").kernelize(root, plan=mat)


def run(args: argparse.Namespace) -> int:
    from superopt.search.machine import load
    _own_options(args)
    try:
        machine = load(args.machine)
    except ValueError as e:
        raise UserError(str(e)) from None
    src = Path(args.source)
    if not src.is_file(): raise UserError(f"{src}: no such file")
    plans: dict = {}
    from superopt.progress import progress_for
    with progress_for(args, "plan") as progress:
        if src.suffix == ".json":
            roots = load_graphs(src)
        else:
            roots = _record(args, src, machine, plans, progress)
        if not roots: raise UserError(f"{src}: realized no tensors (call .numpy() on a Tensor)")
        if args.save_graph: save_graphs(roots, Path(args.save_graph))
        for i, r in enumerate(roots):   # solve first, print after: progress lines never split a report
            progress(i, len(roots), "fusion plans solved")
            if r not in plans: plans[r] = solve(r, machine, args)
        progress(len(roots), len(roots), "fusion plans solved")
        out = [summary(r, machine, args, plans[r]) for r in roots]
    if args.json:
        print(json.dumps({"source": str(src), "machine": machine.name, "graphs": out}))
        return 0
    for i, d in enumerate(out):
        if i: print()
        print_summary(d, args)
    return 0

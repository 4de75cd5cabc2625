"""Reports of a ``superopt bench`` run: summary figures, the Markdown tables and the JSON
file (the document ``superopt.benchmark.run`` returns). Plots live in ``superopt.plots``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np


# ---- statistics ---------------------------------------------------------------------------
# one Spearman for bench reports and model fidelity: the search layer's (search/fidelity.py)
from superopt.search.fidelity import ranks, spearman  # noqa: E402,F401


def geomean(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else None


# ---- gathering from the document ------------------------------------------------------------
def kernels(doc: dict) -> list[dict]:
    """Every kernel record of the run, with its suite and workload."""
    return [{**k, "suite": w["suite"], "workload": w["workload"]} for w in doc["workloads"] for k in w["kernels"]]


def fidelity_points(doc: dict) -> list[dict]:
    """(modeled, measured) of every verified schedule the run timed, once per kernel and schedule."""
    pts, seen = [], set()

    def add(k: dict, sched: dict | None, modeled: float | None, measured: float | None, method: str) -> None:
        key = (k["key"], json.dumps(sched, sort_keys=True))
        if modeled and measured and key not in seen:
            seen.add(key)
            pts.append({"kernel": k["name"], "modeled_s": modeled, "measured_s": measured, "method": method})

    for k in kernels(doc):
        for name, m in k["methods"].items():
            add(k, m.get("schedule"), m.get("model_s"), m.get("time_s"), name)
            for c in m.get("candidates") or []:
                if c.get("verified"): add(k, c["schedule"], c["modeled_s"], c["time_s"], name)
            for c in m.get("evaluated") or []:
                add(k, c["schedule"], c["modeled_s"], c["time_s"], name)
    return pts


def fidelity(doc: dict) -> dict:
    """Spearman rho pooled over all points, and per kernel (kernels with >= 5 schedules)."""
    pts = fidelity_points(doc)
    per: dict[str, list[dict]] = {}
    for p in pts: per.setdefault(p["kernel"], []).append(p)
    per_rho = {n: spearman([p["modeled_s"] for p in ps], [p["measured_s"] for p in ps]) for n, ps in per.items() if len(ps) >= 5}
    good = [r for r in per_rho.values() if r is not None]
    return {"points": len(pts), "rho_pooled": spearman([p["modeled_s"] for p in pts], [p["measured_s"] for p in pts]),
            "rho_per_kernel": per_rho, "rho_per_kernel_median": float(np.median(good)) if good else None}


# ---- quality vs tuning time ---------------------------------------------------------------------
def speedup_curve(k: dict, method: str, t: np.ndarray) -> np.ndarray:
    """Speed-up over the hand rules of what ``method`` (beam or z3+beam) had found by each
    elapsed time ``t``: 1 (the hand rules) before its first point, then its start's
    speed-up (1 for BEAM, z3's measured one for z3+beam) times the start's time over
    the best so far, both in BEAM's own measurements."""
    d = k["methods"][method]
    base = 1.0
    if method == "z3+beam":
        hand, z3 = k["methods"]["hand"]["time_s"], d.get("z3_time_s")
        base = hand / z3 if hand and z3 else 1.0
    out = np.ones(len(t))
    for e, best in d["trace"]:
        out[t >= e] = base * d["trace_start_s"] / best
    return out


def quality_curves(doc: dict) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float] | None]:
    """Elapsed-time grid, geomean speed-up curves of beam and z3+beam over kernels, and the
    z3 point (median tuning time, geomean speed-up)."""
    ks = [k for k in kernels(doc) if k["methods"].get("hand", {}).get("time_s")]
    tmax = max([m["tuning_s"] for k in ks for m in k["methods"].values()] + [doc["config"]["budget_s"], 1e-2])
    t = np.geomspace(1e-2, tmax * 1.05, 400)
    curves = {}
    for m in ("beam", "z3+beam"):
        rows = [k for k in ks if k["methods"].get(m, {}).get("trace")]
        if rows: curves[m] = np.exp(np.mean([np.log(speedup_curve(k, m, t)) for k in rows], axis=0))
    z3 = None
    zs = [k["methods"]["z3"] for k in ks if k["methods"].get("z3", {}).get("speedup_vs_hand")]
    if zs: z3 = (float(np.median([z["tuning_s"] for z in zs])), geomean(z["speedup_vs_hand"] for z in zs))
    return t, curves, z3


def headline(doc: dict) -> dict | None:
    """Z3's point against BEAM's curve: BEAM's geomean speed-up at Z3's median tuning time,
    and how long BEAM needed to match Z3 (None: not within the run)."""
    t, curves, z3 = quality_curves(doc)
    if not z3 or "beam" not in curves: return None
    c = curves["beam"]
    at = float(c[np.searchsorted(t, z3[0], side="right") - 1]) if z3[0] >= t[0] else 1.0
    match = np.nonzero(c >= z3[1])[0]
    return {"z3_tuning_s": z3[0], "z3_speedup": z3[1], "beam_speedup_at_z3_time": at,
            "beam_time_to_match_z3_s": float(t[match[0]]) if len(match) else None, "beam_final_speedup": float(c[-1])}


def summary(doc: dict) -> dict:
    """Per method: geomean speed-up over hand rules, wins/losses against hand rules, unverified count,
    median tuning time; per vendor the geomean speed of each tuner against it; model fidelity."""
    ks = kernels(doc)
    methods = doc["config"]["methods"]
    out: dict = {"kernels": len(ks), "workloads": len(doc["workloads"]), "methods": {}}
    for name in methods:
        ms = [k["methods"][name] for k in ks if name in k["methods"]]
        if not ms: continue
        sp = [m.get("speedup_vs_hand") for m in ms]
        z = [m["solve_s"] for m in ms if m.get("solve_s") is not None and "proved_optimal" in m]  # z3's own rows
        out["methods"][name] = {
            "geomean_speedup_vs_hand": geomean(sp), "faster_than_hand": sum(1 for s in sp if s and s > 1.0),
            "slower_than_hand": sum(1 for s in sp if s and s < 1.0), "unverified": sum(1 for m in ms if not m["time_s"]),
            "median_tuning_s": float(np.median([m["tuning_s"] for m in ms])),
            **({"median_solve_s": float(np.median(z)), "proved_optimal": sum(1 for m in ms if m.get("proved_optimal"))} if z else {})}
    for v in [m for m in methods if m in ("tinygrad-hand", "tinygrad-beam", "numpy", "torch")]:
        for name in [m for m in methods if m in out["methods"]]:
            ws = [w["methods"] for w in doc["workloads"]]
            r = geomean(w[v]["time_s"] / w[name]["time_s"] for w in ws if w[v]["time_s"] and w[name]["time_s"])
            out["methods"][name][f"geomean_speed_vs_{v}"] = r
    out["fidelity"] = fidelity(doc)
    out["headline"] = headline(doc)
    return out


# ---- Markdown --------------------------------------------------------------------------------
def _us(t: float | None) -> str:
    if t is None: return "—"
    return f"{t * 1e6:.3g}" if t < 1e-3 else f"{t * 1e6:,.0f}"


def _x(s: float | None) -> str: return (f"{s:.2f}×" if s >= 0.1 else f"{s:.2g}×") if s else "—"
def _pct(p: float | None) -> str: return f"{p:.1f}%" if p is not None else "—"


def _cell_time(m: dict) -> str:
    if not m["time_s"]: return "**unverified**" if m.get("verified") is False else "n/a"
    cell = _us(m["time_s"]) + (f" ({_x(m['speedup_vs_hand'])})" if m.get("speedup_vs_hand") and m["method"] != "hand" else "")
    return cell + (f", tuned {m['tuning_s']:.1f} s" if m["method"].startswith("tinygrad") else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def markdown(doc: dict, plots: list[str] | None = None) -> str:
    cfg, m = doc["config"], doc["machine"]
    tuners = [t for t in cfg["methods"] if t in ("hand", "z3", "beam", "z3+beam")]
    vendors = [t for t in cfg["methods"] if t in ("tinygrad-hand", "tinygrad-beam", "numpy", "torch")]
    s = summary(doc)
    dev = (doc.get("device") or {}).get("name") or doc["host"].get("cpu") or m["name"]
    out = [f"# superopt bench: {', '.join(cfg['suites'])}{' (small)' if cfg['small'] else ''} on {cfg['backend']}", "",
           f"- command: `{doc['command']}`", f"- when: {doc['date']}, {doc['wall_s']:.0f} s wall",
           f"- device: {dev}; machine `{m['name']}` ({m['cores']} cores/SMs) as the cost model sees it: {_ceil(m)}",
           f"- roofline: {_ceil(doc.get('roofline') or m)}{' (measured in this run, --calibrate)' if doc.get('calibration') else ''}",
           f"- budget {cfg['budget_s']:g} s per kernel and method; timer: median of {cfg['repeat']} samples",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()), "",
           *([f"**Partial run:** it stopped after {len(doc['workloads'])} workloads; the rest were not measured.", ""]
             if doc.get("partial") else []), "## Summary", ""]
    rows = []
    for name, d in s["methods"].items():
        vs = "; ".join(f"{_x(d[k])} vs {k.split('_vs_')[1]}" for k in d if k.startswith("geomean_speed_vs_") and d[k])
        rows.append([name, _x(d["geomean_speedup_vs_hand"]), f"{d['faster_than_hand']}/{d['slower_than_hand']}",
                     str(d["unverified"]), f"{d['median_tuning_s']:.2f}",
                     f"{d['median_solve_s']:.2f} ({d['proved_optimal']} proved)" if "median_solve_s" in d else "—", vs or "—"])
    out += _table(["method", "geomean speed-up vs hand", "faster/slower than hand", "unverified", "median tuning s",
                   "median solve s", "whole workloads vs vendor"], rows)
    h = s.get("headline")
    if h:
        match = f"BEAM matched it after {h['beam_time_to_match_z3_s']:.1f} s" if h["beam_time_to_match_z3_s"] else \
            "BEAM did not match it within the run"
        out += ["", f"Quality vs tuning time (geomean over kernels, BEAM in its own measurements): Z3 reached "
                    f"{_x(h['z3_speedup'])} over the hand rules in a median {h['z3_tuning_s']:.1f} s per kernel; "
                    f"BEAM had {_x(h['beam_speedup_at_z3_time'])} by then; {match}; BEAM ended at {_x(h['beam_final_speedup'])}."]
    f = s["fidelity"]
    out += ["", f"Model fidelity: Spearman ρ(modeled, measured) = {_rho(f['rho_pooled'])} pooled over {f['points']} "
                f"verified schedules; median per kernel {_rho(f['rho_per_kernel_median'])} "
                f"({len(f['rho_per_kernel'])} kernels with ≥ 5 schedules).", ""]
    out += ["## Kernels: median time in µs (speed-up over hand rules)", ""]
    head = ["suite", "kernel", "kind"] + tuners + (["z3 modeled µs", "z3 solve s"] if "z3" in tuners else [])
    rows = []
    for k in kernels(doc):
        r = [k["suite"], k["name"], k["kind"]] + [_cell_time(k["methods"][t]) for t in tuners]
        if "z3" in tuners:
            z = k["methods"]["z3"]
            r += [_us(z.get("modeled_s")), "—" if z.get("solve_s") is None else
                  f"{z['solve_s']:.2f}" + ("" if z.get("proved_optimal") else " (not proved)")]
        rows.append(r)
    out += _table(head, rows)
    out += ["", "## Kernels: throughput and % of roofline; tuning time in s", ""]
    head = ["kernel"] + [f"{t} rate" for t in tuners] + [f"{t} % roof" for t in tuners] + [f"{t} tuning s" for t in tuners]
    rows = []
    for k in kernels(doc):
        ms = [k["methods"][t] for t in tuners]
        rows.append([k["name"]] + [f"{d['rate']:.3g} {d['rate_unit']}" if d["rate"] else "—" for d in ms] +
                    [_pct(d["roofline_pct"]) for d in ms] + [f"{d['tuning_s']:.2f}" for d in ms])
    out += _table(head, rows)
    out += ["", "## Workloads: what is timed, and vendor libraries (median µs; speed-up over hand rules)", ""]
    head = ["suite", "workload", "timed"] + tuners + vendors
    rows = [[w["suite"], w["workload"], w["timed"]] + [_cell_time({**w["methods"][t], "method": t}) for t in tuners + vendors]
            for w in doc["workloads"]]
    out += _table(head, rows)
    out += _families(doc)
    bad = [(k["name"], t, d.get("reason") or "") for k in kernels(doc) for t, d in k["methods"].items() if not d["time_s"]]
    if bad:
        out += ["", "## Unverified (no time reported, never a win)", ""]
        out += [f"- {n} / {t}: {r[:240].replace(chr(10), ' ')}" for n, t, r in bad]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    out += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(out) + "\n"


def _proof(f: dict) -> str:
    """One family's proof status under its model, said plainly."""
    if f.get("method") is None: return f"failed ({(f.get('error') or '')[:60]})"
    st = "proved optimal" if f["proved_optimal"] else f"bound {_us(f['bound_s'])} µs" if f.get("bound_s") else "not proved"
    return f"{f['method']}, {st}, {f['solve_s']:.2f} s"


def _families(doc: dict) -> list[str]:
    """Per kernel, each schedule family the z3 method asked: how it solved, its proof status
    under its model, and which family's schedule z3 kept."""
    rows = [[k["name"], k["methods"]["z3"].get("family") or "—", f["family"], _proof(f)]
            for k in kernels(doc) if "z3" in k["methods"] for f in k["methods"]["z3"].get("families") or []]
    if not rows: return []
    return ["", "## Schedule families asked by z3: proof status under each family's model", ""] + \
        _table(["kernel", "kept", "family", "method, proof, solve time"], rows)


def _ceil(m: dict) -> str:
    return (f"peak {m['flops_fp32'] / 1e9:,.0f} GFLOP/s fp32, DRAM {m['dram_bw'] / 1e9:,.0f} GB/s "
            f"({'calibrated' if m['calibrated'] else 'datasheet, not calibrated'})")


def _rho(r: float | None) -> str: return f"{r:.2f}" if r is not None else "n/a"


# ---- files ---------------------------------------------------------------------------------
def write(doc: dict, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write results.json, the plots (when matplotlib is present) and results.md into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    doc["summary"] = summary(doc)
    made: list[Path] = []
    if plots:
        from superopt import plots as P
        made = P.write_all(doc, d)
    # compact: BEAM's timed candidates make this file large (read it with jq or Python)
    (d / "results.json").write_text(json.dumps(doc, separators=(",", ":"), default=str) + "\n")
    (d / "results.md").write_text(markdown(doc, [str(p) for p in made]))
    return [d / "results.json", d / "results.md", *made]

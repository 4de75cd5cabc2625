"""PNG plots of a ``superopt bench`` run (needs matplotlib: ``pip install superopt[plots]``).

- ``speedup.png``: speed-up of each tuner over the hand rules, kernel by kernel;
- ``quality_vs_time.png``: best measured speed-up found so far against tuning time,
  geometric mean over kernels — BEAM and z3+BEAM curves, the Z3 point on the same axes,
  shaded where Z3's answer is ahead of what BEAM has found by then;
- ``quality_vs_time_kernels.png``: the same, one small panel per kernel;
- ``roofline.png``: each kernel's achieved GFLOP/s against its arithmetic intensity under
  the machine's roofline;
- ``model_fidelity.png``: modeled vs measured time of every verified schedule timed,
  with Spearman's rho.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from superopt import report

STYLE = {"hand": ("tab:gray", "o"), "z3": ("tab:red", "*"), "beam": ("tab:blue", "^"), "z3+beam": ("tab:purple", "s")}
MISSING = "plots need matplotlib: pip install 'superopt[plots]' (or pip install matplotlib)"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_all(doc: dict, out: Path) -> list[Path]:
    """Every plot that applies to this run; [] (and a message) without matplotlib."""
    if not have_matplotlib():
        print(f"superopt bench: no plots: {MISSING}")
        return []
    made = [speedup(doc, out / "speedup.png"), quality_vs_time(doc, out / "quality_vs_time.png"),
            quality_vs_time_kernels(doc, out / "quality_vs_time_kernels.png"),
            roofline(doc, out / "roofline.png"), model_fidelity(doc, out / "model_fidelity.png")]
    return [p for p in made if p is not None]


def _title(doc: dict) -> str:
    c = doc["config"]
    dev = (doc.get("device") or {}).get("name") or doc["machine"]["name"]
    return f"{','.join(c['suites'])}{' small' if c['small'] else ''} on {c['backend']} ({dev}), budget {c['budget_s']:g} s"


def _tuners(doc: dict, hand: bool = False) -> list[str]:
    return [m for m in doc["config"]["methods"] if m in STYLE and (hand or m != "hand")]


# ---- speed-up bars -----------------------------------------------------------------------------
def speedup(doc: dict, path: Path) -> Path | None:
    methods = _tuners(doc)
    ks = report.kernels(doc)
    if not methods or "hand" not in doc["config"]["methods"] or not ks: return None
    plt = _plt()
    n, h = len(ks), 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * n * max(1, len(methods) / 2)))
    for j, m in enumerate(methods):
        ys = np.arange(n) + (j - (len(methods) - 1) / 2) * h
        vals = [k["methods"][m].get("speedup_vs_hand") for k in ks]
        # bars start at 1 (= hand rules): right of it faster, left of it slower
        ax.barh(ys, [(v or 1.0) - 1.0 for v in vals], height=h, color=STYLE[m][0], label=m, left=1.0)
        for y, v in zip(ys, vals):
            if not v: ax.text(1.0, y, " unverified", va="center", fontsize=7, color=STYLE[m][0])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    lim = max([abs(math.log10(v)) for k in ks for m in methods if (v := k["methods"][m].get("speedup_vs_hand"))] + [0.1])
    ax.set_xlim(10 ** (-1.15 * lim), 10 ** (1.15 * lim))
    _times_axis(ax.xaxis)
    ax.set_yticks(np.arange(n), [f"{k['suite']}: {k['name']}" for k in ks], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # first kernel on top, no empty margins
    ax.set_xlabel("speed-up over hand rules (measured, log scale; > 1 is faster)")
    ax.set_title(_title(doc), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    return _save(fig, path)


def _times_axis(axis) -> None:
    """Plain 0.5x / 2x tick labels on a log axis."""
    from matplotlib.ticker import FuncFormatter
    fmt = FuncFormatter(lambda v, _: f"{v:g}×")
    axis.set_major_formatter(fmt)
    lead = lambda v: round(v / 10 ** math.floor(math.log10(v)))  # noqa: E731
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}×" if v > 0 and lead(v) in (2, 5) else ""))


# ---- quality vs tuning time ----------------------------------------------------------------------
def quality_vs_time(doc: dict, path: Path) -> Path | None:
    t, curves, z3 = report.quality_curves(doc)
    if not curves and not z3: return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for m, c in curves.items():
        ax.step(t, c, where="post", color=STYLE[m][0], lw=2, label=f"{m}: best found so far")
    if z3:
        ax.plot([z3[0]], [z3[1]], STYLE["z3"][1], color=STYLE["z3"][0], ms=16, label=f"z3 (median tuning {z3[0]:.1f} s)", zorder=5)
        ax.hlines(z3[1], z3[0], t[-1], colors=STYLE["z3"][0], linestyles="--", lw=1)
        if "beam" in curves:
            ahead = (t >= z3[0]) & (curves["beam"] < z3[1])
            if ahead.any():
                ax.fill_between(t, curves["beam"], z3[1], where=ahead, color=STYLE["z3"][0], alpha=0.15, step="post",
                                label="Z3 ahead of BEAM")
    ax.axhline(1.0, color=STYLE["hand"][0], lw=1, label="hand rules")
    ax.set_xscale("log")
    ax.set_xlabel("tuning time per kernel, s (log scale)")
    ax.set_ylabel("speed-up over hand rules\n(geometric mean over kernels, measured)")
    ax.set_title("Quality vs tuning time — " + _title(doc), fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def quality_vs_time_kernels(doc: dict, path: Path) -> Path | None:
    ks = [k for k in report.kernels(doc) if k["methods"].get("hand", {}).get("time_s")
          and any(k["methods"].get(m, {}).get("trace") for m in ("beam", "z3+beam"))]
    if not ks: return None
    plt = _plt()
    cols = min(6, len(ks))
    rows = math.ceil(len(ks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows + 0.6), squeeze=False)
    for ax, k in zip(axes.flat, ks):
        tmax = max(m["tuning_s"] for m in k["methods"].values()) * 1.05
        t = np.geomspace(1e-2, tmax, 300)
        for m in ("beam", "z3+beam"):
            if k["methods"].get(m, {}).get("trace"):
                ax.step(t, report.speedup_curve(k, m, t), where="post", color=STYLE[m][0], lw=1.5)
        z = k["methods"].get("z3")
        if z and z.get("speedup_vs_hand"):
            ax.plot([z["tuning_s"]], [z["speedup_vs_hand"]], STYLE["z3"][1], color=STYLE["z3"][0], ms=10)
        ax.axhline(1.0, color=STYLE["hand"][0], lw=1)
        ax.set_xscale("log")
        ax.set_title(k["name"][:32], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ks):]: ax.axis("off")
    handles = [plt.Line2D([], [], color=STYLE[m][0], lw=2, label=m) for m in ("beam", "z3+beam")] + \
        [plt.Line2D([], [], color=STYLE["z3"][0], marker="*", ls="", ms=10, label="z3"),
         plt.Line2D([], [], color=STYLE["hand"][0], lw=1, label="hand rules")]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=4)
    fig.suptitle("Speed-up over hand rules vs tuning time (s, log) per kernel — " + _title(doc), fontsize=10, x=0.02, ha="left")
    return _save(fig, path)


# ---- roofline ------------------------------------------------------------------------------
def roofline(doc: dict, path: Path) -> Path | None:
    ks = [k for k in report.kernels(doc) if k["flops"] > 0]
    methods = _tuners(doc, hand=True)
    if not ks or not methods: return None
    plt = _plt()
    m = doc.get("roofline") or doc["machine"]
    peak, bw = m["flops_fp32"] / 1e9, m["dram_bw"] / 1e9
    xs = np.array([k["intensity"] for k in ks])
    x = np.geomspace(min(xs.min(), peak / bw) / 4, max(xs.max(), peak / bw) * 4, 200)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.plot(x, np.minimum(peak, x * bw), color="black", lw=2,
            label=f"roofline: {peak:,.0f} GFLOP/s, {bw:,.0f} GB/s{' (calibrated)' if m['calibrated'] else ''}")
    for k in ks:  # one thin line spans each kernel's methods
        ys = [k["flops"] / d["time_s"] / 1e9 for d in k["methods"].values() if d.get("time_s")]
        if len(ys) > 1: ax.plot([k["intensity"]] * 2, [min(ys), max(ys)], color="lightgray", lw=1, zorder=1)
    for meth in methods:
        pts = [(k["intensity"], k["flops"] / d["time_s"] / 1e9) for k in ks if (d := k["methods"].get(meth)) and d.get("time_s")]
        if pts:
            a = np.array(pts)
            ax.scatter(a[:, 0], a[:, 1], marker=STYLE[meth][1], color=STYLE[meth][0], s=40 if meth != "z3" else 90,
                       label=meth, zorder=3, alpha=0.85)
    ax.set_xscale("log"); ax.set_yscale("log")  # noqa: E702
    ax.set_xlabel("arithmetic intensity, flop / compulsory byte (log)")
    ax.set_ylabel("achieved GFLOP/s (log)")
    ax.set_title("Roofline — " + _title(doc), fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


# ---- model fidelity ------------------------------------------------------------------------------
def model_fidelity(doc: dict, path: Path) -> Path | None:
    pts = report.fidelity_points(doc)
    if len(pts) < 2: return None
    f = report.fidelity(doc)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for meth in sorted({p["method"] for p in pts}, key=lambda s: list(STYLE).index(s) if s in STYLE else 9):
        a = np.array([(p["modeled_s"] * 1e6, p["measured_s"] * 1e6) for p in pts if p["method"] == meth])
        c, mk = STYLE.get(meth, ("black", "."))
        ax.scatter(a[:, 0], a[:, 1], color=c, marker=mk, s=25, alpha=0.6, label=f"{meth} ({len(a)})")
    lo = min(min(p["modeled_s"], p["measured_s"]) for p in pts) * 1e6 / 1.5
    hi = max(max(p["modeled_s"], p["measured_s"]) for p in pts) * 1e6 * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="measured = modeled")
    ax.set_xscale("log"); ax.set_yscale("log")  # noqa: E702
    ax.set_xlabel("modeled time, µs (log)")
    ax.set_ylabel("measured time (median), µs (log)")
    rho = lambda r: f"{r:.2f}" if r is not None else "n/a"  # noqa: E731
    ax.set_title(f"Model fidelity: Spearman ρ = {rho(f['rho_pooled'])} pooled ({f['points']} schedules),\n"
                 f"median per kernel {rho(f['rho_per_kernel_median'])} ({len(f['rho_per_kernel'])} kernels with ≥ 5)", fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path

"""int8 GEMM and NHWC convolutions on HVX through the hvx_gemm family vs plain scalar C,
counted by qemu (issue 23).

    python bench/hexagon_asm.py            # writes bench/results/dsp-asm-conv.json

Per kernel: the family's solve (branch and bound over corr/unroll/rows/blocks under the
packet model, its time and proof status), the top candidates and the hand rule lowered,
compiled, verified bit-exact against numpy and counted through ``HexagonBackend`` (the
engine's ``measure``: qemu's c20/c21/c22 around the kernel call, weights prepacked before),
the counted phases of the best (padding copy, correction pass, assembly, requantize: c20
read between them in a separate build), every emitted packet checked by llvm-mc, and the
naive loops in C (clang -O3) counted the same way in the same run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from superopt.backends.hexagon import HexagonBackend, asm_gemm, tools  # noqa: E402
from superopt.engine.measure import measure  # noqa: E402
from superopt.ir import dtypes as dt, hvx  # noqa: E402
from superopt.ir.lower import lower  # noqa: E402
from superopt.kernels.registry import Workload  # noqa: E402
from superopt.search.families import hvx as fam  # noqa: E402

I8 = dt.int8


def _conv(c, h, w, k, r, stride=1, pad=None, kind="conv2d"):
    p = dict(N=1, C=c, H=h, W=w, K=k, R=r, S=r, stride=stride, pad=r // 2 if pad is None else pad)
    if kind == "conv2d": p.update(layout="nhwc", dtype=I8)
    return Workload.make(kind, **p)


KERNELS = [
    ("conv 3x3, 16x16, 32->32", lambda: _conv(32, 16, 16, 32, 3)),
    ("conv 5x5, 32x32, 16->32", lambda: _conv(16, 32, 32, 32, 5)),
    ("conv 1x1, 16x16, 32->32", lambda: _conv(32, 16, 16, 32, 1)),
    ("matmul 256^3", lambda: Workload.make("matmul", M=256, N=256, K=256, dtype=I8)),
    ("conv 7x7, 16x16, 16->32", lambda: _conv(16, 16, 16, 32, 7)),
    ("conv 3x3 stride 2, 32x32, 32->32", lambda: _conv(32, 32, 32, 32, 3, stride=2)),
    ("qconv 3x3 (requantized to int8), 16x16, 32->32", lambda: _conv(32, 16, 16, 32, 3, kind="qconv2d")),
]


def scalar_c(g: dict, inputs: list, output) -> str:
    """The naive loops over the natural layouts (int32 accumulate; a requantized kernel's
    scalar baseline is its int32 convolution, the requantize left out)."""
    from superopt.backends.cpu.render import STORAGE
    from superopt.backends.hexagon.render import COUNTERS
    decl = "\n".join(f"static {STORAGE[b.dtype.name]} g_in{i}[{b.size}] __attribute__((aligned(128)));"
                     for i, b in enumerate(inputs))
    x, w = f"g_in{g['a_in']}", f"g_in{g['b_in']}"
    if g["conv"]:
        loop = f"""
  for (int oy = 0; oy < {g['oh']}; oy++) for (int ox = 0; ox < {g['ow']}; ox++) for (int n = 0; n < {g['n']}; n++) {{
    int s = 0;
    for (int ky = 0; ky < {g['kh']}; ky++) for (int kx = 0; kx < {g['kw']}; kx++) {{
      int iy = oy * {g['stride']} + ky - {g['pad']}, ix = ox * {g['stride']} + kx - {g['pad']};
      if (iy < 0 || iy >= {g['h']} || ix < 0 || ix >= {g['w']}) continue;
      for (int c = 0; c < {g['c_in']}; c++)
        s += {x}[(iy * {g['w']} + ix) * {g['c_in']} + c] * {w}[n * {g['w_n']} + ky * {g['w_ky']} + kx * {g['w_kx']} + c * {g['w_c']}];
    }}
    g_acc[(oy * {g['ow']} + ox) * {g['c_rs']} + n] = s;
  }}"""
    else:
        loop = f"""
  for (int i = 0; i < {g['m']}; i++) for (int n = 0; n < {g['n']}; n++) {{ int s = 0;
    for (int k = 0; k < {g['k']}; k++) s += {x}[i * {g['a_rs']} + k] * {w}[n * {g['w_n']} + k * {g['w_c']}];
    g_acc[i * {g['c_rs']} + n] = s; }}"""
    reads = "".join(f"  if (so_read_all(g_in{i}, {b.size * b.dtype.itemsize})) return 3;\n" for i, b in enumerate(inputs))
    return f"""{decl}
static int32_t g_acc[{g['m'] * g['c_rs']}] __attribute__((aligned(128)));
{chr(10).join(COUNTERS)}
__attribute__((noinline)) void so_kernel(void) {{{loop}
}}
int so_main(void) {{
{reads}  unsigned c0[3], c1[3], e0[3], e1[3];
  so_counters(e0); so_counters(e1); so_counters(c0); so_kernel(); so_counters(c1);
  if (so_write_all(g_acc, sizeof(g_acc))) return 4;
  {{ unsigned n[3]; for (int i = 0; i < 3; i++) n[i] = (c1[i] - c0[i]) - (e1[i] - e0[i]); if (so_counters_out(n)) return 5; }}
  return 0;
}}
"""


def _stdin(inputs) -> bytes:
    return b"".join(np.ascontiguousarray(a).tobytes() for a in inputs)


def run_scalar(g, kernel, inputs) -> dict:
    exe = tools.compile_o3(scalar_c(g, list(kernel.inputs), kernel.output))
    if isinstance(exe, tools.Failure): return {"error": str(exe)}
    r = tools.run_counted(exe, _stdin(inputs), g["m"] * g["c_rs"] * 4, 3600)
    if isinstance(r, tools.Failure): return {"error": str(r)}
    acc = np.frombuffer(r[0], dtype=np.int32)
    x, w = (inputs[g["a_in"]].astype(np.int64), inputs[g["b_in"]].astype(np.int64))
    ok = _int32_reference_ok(kernel, g, acc, x, w)
    return {"packets": r[1][0], "instructions": r[1][1], "macs_per_packet": round(fam.macs(g) / r[1][0], 2), "bit_exact": ok}


def _int32_reference_ok(kernel, g, acc, x, w) -> bool:
    """The int32 convolution / GEMM in numpy (for the requantized kernel: before requantize)."""
    if not g["conv"]:
        ref = x.reshape(g["m"], g["k"]) @ w.reshape(g["k"], g["n"])
        return bool((acc.reshape(g["m"], g["n"]) == ref).all())
    xp = np.pad(x.reshape(g["h"], g["w"], g["c_in"]), ((g["pad"],) * 2, (g["pad"],) * 2, (0, 0)))
    wt = w.reshape(g["n"], g["kh"], g["kw"], g["c_in"])
    s = g["stride"]
    ref = np.zeros((g["oh"], g["ow"], g["n"]), np.int64)
    for ky in range(g["kh"]):
        for kx in range(g["kw"]):
            win = xp[ky:ky + s * g["oh"]:s, kx:kx + s * g["ow"]:s, :]
            ref += np.einsum("yxc,nc->yxn", win, wt[:, ky, kx, :])
    return bool((acc.reshape(ref.shape) == ref).all())


def phases(g, p, kernel, inputs) -> dict:
    """Packets of each counted phase of the best candidate (a build with c20 read between them)."""
    exe = tools.compile_program(asm_gemm.c_program(g, p, list(kernel.inputs), kernel.output, parts=True))
    if isinstance(exe, tools.Failure): return {"error": str(exe)}
    t = tools.find_tools()
    r = subprocess.run([t.qemu, str(exe)], input=_stdin(inputs), capture_output=True, timeout=600)
    m = re.search(rb"so-parts((?: \w+=\d+)+)", r.stderr)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1).decode())} if m else {"error": "no parts line"}


def one(name: str, work: Workload, be: HexagonBackend, top: int = 3) -> dict:
    """Full-range int8 inputs (the workload's ranges: bias and multiplier of a qconv)."""
    kernel = work.kernel
    g = hvx.match(kernel)
    inputs = work.random_inputs(0)
    solved = fam.FAMILY.solve(kernel, be.machine, timeout_s=30.0, top=top)
    rows = []
    for c in solved.candidates[:top]:
        m = measure(kernel, c.schedule, be, "solver", inputs=inputs)
        p = dict(c.schedule.params)
        rows.append({"params": p, "modeled_packets": fam.modeled_packets(g, p), "verified": m.verified, "reason": m.reason,
                     "packets": m.extra.get("packets"), "hvx_instructions": m.extra.get("hvx_instructions"),
                     "macs_per_packet": round(fam.macs(g) / m.extra["packets"], 2) if m.extra.get("packets") else None})
    hs = fam.FAMILY.hand(kernel, be.machine)
    hm = measure(kernel, hs, be, "hand", inputs=inputs)
    hp = dict(hs.params)
    best = min((r for r in rows if r["verified"]), key=lambda r: r["packets"], default=None)
    flat = [a.reshape(-1) for a in inputs]
    out = {"kernel": name, "geometry": g, "macs": fam.macs(g),
           "solve": {"s": round(solved.solve_s, 2), "method": solved.method, "proved_optimal": solved.proved_optimal,
                     "bound_packets": round(solved.bound_s * fam._clock(be.machine)) if solved.bound_s else None,
                     "points": solved.detail.get("points"), "priced": solved.detail.get("priced"),
                     "packings_proved": solved.detail.get("packings_proved"), "modeled_table": solved.detail.get("modeled_packets")},
           "candidates": rows,
           "hand": {"params": hp, "verified": hm.verified, "packets": hm.extra.get("packets"),
                    "macs_per_packet": round(fam.macs(g) / hm.extra["packets"], 2) if hm.extra.get("packets") else None},
           "solver_pick_is_best_counted": bool(best and rows[0]["packets"] == best["packets"])}
    if best:
        out["best"] = best
        out["phases_packets"] = phases(g, best["params"], kernel, flat)
        out["llvm_mc_packets_legal"] = asm_gemm.check_packets(asm_gemm.emit(g, best["params"])) is None
        out["code_packets"] = asm_gemm.count_packets(asm_gemm.emit(g, best["params"]))
    out["scalar_c_O3"] = run_scalar(g, kernel, flat)
    if best and out["scalar_c_O3"].get("packets"):
        out["ratio_scalar_over_ours"] = round(out["scalar_c_O3"]["packets"] / best["packets"], 1)
    return out


def main() -> None:
    # a fresh cache: the solve times below include every Z3 packing (none reused from earlier runs)
    os.environ["SUPEROPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="dsp-asm-bench-")
    if tools.find_tools() is None or asm_gemm.check_packets("") == "llvm-mc not found":
        print(tools.missing_message() + " (and llvm-mc)"); sys.exit(2)
    vers = tools.tool_versions()
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    out = subprocess.run([mc, "--version"], capture_output=True, text=True).stdout
    vers["llvm-mc"] = next((ln.strip() for ln in out.splitlines() if "version" in ln.lower()), "?")
    be = HexagonBackend(timeout_s=600)
    res = {"command": "python bench/hexagon_asm.py", "tool_versions": vers, "cpu": "hexagonv66 under qemu, HVX 128B",
           "note": "counts are qemu's c20 (packets), deterministic; solve_s with an empty packing cache, on a host "
                   "shared with other jobs (2 cores)",
           "scalar_c_flags": "clang --target=hexagon -mcpu=hexagonv66 -O3 (naive loops over the natural layouts)",
           "kernels": []}
    only = sys.argv[1:]
    for name, make in KERNELS:
        if only and not any(o in name for o in only): continue
        t0 = time.perf_counter()
        r = one(name, make(), be)
        r["bench_s"] = round(time.perf_counter() - t0, 1)
        b = r.get("best", {})
        print(json.dumps({"kernel": name, "params": b.get("params"), "packets": b.get("packets"),
                          "modeled": b.get("modeled_packets"), "macs_per_packet": b.get("macs_per_packet"),
                          "hand": r["hand"]["macs_per_packet"], "scalar": r["scalar_c_O3"].get("macs_per_packet"),
                          "solve_s": r["solve"]["s"], "proved": r["solve"]["proved_optimal"], "phases": r.get("phases_packets")}),
              flush=True)
        res["kernels"].append(r)
    if only: return   # a partial run (names given) writes nothing
    out = ROOT / "bench" / "results" / "dsp-asm-conv.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()

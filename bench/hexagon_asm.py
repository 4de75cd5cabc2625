"""int8 GEMM on HVX as solver-packed assembly vs plain scalar C, counted by qemu (issue 23).

    python bench/hexagon_asm.py            # writes bench/results/dsp-asm-gemm.json

Per kernel: the blocking chosen by exact enumeration of the modeled packets (Z3-packed
loop body x iterations + per-tile overhead), qemu's c20 packets around the kernel call
(the whole kernel is the emitted assembly, the rowsum correction included; the model
leaves out the call and the frame save/restore), MACs per packet, and the naive triple loop in C (clang -O3) counted the
same way in the same run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from superopt.backends.hexagon import asm_gemm as g  # noqa: E402
from superopt.backends.hexagon import tools  # noqa: E402

KERNELS = [("matmul_256x256x256", 256, 256, 256),
           ("conv1x1_nhwc_1x16x16x32_to_32 (matmul over pixels)", 256, 32, 32)]


def one(name: str, m: int, n: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    ref = a.astype(np.int64) @ b.astype(np.int64)
    t0 = time.perf_counter()
    bl, modeled, pk, table = g.choose(m, n, k)
    choose_s = time.perf_counter() - t0
    asm = g.emit_asm(bl, m, n, k, pk)
    legal = g.check_packets(asm)
    ra = g.run(a, b, asm)
    rs = g.run(a, b, None)
    if isinstance(ra, tools.Failure) or isinstance(rs, tools.Failure):
        return {"kernel": name, "error": str(ra if isinstance(ra, tools.Failure) else rs)}
    (ca, cnta), (cs, cnts) = ra, rs
    macs = m * n * k
    return {"kernel": name, "M": m, "N": n, "K": k, "blocking": {"rows": bl.rows, "col_blocks_32": bl.blocks},
            "modeled_table": table, "choose_s": round(choose_s, 2),
            "loop_body_packets": len(pk), "loop_body": pk,
            "packets_modeled": modeled, "packets_counted": cnta[0],
            "instructions_counted": cnta[1], "hvx_instructions_counted": cnta[2],
            "macs_per_packet": round(macs / cnta[0], 2),
            "scalar_c_packets": cnts[0], "scalar_c_macs_per_packet": round(macs / cnts[0], 3),
            "ratio_scalar_over_asm": round(cnts[0] / cnta[0], 2),
            "llvm_mc_packets_legal": legal is None,
            "bit_exact": bool((ca == ref).all()), "scalar_bit_exact": bool((cs == ref).all())}


def main() -> None:
    if tools.find_tools() is None or shutil.which("llvm-mc") is None:
        print(tools.missing_message()); sys.exit(2)
    vers = tools.tool_versions()
    vers["llvm-mc"] = subprocess.run(["llvm-mc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[0].strip()
    res = {"command": "python bench/hexagon_asm.py", "tool_versions": vers, "cpu": "hexagonv66 (qemu), HVX 128B",
           "scalar_c_flags": "clang --target=hexagon -mcpu=hexagonv66 -O3 (naive triple loop)",
           "kernels": []}
    for name, m, n, k in KERNELS:
        r = one(name, m, n, k)
        print(json.dumps({x: r.get(x) for x in ("kernel", "packets_counted", "packets_modeled",
                                                 "macs_per_packet", "scalar_c_packets", "ratio_scalar_over_asm", "bit_exact")}))
        res["kernels"].append(r)
    out = ROOT / "bench" / "results" / "dsp-asm-gemm.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()

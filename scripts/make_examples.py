"""Regenerate the example kernel files in kernels/examples: ``python scripts/make_examples.py``.
(A script above the package: it writes files through superopt.io, which kernels/ may not import.)

- matmul_512: fp32 C[512,512] = A[512,512] @ B[512,512], one kernel.
- softmax_1024: fp32 row softmax of x[1024,1024], one row kernel (max, sum of exp and
  normalize in one pass each over the row).
Each is written as .pkl and as a .json twin.
"""
from __future__ import annotations

from pathlib import Path

from superopt.io import save_kernel
from superopt.kernels import Workload

EXAMPLES = [Workload.make("matmul", name="matmul_512", M=512, N=512, K=512),
            Workload.make("softmax", name="softmax_1024", M=1024, N=1024)]


def main(out_dir: Path = Path(__file__).resolve().parents[1] / "kernels" / "examples") -> None:
    for w in EXAMPLES:
        what = w.steps if len(w.steps) > 1 else w.kernel
        for ext in ("pkl", "json"):
            p = save_kernel(what, out_dir / f"{w.name}.{ext}", main=w.main if len(w.steps) > 1 else None)
            print(f"wrote {p.name}: {len(w.steps)} kernel(s), main {w.main}, key {w.kernel.key}")


if __name__ == "__main__":
    main()

"""Compare two kernel caches filled by `superopt tune-cache` (e.g. a local run and a `--ray` run
of the same capture): the same kernels, each verified, the same schedule or times within noise.

    python bench/ray_compare.py LOCAL.sqlite RAY.sqlite --backend cuda --out ray-vs-local.json
"""
from __future__ import annotations

import argparse
import json
import sys

from superopt.cache import Cache


def rows(path: str, backend: str) -> dict:
    with Cache(path) as c:
        return {e.kernel_key: e for e in c.entries(backend=backend)}


def compare(a: dict, b: dict, noise: float) -> dict:
    keys = sorted(set(a) | set(b))
    per = []
    for k in keys:
        ea, eb = a.get(k), b.get(k)
        same = ea is not None and eb is not None and json.loads(ea.schedule) == json.loads(eb.schedule)
        ratio = (eb.measured_s / ea.measured_s) if ea and eb and ea.measured_s and eb.measured_s else None
        per.append(dict(kernel=k, name=(ea or eb).name, local_s=ea.measured_s if ea else None,
                        ray_s=eb.measured_s if eb else None, ray_over_local=ratio, same_schedule=same,
                        verified=bool(ea and eb and ea.verified and eb.verified),
                        tunes=[ea.tunes if ea else 0, eb.tunes if eb else 0]))
    agree = all(p["verified"] and (p["same_schedule"] or (p["ray_over_local"] is not None
                                                            and abs(p["ray_over_local"] - 1) <= noise)) for p in per)
    return dict(kernels=per, same_keys=set(a) == set(b), agree_within_noise=agree, noise=noise,
                same_schedules=sum(p["same_schedule"] for p in per))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("local")
    ap.add_argument("ray")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--noise", type=float, default=0.05, help="relative time difference taken as noise")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    res = compare(rows(a.local, a.backend), rows(a.ray, a.backend), a.noise)
    res["command"] = "python bench/ray_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for p in res["kernels"]:
        r = f"{p['ray_over_local']:.3f}" if p["ray_over_local"] else "-"
        print(f"{p['name'][:40]:40s} same schedule {str(p['same_schedule']):5s}  ray/local {r}  tunes {p['tunes']}")
    print(f"same kernels: {res['same_keys']}; same schedules {res['same_schedules']} of {len(res['kernels'])}; "
          f"agree within {a.noise:.0%}: {res['agree_within_noise']}")
    if a.out:
        with open(a.out, "w") as f: json.dump(res, f, indent=1)
    return 0 if res["same_keys"] and res["agree_within_noise"] else 1


if __name__ == "__main__":
    sys.exit(main())

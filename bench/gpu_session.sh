#!/usr/bin/env bash
# The GPU measurements still owed, in stages that each fit one 10-minute device command and
# bring back at most 8 files (the device's limit), from the repository root, results in $OUT:
#
#   bash bench/gpu_session.sh tests      # GPU tests: CUDA backend, row kernels, wgmma, staged SIMT
#   bash bench/gpu_session.sh membound   # hand rules vs torch: membound + small suites, row kernels (#4)
#   bash bench/gpu_session.sh fusion     # BERT layer / ResNet blocks / embedding: plans vs torch (#7)
#   bash bench/gpu_session.sh tc         # tensor cores: mma.sync + wgmma variants, ResNet conv, split-K (#6)
#   bash bench/gpu_session.sh solver     # fp32 GEMMs: staged SIMT variants; Z3 on membound vs torch (#5)
#   bash bench/gpu_session.sh bench-a    # superopt bench membound,llm: hand/z3/beam/torch (#10)
#   bash bench/gpu_session.sh bench-b    # superopt bench bert,resnet: hand/z3/beam/torch (#10)
#   bash bench/gpu_session.sh tinygrad   # + tinygrad's hand rules and BEAM on the membound suite (#10)
#
# Every stage first makes the machine ready (each call may find a bare one): the z3-solver
# (and tinygrad) wheels from .whl/ (git-ignored: `pip download z3-solver tinygrad==0.14.0
# --no-deps -d .whl`, z3's as cp312 manylinux x86_64; carry .whl with the command), superopt
# importable (an editable install, else a package of links under .gpu/ on PYTHONPATH), and
# the machine calibrated once (kept under .gpu/cache while the machine stays).
# Commands run with `python3 -P` so the checkout's own superopt/ folder never shadows the package.
set -euo pipefail
: "${OUT:?set OUT to a scratch folder}"
REPO="$(pwd)"
STATE="$REPO/.gpu"
export SUPEROPT_CACHE_DIR="$STATE/cache"
mkdir -p "$OUT" "$SUPEROPT_CACHE_DIR"
PY="python3 -P"

ready() {
  $PY -c "import z3" 2>/dev/null || pip install -q --no-index --no-deps .whl/z3_solver-*.whl
  $PY -c "import tinygrad" 2>/dev/null || pip install -q --no-index --no-deps .whl/tinygrad-*.whl 2>/dev/null \
    || echo "(no tinygrad wheel: no tinygrad baselines)"
  if ! $PY -c "import superopt.ir" 2>/dev/null; then
    pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null || true
  fi
  if ! $PY -c "import superopt.ir" 2>/dev/null; then   # a package of links: superopt/* + the subpackages
    rm -rf "$STATE/shim" && mkdir -p "$STATE/shim/superopt"
    for f in "$REPO"/superopt/*; do ln -s "$f" "$STATE/shim/superopt/"; done
    for d in ir search backends kernels; do ln -s "$REPO/$d" "$STATE/shim/superopt/$d"; done
    export PYTHONPATH="$STATE/shim${PYTHONPATH:+:$PYTHONPATH}"
  fi
  $PY -c "import superopt.ir, superopt.backends.cuda" || { echo "superopt is not importable" >&2; exit 1; }
  [ -f "$SUPEROPT_CACHE_DIR/machine-h100.json" ] || ls "$SUPEROPT_CACHE_DIR"/machine-*.json >/dev/null 2>&1 \
    || $PY -m superopt calibrate --backend cuda | tee "$OUT/calibrate.txt"
}

stage="${1:?name a stage (see the header)}"
ready
case "$stage" in
tests)
  $PY -m pytest -q -p no:cacheprovider tests/backends/test_cuda.py tests/backends/test_row_schedules.py \
    tests/backends/test_padded_vectors.py tests/backends/test_emu_wgmma.py tests/backends/test_emu_staged.py \
    2>&1 | tee "$OUT/tests.txt" | tail -15
  ;;
membound)
  $PY bench/gpu.py --suites membound --out "$OUT/gpu-membound.json" | tee "$OUT/gpu-membound.txt"
  $PY bench/gpu.py --suites bert,resnet,llm,membound --small --out "$OUT/gpu-small.json" | tail -10
  ;;
fusion)
  $PY bench/fusion_e2e.py --backend cuda --out "$OUT/fusion-e2e-h100.json" | tee "$OUT/fusion-e2e-h100.txt"
  ;;
tc)
  $PY bench/gpu_tc.py --out "$OUT/gpu-tc.json" | tee "$OUT/gpu-tc.txt"
  $PY bench/gpu_tc.py --wgmma --out "$OUT/gpu-tc-wgmma.json" | tee "$OUT/gpu-tc-wgmma.txt"
  $PY bench/gpu_tc.py --split-k --out "$OUT/gpu-tc-splitk.json" | tee "$OUT/gpu-tc-splitk.txt"
  ;;
solver)
  # fp32 GEMMs (2048^3, bert shapes): hand rule vs shared-memory staged SIMT variants vs torch (#5)
  $PY bench/gpu_tc.py --staged --out "$OUT/gpu-staged.json" | tee "$OUT/gpu-staged.txt"
  $PY -m superopt bench --suite membound --backend cuda --methods hand,z3,torch --budget 10 --no-plots \
    --out "$OUT/solver-membound" | tail -20
  ;;
bench-a)
  $PY -m superopt bench --suite membound,llm --backend cuda --methods hand,z3,beam,torch --budget 5 \
    --out "$OUT/bench-membound-llm" | tail -20
  ;;
bench-b)
  $PY -m superopt bench --suite bert,resnet --backend cuda --methods hand,z3,beam,torch --budget 5 \
    --out "$OUT/bench-bert-resnet" | tail -20
  ;;
tinygrad)
  # tinygrad's BEAM runs its own search to the end (20-120 s a GEMM): the memory-bound suite only
  $PY -m superopt bench --suite membound --backend cuda --methods hand,z3,torch,tinygrad-hand,tinygrad-beam \
    --budget 5 --out "$OUT/bench-membound-tinygrad" | tail -20
  ;;
*)
  echo "unknown stage $stage (tests, membound, fusion, tc, solver, bench-a, bench-b, tinygrad)" >&2; exit 2 ;;
esac

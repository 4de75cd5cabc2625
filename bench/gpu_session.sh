#!/usr/bin/env bash
# The GPU measurements still owed, in stages that each fit one 10-minute device command.
# Run from the repository root on the GPU machine, results under $OUT (a scratch folder):
#
#   bash bench/gpu_session.sh setup      # z3 wheel + the project, GPU tests, calibration (~3 min)
#   bash bench/gpu_session.sh membound   # hand rules vs torch: membound + small suites, row kernels (#4)
#   bash bench/gpu_session.sh fusion     # BERT layer / ResNet block / embedding: plans vs torch (#7)
#   bash bench/gpu_session.sh tc         # tensor cores: bert GEMMs, 4096^3, ResNet conv, split-K (#6)
#   bash bench/gpu_session.sh solver     # fp32 GEMMs: staged SIMT variants; Z3 on fp32 kernels vs torch (#5)
#   bash bench/gpu_session.sh bench      # superopt bench, all suites, hand/z3/beam/torch (#10)
#   bash bench/gpu_session.sh tinygrad   # + tinygrad's hand rules and BEAM on the membound suite (#10)
#
# Every stage is also rerunnable alone after `setup` (a fresh machine needs `setup` first).
# z3-solver (and tinygrad, for the tinygrad-beam baseline) are not installed there: put their
# wheels in .whl/ (git-ignored; `pip download z3-solver tinygrad==0.14.0 --no-deps -d .whl`,
# z3's as cp312 manylinux x86_64) and carry that folder with the command.
set -euo pipefail
: "${OUT:?set OUT to a scratch folder}"
export SUPEROPT_CACHE_DIR="$OUT/cache"
mkdir -p "$OUT" "$SUPEROPT_CACHE_DIR"
stage="${1:-setup}"

case "$stage" in
setup)
  pip install --no-index --no-deps .whl/z3_solver-*.whl
  pip install --no-index --no-deps .whl/tinygrad-*.whl || echo "no tinygrad wheel: the bench runs without tinygrad-beam"
  pip install --no-index --no-deps --no-build-isolation -e . || pip install --no-index --no-deps -e .
  python3 -m pytest -q tests/backends/test_cuda.py tests/backends/test_row_schedules.py 2>&1 | tail -5
  python3 -m superopt calibrate --backend cuda | tee "$OUT/calibrate.txt"
  ;;
membound)
  python3 bench/gpu.py --suites membound --out "$OUT/gpu-membound.json" | tee "$OUT/gpu-membound.txt"
  python3 bench/gpu.py --suites bert,resnet,llm --small --out "$OUT/gpu-small.json" | tail -40
  ;;
fusion)
  python3 bench/fusion_e2e.py --backend cuda --out "$OUT/fusion-e2e-h100.json"
  ;;
tc)
  python3 bench/gpu_tc.py --out "$OUT/gpu-tc.json" | tee "$OUT/gpu-tc.txt"
  python3 bench/gpu_tc.py --split-k --out "$OUT/gpu-tc-splitk.json" | tail -20
  ;;
solver)
  # fp32 GEMMs (2048^3, bert shapes): hand rule vs shared-memory staged SIMT variants vs torch (#5)
  python3 bench/gpu_tc.py --staged --out "$OUT/gpu-staged.json" | tee "$OUT/gpu-staged.txt"
  for f in membound; do
    python3 -m superopt bench --suite "$f" --backend cuda --methods hand,z3,torch --budget 10 \
      --out "$OUT/solver-$f" | tail -30
  done
  ;;
bench)
  python3 -m superopt bench --suite membound,llm --backend cuda --methods hand,z3,beam,torch --budget 5 \
    --out "$OUT/bench-membound-llm" | tail -20
  python3 -m superopt bench --suite bert,resnet --backend cuda --methods hand,z3,beam,torch --budget 5 \
    --out "$OUT/bench-bert-resnet" | tail -20
  ;;
tinygrad)
  # tinygrad's BEAM runs its own search to the end (20-120 s a GEMM): the memory-bound suite only
  python3 -m superopt bench --suite membound --backend cuda --methods hand,z3,torch,tinygrad-hand,tinygrad-beam \
    --budget 5 --out "$OUT/bench-membound-tinygrad" | tail -20
  ;;
*)
  echo "unknown stage $stage (setup, membound, fusion, tc, solver, bench, tinygrad)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The one-command GPU check: builds for sm_90a, runs the CUDA test suite and
# every kernel benchmark, and prints one table (also written as markdown for
# docs/perf.md, with the date, the GPU and the commit).
#
#   scripts/gpu-check.sh            results in $OUT (the device tool's folder) or ./gpu-check-out
#
# Budget: under 8 minutes on one H200, most of it the build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
arch=${VLMC_CUDA_ARCH:-90a}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU visible; nothing to check here (the CPU suite is 'make test')" >&2
  exit 3
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
echo "gpu-check: $gpu, sm_$arch, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

scripts/install-deps.sh
start=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$out/configure.log"
cmake --build build-gpu -j "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "gpu-check: built in $(( $(date +%s) - start )) s"

status=0
(cd build-gpu && ctest -L cuda --output-on-failure -j 4) >"$out/cuda-tests.log" 2>&1 || status=1
grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/cuda-tests.log" | tail -n 40 || true

for bench in build-gpu/bench/bench_*; do
  name=$(basename "$bench")
  [[ "$name" == "bench_gemm" ]] && continue  # CPU sgemm only; its ceiling is measured inside each benchmark
  echo "gpu-check: $name"
  if ! timeout 180 "$bench" --json "$out/$name.json" >"$out/$name.txt" 2>&1; then
    echo "gpu-check: $name failed:"; tail -20 "$out/$name.txt"; status=1
  fi
done

python3 scripts/perf_table.py --gpu "$gpu" --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$out"/bench_*.json | tee "$out/perf-table.md"
echo "gpu-check: done in $(( $(date +%s) - start )) s; table in $out/perf-table.md"
exit $status

#!/usr/bin/env bash
# The one-command GPU check: builds for sm_90a, then runs, each part under
# its own timeout,
#   1. the CUDA test suite (ctest -L cuda);
#   2. the six connectors, forward + backward at the seed's shapes with B = 16,
#      bf16 autocast: `vlmc connector bench` against the seed's own PyTorch
#      classes (bench/seed_connectors.py) on the same GPU;
#   3. one LLaVA stage-1 step (1.1B LLaMA-shaped model, seq 2048, bf16, batch 1):
#      bench_llava_step against bench/llava_step.py (PyTorch eager), tokens/s
#      and peak memory;
#   4. a short training run (`vlmc train`, 50 steps per stage, bf16) for the
#      stage-1 and stage-2 tokens/s;
#   5. data-parallel training over NCCL (mpirun, one process per GPU) where
#      the machine has more than one GPU; said to be skipped otherwise;
#   6. the kernel benchmarks against cuBLAS / cuBLASLt / cuDNN;
# and prints one table (scripts/perf_table.py; also written as markdown for
# docs/perf.md, with the date, the GPU and the commit).
#
#   scripts/gpu-check.sh            results in $OUT (the device tool's folder) or ./gpu-check-out
#
# Budget: under 8 minutes on one H200, the build included. Each part's
# timeout is cut to what is left of GPU_CHECK_BUDGET_S (default 450 s after
# the start); a part that fails, times out or gets no time is reported as
# failed in the table and the script goes on. Exit status: 0 when every part
# ran and met its target, 1 otherwise, 3 when no GPU is visible.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu-check-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/bench_*.json  # a table never shows a previous run's rows
arch=${VLMC_CUDA_ARCH:-90a}
budget=${GPU_CHECK_BUDGET_S:-450}
python=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU visible; nothing to check here (the CPU suite is 'make test')" >&2
  exit 3
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "gpu-check: $gpu, sm_$arch, commit $commit"

start=$(date +%s)
status=0
failed=()  # "part: why", one per failed part, shown in the table

fail() {
  failed+=("$1")
  status=1
  echo "gpu-check: FAILED $1" >&2
}

# run_part NAME LIMIT_S LOG COMMAND...: runs COMMAND with stdout and stderr in
# LOG, under LIMIT_S cut to the budget left; records a failure and shows the
# log's tail when it fails or there is no time left for it.
run_part() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((start + budget - $(date +%s)))
  if ((left < 10)); then
    fail "$name: not run, the ${budget} s budget is spent"
    return 1
  fi
  ((left < limit)) && limit=$left
  echo "gpu-check: $name (up to $limit s)"
  local rc=0
  timeout "$limit" "$@" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    if ((rc == 124)); then fail "$name: timed out after $limit s (log $log)"; else fail "$name: exit status $rc (log $log)"; fi
    tail -n 15 "$log" >&2
    return 1
  fi
}

# ---- build ----------------------------------------------------------------------------
# The GPU machine's image has CUDA, CMake, ninja and PyTorch but not vlmc's
# Debian dependencies, and it cannot download: scripts/gpu-deps.sh fetches
# them here into .gpu-deps/, which travels with the tree; they are unpacked
# (not installed) under .gpu-deps/root and CMake is pointed at them.
cmake_deps=()
data_dir=/usr/share/datasets/fashion-mnist
if compgen -G ".gpu-deps/*.deb" >/dev/null; then
  root=$PWD/.gpu-deps/root
  mkdir -p "$root"
  for deb in .gpu-deps/*.deb; do dpkg -x "$deb" "$root"; done
  # Absolute links (libz.so -> /lib/.../libz.so.1.2.13) must point into the unpacked tree.
  while IFS= read -r link; do
    target=$(readlink "$link")
    if [[ "$target" == /* && -e "$root$target" ]]; then ln -sfn "$root$target" "$link"; fi
  done < <(find "$root" -type l)
  multiarch=$root/usr/lib/x86_64-linux-gnu
  cmake_deps=(-DCMAKE_PREFIX_PATH="$root/usr" -DCMAKE_LIBRARY_PATH="$multiarch/openblas-openmp;$multiarch"
              -DCMAKE_INCLUDE_PATH="$root/usr/include")
  export LD_LIBRARY_PATH="$multiarch/openblas-openmp:$multiarch:$root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CPATH="$root/usr/include${CPATH:+:$CPATH}"
  [[ -d "$root/usr/share/datasets/fashion-mnist" ]] && data_dir=$root/usr/share/datasets/fashion-mnist
  export VLMC_FASHION_MNIST_DIR=$data_dir  # the CUDA trainer test reads it (tests/support/toy_run.h)
  echo "gpu-check: using the carried Debian packages in .gpu-deps ($(ls .gpu-deps/*.deb | wc -l) of them)"
elif ! scripts/install-deps.sh >"$out/install-deps.log" 2>&1; then
  echo "gpu-check: install-deps failed (no network?) and no .gpu-deps/ was carried: run scripts/gpu-deps.sh" \
       "on a machine with network and carry .gpu-deps (see $out/install-deps.log)" >&2
fi
built=0
if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
     "${cmake_deps[@]}" >"$out/configure.log" 2>&1 &&
   cmake --build build-gpu -j "$(nproc)" >"$out/build.log" 2>&1; then
  built=1
  echo "gpu-check: built in $(($(date +%s) - start)) s"
else
  fail "build: see $out/configure.log and $out/build.log"
  tail -n 40 "$out/build.log" >&2
fi

if ((built)); then
  # ---- 1. the CUDA suite ----------------------------------------------------------------
  run_part "cuda tests" 120 "$out/cuda-tests.log" \
    bash -c 'cd build-gpu && ctest -L cuda --output-on-failure -j 4'
  grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/cuda-tests.log" | tail -n 40 || true

  # ---- 2. connectors: vlmc against the seed's PyTorch classes --------------------------------
  # The seed's constructor defaults, given to both explicitly.
  dims=(--dim-vision 1024 --dim-llm 4096 --grid-size 24 --target-size 12 --num-conv-layers 2
        --max-tokens 576 --min-tokens 64 --max-visual-tokens 1024)
  common=(--batch 16 --tokens 576 --backward --precision bf16 --device cuda --json --repeats 10 --warmup 3)
  : >"$out/connectors-vlmc.jsonl"
  for type in linear mlp downsample c-abstractor dynamic ocr; do
    run_part "connector $type (vlmc)" 60 "$out/connector-$type-vlmc.log" \
      build-gpu/vlmc connector bench --type "$type" "${common[@]}" "${dims[@]}" &&
      grep '^{' "$out/connector-$type-vlmc.log" >>"$out/connectors-vlmc.jsonl"
  done
  seed_dir=()
  [[ -d .gpu-deps/seed ]] && seed_dir=(--seed-dir .gpu-deps/seed)  # carried by scripts/gpu-deps.sh
  run_part "connectors (PyTorch)" 150 "$out/connectors-torch.log" \
    "$python" bench/seed_connectors.py --type all "${common[@]}" "${dims[@]}" "${seed_dir[@]}"
  grep '^{' "$out/connectors-torch.log" >"$out/connectors-torch.jsonl" || true

  # ---- 3. one LLaVA stage-1 step -------------------------------------------------------------
  step=(--device cuda --precision bf16 --batch 1 --seq 2048 --warmup 2 --repeats 5)
  rm -f "$out/llava-step-vlmc.json" "$out/llava-step-torch.json"
  run_part "llava step (vlmc)" 210 "$out/llava-step-vlmc.log" \
    build-gpu/bench/bench_llava_step "${step[@]}" --json "$out/llava-step-vlmc.json"
  run_part "llava step (PyTorch)" 150 "$out/llava-step-torch.log" \
    "$python" bench/llava_step.py "${step[@]}" --json "$out/llava-step-torch.json"

  # ---- 4. training throughput ----------------------------------------------------------------
  run_name="gpu-check-$(date +%Y%m%d-%H%M%S)"
  run_part "training run" 180 "$out/train.log" \
    build-gpu/vlmc train --device cuda --precision bf16 --run.name "$run_name" --run.runs_dir "$out/runs" \
    --run.cache_dir "$out/cache" --data.dir "$data_dir" --stage0.vision.steps 50 --stage0.language.steps 50 --stage1.steps 50 \
    --stage2.steps 50 --eval.mosaics 100

  # ---- 5. data parallel over NCCL (issue 7), where the machine has several GPUs ----------------
  gpus=$(nvidia-smi -L | wc -l)
  if ((gpus > 1)); then
    run_part "nccl data parallel ($gpus GPUs)" 120 "$out/train-nccl.log" \
      env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
      mpirun -np "$gpus" build-gpu/vlmc train --device cuda --precision bf16 --run.name "nccl-$run_name" \
      --run.runs_dir "$out/runs" --run.cache_dir "$out/cache" --data.dir "$data_dir" --run.collective_timeout_s 60 \
      --stage0.vision.steps 20 --stage0.language.steps 20 --stage1.steps 20 --stage2.steps 20 --eval.mosaics 100 \
      --stage0.vision.batch_size $((8 * gpus)) --stage0.language.batch_size $((8 * gpus)) \
      --stage1.batch_size $((8 * gpus)) --stage2.batch_size $((8 * gpus))
  else
    echo "gpu-check: nccl data parallel: skipped (this machine has $gpus GPU; it needs 2 or more)"
  fi

  # ---- 6. kernel benchmarks ------------------------------------------------------------------
  for bench in build-gpu/bench/bench_*; do
    name=$(basename "$bench")
    [[ "$name" == "bench_gemm" ]] && continue        # CPU sgemm only; its ceiling is measured inside each benchmark
    [[ "$name" == "bench_llava_step" ]] && continue  # part 3
    run_part "$name" 90 "$out/$name.txt" "$bench" --json "$out/$name.json"
  done
fi

# ---- the table --------------------------------------------------------------------------------
table_args=(--gpu "$gpu" --commit "$commit"
            --ctest-log "$out/cuda-tests.log"
            --connectors-vlmc "$out/connectors-vlmc.jsonl" --connectors-torch "$out/connectors-torch.jsonl"
            --llava-vlmc "$out/llava-step-vlmc.json" --llava-torch "$out/llava-step-torch.json"
            --train-results "$out/runs/${run_name:-none}/results.json")
for reason in "${failed[@]}"; do table_args+=(--failed "$reason"); done
shopt -s nullglob
kernel_json=("$out"/bench_*.json)
"$python" scripts/perf_table.py "${table_args[@]}" "${kernel_json[@]}" | tee "$out/perf-table.md"
((PIPESTATUS[0] == 0)) || status=1
echo "gpu-check: done in $(($(date +%s) - start)) s; table in $out/perf-table.md"
exit $status

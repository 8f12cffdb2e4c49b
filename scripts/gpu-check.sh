#!/usr/bin/env bash
# The GPU check: what a lent GPU machine runs, in one or two device calls.
#
#   scripts/gpu-check.sh suite   the CUDA test suite, one process per case, each
#                                failed case rerun with CUDA_LAUNCH_BLOCKING=1 +
#                                VLMC_CUDA_SYNC=1 and under compute-sanitizer
#                                (scripts/gpu_suite.py); about 40 s on an H200;
#   scripts/gpu-check.sh bench   the benchmarks, meant for once the suite is green:
#                                1. the six connectors, forward + backward at the
#                                   seed's shapes (B = 16, bf16 autocast), against
#                                   the seed's own PyTorch classes on the same GPU;
#                                2. the kernel benchmarks' CUDA rows against cuBLAS /
#                                   cuBLASLt / cuDNN and the same-run ceilings;
#                                3. a short training run (`vlmc train`, 50 steps
#                                   per stage, bf16);
#                                4. each kernel's time in one mlp and one
#                                   c-abstractor step (Nsight Compute);
#                                5. one LLaVA stage-1 step (1.1B LLaMA-shaped
#                                   model, seq 2048, bf16) against PyTorch eager;
#                                6. data parallel over NCCL where there are several GPUs;
#   scripts/gpu-check.sh all     both in one call (one machine start instead of two).
#
# The programs come from .gpu-pack/vlmc-gpu.tar.xz (scripts/gpu-pack.sh builds it
# here, for sm_90a; carry .gpu-pack) when it loads there; otherwise they are built
# there from the Debian packages scripts/gpu-deps.sh fetched (carry .gpu-deps),
# only the targets the check runs, ninja -k 0, warnings not fatal.
#
# Logs go to $VLMC_GPU_LOGS (default /tmp/vlmc-gpu-check), outside $OUT; $OUT
# (the device tool's folder, default ./gpu-check-out) gets at most five files:
# logs.tgz, the table (perf-table.md), the suite summary (suite.json), the
# benchmark rows (rows.json) and the log of this script (check.log).
#
# Each part runs under its own timeout, cut to what is left of the budget
# (GPU_CHECK_BUDGET_S: default 270 s for suite, 280 s for bench, 420 s for all,
# of which the suite gets 150, from the start of the script). A part that fails, times out or gets no time is a FAIL row.
# GPU_CHECK_PARTS="suite connectors kernels train ncu llava" runs only the
# parts named (default: every part of the mode), for a rerun that must fit
# what is left of a lease.
# Exit status: 0 when every part ran and met its target, 1 otherwise, 3 when
# no GPU is visible or the build has no CUDA.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-suite}
case "$mode" in suite | bench | all) ;; *) echo "usage: scripts/gpu-check.sh suite|bench|all" >&2; exit 2 ;; esac
start=$(date +%s)
out=${OUT:-gpu-check-out}
mkdir -p "$out" && out=$(cd "$out" && pwd)
logs=${VLMC_GPU_LOGS:-/tmp/vlmc-gpu-check}
rm -rf "$logs" && mkdir -p "$logs"
exec > >(tee "$logs/check.log") 2>&1
case "$mode" in suite) default_budget=270 ;; bench) default_budget=280 ;; all) default_budget=420 ;; esac
budget=${GPU_CHECK_BUDGET_S:-$default_budget}
python=${PYTHON:-python3}
arch=${VLMC_CUDA_ARCH:-90a}
status=0
failed=()  # "part: why", one per failed part, shown in the table
parts=${GPU_CHECK_PARTS:-suite connectors kernels train ncu llava}
wanted() { [[ " $parts " == *" $1 "* ]]; }

fail() {
  failed+=("$1")
  status=1
  echo "gpu-check: FAILED $1" >&2
}

# Whatever happens, $OUT gets the logs (one archive) and the table.
finish() {
  # The commit the programs were built from: the pack's, else the tree's.
  local table_args=(--gpu "${gpu:-none}" --commit "${build_commit:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}")
  [[ "$mode" != bench ]] && wanted suite && table_args+=(--suite "$logs/suite.json")
  if [[ "$mode" != suite ]]; then
    wanted connectors &&
      table_args+=(--connectors-vlmc "$logs/connectors-vlmc.jsonl" --connectors-torch "$logs/connectors-torch.jsonl")
    wanted llava && table_args+=(--llava-vlmc "$logs/llava-step-vlmc.json" --llava-torch "$logs/llava-step-torch.json")
    wanted train && table_args+=(--train-results "$logs/runs/gpu-check/results.json")
  fi
  local reason
  for reason in "${failed[@]}"; do table_args+=(--failed "$reason"); done
  shopt -s nullglob
  local kernel_json=("$logs"/bench_*.json)
  "$python" scripts/perf_table.py "${table_args[@]}" "${kernel_json[@]}" >"$out/perf-table.md" || status=1
  cat "$out/perf-table.md"
  [[ -f "$logs/suite.json" ]] && cp "$logs/suite.json" "$out/"
  "$python" scripts/gpu_rows.py "$out/rows.json" "$logs" || true  # every JSON row measured
  echo "gpu-check: $mode done in $(($(date +%s) - start)) s, exit status $status"
  cp "$logs/check.log" "$out/check.log"
  # Checkpoints and the stage-0 cache stay behind: the tool brings back 16 MiB a file.
  tar -C "$(dirname "$logs")" -czf "$out/logs.tgz" --exclude='cache' --exclude='checkpoints' --exclude='*.safetensors' \
    "$(basename "$logs")" 2>/dev/null
  exit "$status"
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: FAILED: no NVIDIA GPU visible (nvidia-smi); this check is for a GPU machine" >&2
  exit 3
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
echo "gpu-check: $mode on $gpu, commit $(git rev-parse --short HEAD 2>/dev/null), $(nproc) cores"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$logs/nvidia-smi.txt" 2>&1

# ---- the CUDA libraries the GPU machine brings ---------------------------------------------
# cuBLAS, cuBLASLt and cuDNN are too large to carry: take them from the toolkit
# or from PyTorch's wheels, wherever they are.
cuda_dirs=()
for lib in libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libcudart.so.13; do
  found=$(find /usr/local/cuda/lib64/ /usr/local/cuda/ /usr/local/ /opt/ /usr/lib/ -name "$lib" 2>/dev/null | head -n1)
  if [[ -z "$found" ]]; then echo "gpu-check: $lib not found on this machine" >&2; continue; fi
  dir=$(dirname "$found")
  [[ " ${cuda_dirs[*]} " == *" $dir "* ]] || cuda_dirs+=("$dir")
done
cuda_path=$(IFS=:; echo "${cuda_dirs[*]}")
echo "gpu-check: CUDA libraries from ${cuda_path:-nowhere}"

# ---- the programs: the carried pack, else a build here ---------------------------------------
bin=""
data_dir=/usr/share/datasets/fashion-mnist
seed_dir=../shared/seed
if [[ -f .gpu-pack/vlmc-gpu.tar.xz ]]; then
  pack=/tmp/vlmc-pack
  rm -rf "$pack" && mkdir -p "$pack" && tar -C "$pack" -xJf .gpu-pack/vlmc-gpu.tar.xz
  export LD_LIBRARY_PATH="$pack/lib${cuda_path:+:$cuda_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  sed 's/^/gpu-check: pack: /' "$pack/MANIFEST"
  missing=$(for exe in "$pack"/bin/*; do ldd "$exe" | grep 'not found'; done | sort -u)
  if [[ -n "$missing" ]]; then
    echo "gpu-check: the pack does not load here: $missing; building instead" >&2
  elif ! "$pack/bin/vlmc" --help >"$logs/pack-smoke.log" 2>&1; then
    echo "gpu-check: the pack's vlmc does not start here (see pack-smoke.log); building instead" >&2
  else
    bin=$pack/bin data_dir=$pack/data seed_dir=$pack/seed
    build_commit=$(sed -n 's/^commit \([0-9a-f]\{7\}\).*/\1/p' "$pack/MANIFEST")
    echo "gpu-check: using the carried pack"
  fi
fi
if [[ -z "$bin" ]]; then
  cmake_deps=()
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
    export LD_LIBRARY_PATH="$multiarch/openblas-openmp:$multiarch:$root/lib/x86_64-linux-gnu${cuda_path:+:$cuda_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export CPATH="$root/usr/include${CPATH:+:$CPATH}"
    [[ -d "$root/usr/share/datasets/fashion-mnist" ]] && data_dir=$root/usr/share/datasets/fashion-mnist
    [[ -d .gpu-deps/seed ]] && seed_dir=.gpu-deps/seed
    echo "gpu-check: building with the carried Debian packages in .gpu-deps"
  else
    scripts/install-deps.sh >"$logs/install-deps.log" 2>&1 ||
      echo "gpu-check: install-deps failed (no network?) and neither .gpu-pack nor .gpu-deps was carried" >&2
  fi
  mapfile -t benches < <(cd bench && ls bench_*.cpp | sed 's/\.cpp$//')
  if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
       -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON "${cmake_deps[@]}" >"$logs/configure.log" 2>&1; then
    if ! grep -q "vlmc: CUDA ON" "$logs/configure.log"; then
      grep "vlmc: CUDA" "$logs/configure.log" >&2
      fail "build: configured without CUDA (nvcc not found?): the check would test nothing"
      status=3
      finish
    fi
    cmake --build build-gpu -j "$(nproc)" --target vlmc vlmc_cuda_tests "${benches[@]}" -- -k 0 \
      >"$logs/build.log" 2>&1 || fail "build: see build.log in logs.tgz"
    grep -E "error|FAILED" "$logs/build.log" | head -n 30 >&2
  else
    fail "configure: see configure.log in logs.tgz"
    tail -n 30 "$logs/configure.log" >&2
  fi
  mkdir -p build-gpu/check-bin
  for exe in build-gpu/vlmc build-gpu/tests/vlmc_cuda_tests build-gpu/bench/bench_*; do
    [[ -x "$exe" && -f "$exe" ]] && ln -sfn "$PWD/$exe" "build-gpu/check-bin/$(basename "$exe")"
  done
  bin=$PWD/build-gpu/check-bin
  echo "gpu-check: built in $(($(date +%s) - start)) s"
fi
export VLMC_FASHION_MNIST_DIR=$data_dir  # the CUDA trainer test reads it (tests/support/toy_run.h)

# run_part NAME LIMIT_S LOG COMMAND...: runs COMMAND with its output in LOG,
# under LIMIT_S cut to the budget left; a failure shows the log's tail.
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
  local rc=0 t0
  t0=$(date +%s)
  # Line-buffered, so that a part cut by its timeout still leaves its log.
  timeout "$limit" stdbuf -oL -eL "$@" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    if ((rc == 124)); then fail "$name: timed out after $limit s"; else fail "$name: exit status $rc"; fi
    tail -n 15 "$log" >&2
    return 1
  fi
  echo "gpu-check: $name took $(($(date +%s) - t0)) s"
}

if [[ "$mode" != bench ]] && wanted suite; then
  suite_budget=$budget
  [[ "$mode" == all ]] && suite_budget=${GPU_CHECK_SUITE_S:-150}  # the rest is the benchmarks'
  if [[ ! -x "$bin/vlmc_cuda_tests" ]]; then
    fail "cuda suite: vlmc_cuda_tests was not built"
  else
    left=$((start + suite_budget - $(date +%s) - 5))
    "$python" scripts/gpu_suite.py --exe "$bin/vlmc_cuda_tests" --logs "$logs/suite" --json "$logs/suite.json" \
      --jobs 4 --timeout 90 --budget "$left" || fail "cuda suite: not every case passed"
  fi
fi
[[ "$mode" == suite ]] && finish

# ---- bench: 1. connectors, vlmc against the seed's PyTorch classes ----------------------------
# The seed's constructor defaults, given to both explicitly.
dims=(--dim-vision 1024 --dim-llm 4096 --grid-size 24 --target-size 12 --num-conv-layers 2
      --max-tokens 576 --min-tokens 64 --max-visual-tokens 1024)
common=(--batch 16 --tokens 576 --backward --precision bf16 --device cuda --json --repeats 10 --warmup 3)
: >"$logs/connectors-vlmc.jsonl"
wanted connectors && for type in linear mlp downsample c-abstractor dynamic ocr; do
  run_part "connector $type (vlmc)" 30 "$logs/connector-$type-vlmc.log" \
    "$bin/vlmc" connector bench --type "$type" "${common[@]}" "${dims[@]}" &&
    grep '^{' "$logs/connector-$type-vlmc.log" >>"$logs/connectors-vlmc.jsonl"
done
wanted connectors && run_part "connectors (PyTorch)" 60 "$logs/connectors-torch.log" \
  "$python" bench/seed_connectors.py --type all "${common[@]}" "${dims[@]}" --seed-dir "$seed_dir"
grep '^{' "$logs/connectors-torch.log" >"$logs/connectors-torch.jsonl" || true

# ---- bench: 2. kernel benchmarks, the CUDA rows (CPU rows are the CPU benchmarks' business) ----------
wanted kernels && for bench in "$bin"/bench_*; do
  name=$(basename "$bench")
  [[ "$name" == "bench_gemm" ]] && continue        # CPU sgemm only
  [[ "$name" == "bench_llava_step" ]] && continue  # part 5
  run_part "$name" 45 "$logs/$name.txt" "$bench" --cuda-only --json "$logs/$name.json"
done

# ---- bench: 3. training throughput --------------------------------------------------------------
wanted train && run_part "training run" 60 "$logs/train.log" \
  "$bin/vlmc" train --device cuda --precision bf16 --run.name gpu-check --run.runs_dir "$logs/runs" \
  --run.cache_dir "$logs/cache" --data.dir "$data_dir" --stage0.vision.steps 50 --stage0.language.steps 50 \
  --stage1.steps 50 --stage2.steps 50 --eval.mosaics 100

# ---- bench: 4. where a connector's time goes: each kernel of one vlmc step -------------------------
# Nsight Compute reads each kernel's duration (it replays kernels: the sum is
# not the step's time, the split between kernels is what it shows).
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)
if ! wanted ncu; then
  :
elif [[ -n "$ncu" ]]; then
  for type in mlp c-abstractor; do
    run_part "kernel split of $type (ncu)" 40 "$logs/ncu-$type.csv" \
      "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv \
      "$bin/vlmc" connector bench --type "$type" --batch 16 --tokens 576 --backward --precision bf16 \
      --device cuda --repeats 1 --warmup 1 "${dims[@]}"
  done
else
  echo "gpu-check: ncu not found: no kernel split"
fi

# ---- bench: 5. one LLaVA stage-1 step (last: the CPU builds and checks a 1.1B model first) ----------
step=(--device cuda --precision bf16 --batch 1 --seq 2048 --warmup 2 --repeats 5)
wanted llava && run_part "llava step (PyTorch)" 60 "$logs/llava-step-torch.log" \
  "$python" bench/llava_step.py "${step[@]}" --json "$logs/llava-step-torch.json"
wanted llava && run_part "llava step (vlmc)" 150 "$logs/llava-step-vlmc.log" \
  "$bin/bench_llava_step" "${step[@]}" --json "$logs/llava-step-vlmc.json"

# ---- bench: 6. data parallel over NCCL, where the machine has several GPUs -------------------------
gpus=$(nvidia-smi -L | wc -l)
if ((gpus > 1)); then
  fail "nccl data parallel: this check builds without MPI; run the build with MPI on a machine that has it"
else
  echo "gpu-check: nccl data parallel: not run (this machine has $gpus GPU; it needs 2 or more)"
fi
finish

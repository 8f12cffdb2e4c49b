#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of tests/fuzz/ (one per parser of a
# user's file; docs/reliability.md lists them and what each run found).
#
#   scripts/fuzz.sh list                       # the targets
#   scripts/fuzz.sh                            # safetensors, 200000 runs
#   scripts/fuzz.sh llava_json 1000000         # a numeric second arg sets -runs
#   scripts/fuzz.sh idx -1 -max_total_time=600 # extra args go to libFuzzer (-1: no run limit)
#   scripts/fuzz.sh all -1 -max_total_time=600 # every target in turn, each for that long
#
# The build is build-fuzz/ (clang, -DVLMC_FUZZ=ON: ASan, UBSan and coverage on
# every library). Each run starts from a fresh copy of the checked-in seed
# corpus (tests/fuzz/corpus_<target>), so inputs libFuzzer adds never land in
# the source tree. Crash reproducers are written to build-fuzz/artifacts/<target>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build-fuzz"
CXX="${CXX:-clang++-14}"
TARGETS=$(sed -n 's/^  \([a-z_]*\) .*#.*/\1/p' "$ROOT/tests/fuzz/CMakeLists.txt")

TARGET=safetensors
if [[ $# -gt 0 && ! "$1" =~ ^- ]]; then
  TARGET="$1"
  shift
fi
if [[ "$TARGET" == "list" ]]; then
  echo "$TARGETS"
  exit 0
fi
if [[ "$TARGET" != "all" ]] && ! grep -qx "$TARGET" <<<"$TARGETS"; then
  echo "fuzz.sh: unknown target '$TARGET'; the targets are:" $TARGETS >&2
  exit 2
fi
RUNS=200000
if [[ $# -gt 0 && "$1" =~ ^-?[0-9]+$ ]]; then
  RUNS="$1"
  shift
fi

if [[ ! -f "$OUT/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$OUT" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DVLMC_CUDA=OFF -DVLMC_FUZZ=ON -DBUILD_TESTING=OFF
fi

dict_of() {
  case "$1" in
    safetensors) echo "$ROOT/tests/fuzz/dict/safetensors.dict" ;;
    toml_config) echo "$ROOT/tests/fuzz/dict/toml.dict" ;;
    safetensors_index | checkpoint_state | hf_config | tokenizer | llava_json) echo "$ROOT/tests/fuzz/dict/json.dict" ;;
    *) echo "" ;;
  esac
}

run_one() {
  local target="$1"
  shift
  cmake --build "$OUT" --target "fuzz_$target"
  local corpus="$OUT/corpus/$target" artifacts="$OUT/artifacts/$target"
  rm -rf "$corpus"
  mkdir -p "$corpus" "$artifacts"
  cp "$ROOT/tests/fuzz/corpus_$target"/* "$corpus/"
  local dict
  dict=$(dict_of "$target")
  local args=(-runs="$RUNS" -print_final_stats=1 -artifact_prefix="$artifacts/"
              # The image decoder bounds what it decodes at 2^28 pixels, above libFuzzer's 2 GB default.
              -rss_limit_mb=4096)
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  echo "== fuzz_$target"
  # -runs comes before the extra args so a later -runs=... from the caller wins.
  # One thread: the parsers are serial, and an idle OpenMP pool spinning beside
  # them cost a quarter of the time; two targets can then run side by side.
  (cd "$OUT" && OMP_NUM_THREADS=1 VLMC_SOURCE_DIR="$ROOT" "./tests/fuzz/fuzz_$target" "${args[@]}" "$@" "$corpus")
}

if [[ "$TARGET" == "all" ]]; then
  for t in $TARGETS; do run_one "$t" "$@"; done
else
  run_one "$TARGET" "$@"
fi

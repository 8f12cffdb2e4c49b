#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the safetensors parser.
#
#   scripts/fuzz.sh                      # 200000 runs
#   scripts/fuzz.sh 1000000              # first numeric arg sets -runs
#   scripts/fuzz.sh 0 -max_total_time=600 -jobs=2   # extra args go to libFuzzer
#
# The seed corpus in tests/fuzz/corpus is copied so that inputs libFuzzer
# adds never land in the source tree. Crash reproducers are written to
# build-fuzz/ (crash-*, leak-*, timeout-*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build-fuzz"
CXX="${CXX:-clang++-14}"

RUNS=200000
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  RUNS="$1"
  shift
fi

mkdir -p "$OUT"
"$CXX" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$ROOT" \
  "$ROOT/tests/fuzz/fuzz_safetensors.cpp" "$ROOT/core/io/safetensors.cpp" \
  -o "$OUT/fuzz_safetensors"

# Fresh working corpus each run, seeded from the checked-in files.
rm -rf "$OUT/corpus"
mkdir -p "$OUT/corpus"
cp "$ROOT"/tests/fuzz/corpus/* "$OUT/corpus/"

# Tokens of the format help the fuzzer get past the JSON structure quickly.
cat > "$OUT/safetensors.dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F64\""
"\"F16\""
"\"BF16\""
"\"I32\""
"\"I64\""
"\"U8\""
"\"BOOL\""
"18446744073709551615"
"4294967296"
"-1"
"1e400"
"\\ud800"
DICT

cd "$OUT"
# -runs comes before the extra args so a later -runs=... from the caller wins.
exec ./fuzz_safetensors -runs="$RUNS" -dict="$OUT/safetensors.dict" -print_final_stats=1 \
  -artifact_prefix="$OUT/" "$@" "$OUT/corpus"

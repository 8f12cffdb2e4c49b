#!/usr/bin/env bash
# Builds and runs a libFuzzer target: the safetensors parser (default) or the
# image decoder (libjpeg-turbo / libpng behind data/image.cpp).
#
#   scripts/fuzz.sh                      # safetensors, 200000 runs
#   scripts/fuzz.sh 1000000              # first numeric arg sets -runs
#   scripts/fuzz.sh -1 -max_total_time=600 -jobs=2  # extra args go to libFuzzer (-1: no run limit)
#   scripts/fuzz.sh image -1 -max_total_time=600     # the image decoder
#
# The seed corpus (tests/fuzz/corpus, tests/fuzz/corpus_image) is copied so
# that inputs libFuzzer adds never land in the source tree. Crash reproducers
# are written to build-fuzz/ (crash-*, leak-*, timeout-*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build-fuzz"
CXX="${CXX:-clang++-14}"

TARGET=safetensors
if [[ $# -gt 0 && ( "$1" == "safetensors" || "$1" == "image" ) ]]; then
  TARGET="$1"
  shift
fi
RUNS=200000
if [[ $# -gt 0 && "$1" =~ ^-?[0-9]+$ ]]; then
  RUNS="$1"
  shift
fi

mkdir -p "$OUT"
FLAGS=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$ROOT")
if [[ "$TARGET" == "image" ]]; then
  "$CXX" "${FLAGS[@]}" "$ROOT/tests/fuzz/fuzz_image.cpp" "$ROOT/data/image.cpp" -ljpeg -lpng \
    -o "$OUT/fuzz_image"
  rm -rf "$OUT/corpus_image"
  mkdir -p "$OUT/corpus_image"
  cp "$ROOT"/tests/fuzz/corpus_image/* "$OUT/corpus_image/"
  cd "$OUT"
  # Decoded sizes are bounded by the decoder (2^28 pixels); -rss_limit_mb keeps
  # libFuzzer's own limit above that.
  exec ./fuzz_image -runs="$RUNS" -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$OUT/" "$@" \
    "$OUT/corpus_image"
fi

"$CXX" "${FLAGS[@]}" "$ROOT/tests/fuzz/fuzz_safetensors.cpp" "$ROOT/core/io/safetensors.cpp" "$ROOT/core/io/output_path.cpp" \
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

#!/usr/bin/env bash
# Builds, HERE, what scripts/gpu-check.sh runs on a lent GPU machine, and packs
# it into .gpu-pack/vlmc-gpu.tar.xz (git-ignored), so that the GPU machine's
# minutes go to running, not compiling:
#   bin/   vlmc, vlmc_cuda_tests and the benchmarks, built for sm_90a with
#          -lineinfo, without MPI (one GPU: no launcher, no NCCL);
#   lib/   every shared library they need that is neither glibc nor one the
#          GPU machine has in its own CUDA (libcuda, cuBLAS, cuBLASLt, cuDNN):
#          OpenBLAS, oneDNN (with the OpenCL loader it links), libgomp, toml++, tcmalloc,
#          libstdc++, the CUDA runtime it was built with;
#   data/  the first 10,000 Fashion-MNIST training images and the whole test
#          split (valid IDX files; the check's training run and the CUDA trainer
#          test need images, not all 60,000);
#   seed/  the seed chapter, whose PyTorch classes bench/seed_connectors.py runs;
#   MANIFEST: the commit, the flags, and what each library resolved to here.
# The device tool's tree limit is 64 MiB; the pack is about 20 MiB.
#
#   scripts/gpu-pack.sh          then carry .gpu-pack with the tree
#
# gpu-check.sh falls back to building on the GPU machine (scripts/gpu-deps.sh)
# when no pack was carried or the pack's programs do not load there.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${VLMC_PACK_BUILD:-build-pack}
arch=${VLMC_CUDA_ARCH:-90a}
seed=${VLMC_SEED_DIR:-../shared/seed}
data=${VLMC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
train_images=10000

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON >/dev/null
grep -q '^VLMC_CUDA:BOOL=ON' "$build/CMakeCache.txt" || { echo "gpu-pack: VLMC_CUDA is off" >&2; exit 1; }
mapfile -t benches < <(cd bench && ls bench_*.cpp | sed 's/\.cpp$//')
programs=(vlmc vlmc_cuda_tests "${benches[@]}")
cmake --build "$build" -j "$(nproc)" --target "${programs[@]}"

# A build without CUDA would pack programs that skip every GPU test.
if ! grep -q 'VLMC_WITH_CUDA=1' "$build/compile_commands.json"; then
  echo "gpu-pack: $build was configured without CUDA (nvcc not found?)" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,lib,data,seed}
cp "$build/vlmc" "$build/tests/vlmc_cuda_tests" "$stage/bin/"
for b in "${benches[@]}"; do cp "$build/bench/$b" "$stage/bin/"; done
strip --strip-unneeded "$stage"/bin/*  # host symbols only; -lineinfo lives in the fatbins

# Libraries: what ldd resolves here, less glibc's own and the CUDA libraries
# that must come from the GPU machine's driver and toolkit.
system='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libutil)\.so'
from_gpu_machine='^(libcuda|libcublas|libcublasLt|libcudnn[a-z_]*|libnvidia-[a-z]*)\.so'
declare -A seen=()
for exe in "$stage"/bin/*; do
  while read -r name _ path _; do
    [[ -n "$path" && "$path" == /* ]] || continue
    if [[ "$name" =~ $system || "$name" =~ $from_gpu_machine ]]; then continue; fi
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=$path
    cp -L "$path" "$stage/lib/$name"
  done < <(ldd "$exe" | grep '=>')
done

# The data: IDX files cut to their first $train_images training images.
python3 - "$data" "$stage/data" "$train_images" <<'EOF'
import gzip, struct, sys, pathlib
src, dst, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def cut(name, item_bytes):
    raw = gzip.open(src / name).read()
    magic, count = struct.unpack(">II", raw[:8])
    header = 8 + 4 * ((magic & 0xFF) - 1)  # magic's low byte: number of dimensions
    keep = min(n, count)
    body = raw[header:header + keep * item_bytes]
    out = raw[:4] + struct.pack(">I", keep) + raw[8:header] + body
    with gzip.open(dst / name, "wb", compresslevel=9) as f:
        f.write(out)
cut("train-images-idx3-ubyte.gz", 28 * 28)
cut("train-labels-idx1-ubyte.gz", 1)
EOF
cp "$data"/t10k-*.gz "$stage/data/"
if compgen -G "$seed/*.txt" >/dev/null; then
  cp "$seed"/*.txt "$stage/seed/"
else
  echo "gpu-pack: no seed chapter in $seed (set VLMC_SEED_DIR): the PyTorch connector comparison will fail" >&2
fi

{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%FT%TZ) on $(lscpu | sed -n 's/^Model name: *//p'), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release //p' || /usr/local/cuda/bin/nvcc --version | sed -n 's/.*release //p')"
  echo "architectures $arch; Release; -lineinfo; MPI off"
  for name in "${!seen[@]}"; do echo "lib $name <- ${seen[$name]}"; done | sort
} >"$stage/MANIFEST"

# Proof that the packed programs load with the packed libraries alone (plus
# the CUDA ones the GPU machine brings): nothing may be "not found" here with
# only lib/ and the CUDA toolkit on the library path.
cuda_lib=$(dirname "$(readlink -f /usr/local/cuda/lib64/libcublas.so.13)")
cudnn_lib=$(dirname "$(readlink -f "$(find /usr/local/cuda/ -name 'libcudnn.so.9' | head -n1)")")
for exe in "$stage"/bin/*; do
  if env -i LD_LIBRARY_PATH="$stage/lib:$cuda_lib:$cudnn_lib" ldd "$exe" | grep -q 'not found'; then
    env -i LD_LIBRARY_PATH="$stage/lib:$cuda_lib:$cudnn_lib" ldd "$exe" | grep 'not found' >&2
    echo "gpu-pack: $(basename "$exe") needs a library that is not packed" >&2
    exit 1
  fi
done

mkdir -p .gpu-pack
tar -C "$stage" -cJf .gpu-pack/vlmc-gpu.tar.xz.tmp .
mv .gpu-pack/vlmc-gpu.tar.xz.tmp .gpu-pack/vlmc-gpu.tar.xz
cat "$stage/MANIFEST"
du -h .gpu-pack/vlmc-gpu.tar.xz

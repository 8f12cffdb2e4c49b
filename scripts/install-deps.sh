#!/usr/bin/env bash
# Installs vlmc's build and test dependencies from Debian packages.
# Idempotent: does nothing (and needs no network) when everything is present.
#   scripts/install-deps.sh          the build + test set
#   scripts/install-deps.sh fuzz     also clang and libFuzzer, for `make fuzz`
set -euo pipefail

packages=(
  cmake ninja-build g++ make ccache pkg-config
  libeigen3-dev            # CPU math
  libopenblas-openmp-dev   # Eigen's BLAS; the OpenMP build shares vlmc's thread pool
  libdnnl-dev              # oneDNN: the CPU GEMMs, bf16 and f32 (kernels/cpu/onednn_matmul.h)
  catch2                   # tests (v2)
  nlohmann-json3-dev       # safetensors headers, JSON
  libcli11-dev             # the command line
  zlib1g-dev
  libtomlplusplus-dev      # the training configs (TOML)
  libsentencepiece-dev     # LLaMA's tokenizer.model (data/)
  libjpeg-dev              # JPEG decoding: libjpeg-turbo (data/)
  libpng-dev               # PNG decoding (data/)
  dataset-fashion-mnist    # the training images (IDX .gz under /usr/share/datasets/fashion-mnist)
  libopenmpi-dev           # data-parallel training (dist/): MPI headers and library
  openmpi-bin              # mpirun, to launch it and to run the MPI self-test
  libtcmalloc-minimal4     # the executables' malloc (CMake's VLMC_MALLOC; optional, glibc's without it)
)
if [[ "${1:-}" == "fuzz" ]]; then
  packages+=(clang-14 libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

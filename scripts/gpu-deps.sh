#!/usr/bin/env bash
# Downloads, HERE (a Debian 12 machine with network), the Debian packages
# vlmc's build needs that the GPU machine's image lacks, into .gpu-deps/
# (git-ignored): the GPU machine cannot fetch anything, and its image has
# CUDA, CMake, ninja and PyTorch but none of Eigen, OpenBLAS, Catch2, toml++,
# CLI11, nlohmann-json or the Fashion-MNIST data. scripts/gpu-check.sh unpacks
# them (dpkg -x, no installation) and builds there when no pack was carried.
# About 45 MB. oneDNN is left out (its package alone is 8 MB): the build
# there finds none and runs every CPU product on OpenBLAS.
#
# The quicker way is scripts/gpu-pack.sh (programs built here, about 20 MB):
# this is the fallback for when the pack's programs do not load there.
#
#   scripts/gpu-deps.sh      then carry .gpu-deps to the GPU machine with the tree
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  libeigen3-dev catch2 libcli11-dev nlohmann-json3-dev zlib1g-dev zlib1g
  libtomlplusplus-dev libtomlplusplus3  # toml++ is a compiled library: -dev holds only its .so link
  libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0  # OpenBLAS and what it loads
  dataset-fashion-mnist                                                   # the training run's images
)
mkdir -p .gpu-deps
(cd .gpu-deps && rm -f ./*.deb && apt-get download "${packages[@]}")
# The seed chapter, whose PyTorch classes bench/seed_connectors.py runs: it lives
# beside the checkout (../shared/seed), which does not travel with the tree.
seed=${VLMC_SEED_DIR:-../shared/seed}
if compgen -G "$seed/*.txt" >/dev/null; then
  mkdir -p .gpu-deps/seed && cp "$seed"/*.txt .gpu-deps/seed/
else
  echo "gpu-deps: no seed chapter in $seed (set VLMC_SEED_DIR): the PyTorch connector comparison will fail" >&2
fi
du -sh .gpu-deps

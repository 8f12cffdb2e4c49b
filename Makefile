# Thin wrapper over CMake. `make train` and `make test` are the quick start.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
# The suite's builds treat warnings as errors; a plain cmake build does not
# (scripts/gpu-check.sh builds on a machine whose compiler may warn anew).
STRICT     := -DVLMC_WARNINGS_AS_ERRORS=ON
# ccache keys on paths relative to the checkout, so clones share the cache.
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all deps build test train experiment asan fuzz bench goldens clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(STRICT) $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The suite on the default (CUDA-compiled) build, then on a CPU-only build,
# so that -DVLMC_CUDA=OFF keeps linking and passing.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cmake -S . -B $(BUILD)-cpu-only -G Ninja -DVLMC_CUDA=OFF $(STRICT) $(CMAKE_ARGS)
	cmake --build $(BUILD)-cpu-only -j $(JOBS)
	cd $(BUILD)-cpu-only && ctest --output-on-failure -j $(JOBS)

# The main job: stage 0 (cached in runs/cache), stages 1 and 2 and the
# evaluation on Fashion-MNIST mosaics, as a new run runs/fashion-mosaic-<time>.
# RUN_ARGS adds flags (RUN_ARGS="--stage2.steps 800"); docs/training.md.
RUN_NAME ?= fashion-mosaic-$(shell date +%Y%m%d-%H%M%S)
train: build
	$(BUILD)/vlmc train --config configs/fashion-mosaic.toml --run.name $(RUN_NAME) $(RUN_ARGS)

# Stages 1 and 2 with each of the seed's six connectors, 3 training seeds each
# (about 17 minutes on 2 cores with stage 0 to train): mean ± sd, intervals and
# Welch's test against mlp (docs/results.md). CONNECTORS=all runs the whole
# registry (26 minutes for 11 on an AMD EPYC, 2 cores).
# CONFIG=configs/fashion-mosaic-4x4.toml runs the task where detail matters
# (sixteen items per mosaic) instead.
CONNECTORS ?= linear,mlp,downsample,c-abstractor,dynamic,ocr
SEEDS      ?= 3
CONFIG     ?= configs/fashion-mosaic.toml
experiment: build
	$(BUILD)/vlmc experiment connectors --config $(CONFIG) --out runs/connectors-$(basename $(notdir $(CONFIG))).md \
	  --run.name experiment-$(basename $(notdir $(CONFIG)))-$(shell date +%Y%m%d-%H%M%S) $(if $(filter all,$(CONNECTORS)),,--connectors $(CONNECTORS)) --seeds $(SEEDS) $(RUN_ARGS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (CPU build).
asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVLMC_CUDA=OFF -DVLMC_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

# libFuzzer on one parser: FUZZ_TARGET=<name> (scripts/fuzz.sh list; default
# safetensors, "all" for each in turn), RUNS=N executions.
FUZZ_TARGET ?= safetensors
fuzz:
	@scripts/install-deps.sh fuzz
	scripts/fuzz.sh $(FUZZ_TARGET) $(RUNS)

# Every golden file of tests/golden/ from PyTorch and transformers (scripts/make-goldens.sh).
goldens:
	scripts/make-goldens.sh

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(BUILD)-cpu-only build-asan build-fuzz

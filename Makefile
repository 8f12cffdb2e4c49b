# Thin wrapper over CMake. `make train` and `make test` are the quick start.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
# ccache keys on paths relative to the checkout, so clones share the cache.
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all deps build test train asan fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The suite on the default (CUDA-compiled) build, then on a CPU-only build,
# so that -DVLMC_CUDA=OFF keeps linking and passing.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cmake -S . -B $(BUILD)-cpu-only -G Ninja -DVLMC_CUDA=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD)-cpu-only -j $(JOBS)
	cd $(BUILD)-cpu-only && ctest --output-on-failure -j $(JOBS)

# The main job. Until two-stage training lands it is the connector comparison
# of the seed's compare_connectors(): parameter counts, shapes, timing.
train: build
	$(BUILD)/vlmc demo

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (CPU build).
asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVLMC_CUDA=OFF -DVLMC_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

# libFuzzer on the safetensors reader; RUNS=N to change the number of executions.
fuzz:
	@scripts/install-deps.sh fuzz
	scripts/fuzz.sh $(RUNS)

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(BUILD)-cpu-only build-asan build-fuzz

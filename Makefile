# Kiln: the two set-up commands are `make demo` and `make test` (see README.md).
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build build-cli test test-fast demo bench format clean

all: build

# Installs the Debian packages Kiln needs when any is missing (apt-get update once, then install).
deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Only what the demo runs: kiln and the kiln-engine it hands tensor work to (no test binaries).
build-cli: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS) --target kiln

# The whole suite, slow-labelled tests included.
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900 $(CTEST_ARGS)

# Everything but the tests labelled slow.
test-fast: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -LE slow $(CTEST_ARGS)

demo: build-cli
	@scripts/demo.sh $(BUILD_DIR)

bench: build
	bench/loader_bench.sh
	bench/train_bench.sh
	bench/registry_bench.sh
	BUILD_DIR=$(BUILD_DIR) bench/serve_bench.sh

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD_DIR)

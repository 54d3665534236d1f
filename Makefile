# The two commands of the README:  make run  (the main job)  and  make test  (the suite).
# Both install what they need (scripts/setup.sh) and build first.
BUILD  ?= build
SHARED ?= $(abspath ../shared)
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup configure build test run clean

all: build

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900

# The main job. For now: replay the reference fixtures through the C++ TRM and print the
# parity table (later issues replace this with the end-to-end training service).
run: build
	@$(BUILD)/bin/trm-parity $(SHARED)/fixtures/trm/*.safetensors

clean:
	@rm -rf $(BUILD)

# The two commands of the README:  make run  (the main job)  and  make test  (the suite).
# Both install what they need (scripts/setup.sh) and build first.
BUILD  ?= build
SHARED ?= $(abspath ../shared)
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup configure build test run parity clean

all: build

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900

# The main job: build the example chat dataset, train the tiny model, chat with it.
run: build
	@bash scripts/demo.sh

# The C++ TRM against the reference fixtures (worst relative error per group).
parity: build
	@$(BUILD)/bin/trm-parity $(SHARED)/fixtures/trm/*.safetensors

clean:
	@rm -rf $(BUILD)

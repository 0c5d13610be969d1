# A thin wrapper over CMake. `make demo` and `make check` each do the whole
# set-up first (Debian packages, a Docker engine), so they work on a fresh machine.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup build build-asan check check-unit demo bench clean

all: build

setup:
	@scripts/setup.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANDPIT_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSANDPIT_WERROR=ON -DSANDPIT_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# Every test on the normal build, then every test again under ASan+UBSan.
check: setup build build-asan
	@scripts/check.sh $(BUILD) $(ASAN_BUILD)

check-unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

demo: setup build
	@scripts/demo.sh $(BUILD)

bench: setup build
	@scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

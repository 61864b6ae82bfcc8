# drivekit: the two commands that matter are `make demo` and `make test`;
# both install what is missing (scripts/setup), build, then run.

BUILD      ?= build
ASAN_BUILD ?= build-asan
PYTHON     ?= /usr/bin/python3
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
# Warnings are errors in every Makefile build, so local builds fail where CI would.
# cmake --build runs make underneath: keep its directory chatter out of the output.
MAKEFLAGS += --no-print-directory
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=Release -DDK_FATAL_WARNINGS=ON -DPython3_EXECUTABLE=$(PYTHON) $(CMAKE_ARGS)

.PHONY: all build setup test test-c test-python asan demo sim-demo bench fuzz clean

all: build

setup:
	@scripts/setup

build:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) > /dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test-c: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-python: build
	PYTHONPATH=$(CURDIR)/$(BUILD)/python $(PYTHON) -m pytest -q tests/python

asan:
	@scripts/setup
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDK_SANITIZE=ON -DDK_BUILD_PYTHON=OFF \
	  -DDK_FATAL_WARNINGS=ON $(CMAKE_ARGS) > /dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

test: setup
	@$(MAKE) --no-print-directory test-c test-python
	@$(MAKE) --no-print-directory asan

demo: setup build
	@$(PYTHON) scripts/demo.py --build $(BUILD) --out out/demo

sim-demo: setup build
	@PYTHONPATH=$(CURDIR)/$(BUILD)/python $(PYTHON) scripts/sim_loop.py --build $(BUILD) --out out/sim_loop

bench: setup build
	@PYTHONPATH=$(CURDIR)/$(BUILD)/python $(PYTHON) bench/run.py --build $(BUILD)

# Coverage-guided fuzzing with libFuzzer (clang); FUZZ_SECONDS per harness.
FUZZ_SECONDS ?= 60
fuzz:
	@CC=clang cmake -S . -B build-fuzz -DDK_LIBFUZZER=ON -DDK_BUILD_PYTHON=OFF -DDK_BUILD_TOOLS=OFF \
	  -DDK_BUILD_TESTS=OFF > /dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@for h in build-fuzz/bin/fuzz_*; do \
	  name=$$(basename $$h); dir=fuzz/corpus/$${name#fuzz_}; mkdir -p fuzz/findings/$$name; \
	  echo "== $$name ($(FUZZ_SECONDS)s)"; \
	  mkdir -p build-fuzz/corpus/$$name; $$h -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/findings/$$name/ build-fuzz/corpus/$$name $$dir || exit 1; \
	done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz

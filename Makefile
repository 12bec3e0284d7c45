# machrt — build, test, benchmark.
#
#   make            build ./machrt, build/libmachrt.a and build/lua/machrt.so
#   make run        the main job (installs, builds, trains the reference experiment)
#   make test       C (Check) suites, Lua tests, end-to-end smoke runs (MPI, Slurm)
#   make sanitize   C suites under AddressSanitizer + UndefinedBehaviorSanitizer
#   make sanitize-lua   Lua tests (LUA_TESTS=pattern) on a host built the same way
#   make bench      throughput benchmarks (side by side with PyTorch when present)
#   make fuzz       libFuzzer targets (safetensors, audio, CSV, JSON), FUZZ_SECONDS each
#   make install    machrt on the PATH (PREFIX=/usr/local)
#   make CUDA=1     the same with the CUDA backend (nvcc, cuBLAS, cuFFT; build-cuda/)
#
# Every target first runs scripts/deps.sh, which apt-installs whatever Debian
# package is missing, so a fresh machine needs nothing but make.

PREFIX   ?= /usr/local
CUDA     ?= 0
ifeq ($(CUDA),1)
BUILD    ?= build-cuda
else
BUILD    ?= build
endif
CC       ?= gcc
VERSION  := 0.1.0
MAIN_SCRIPT := experiments/resnet34.lua

OPENBLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
OPENBLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp

# Recursive (=) so pkg-config runs after `deps` has installed it.
# ompi-c: Debian's Open MPI, a required dependency (README, "Distributed").
PKG_CFLAGS = $(shell pkg-config --cflags lua5.4 libcjson sndfile fftw3f soxr cairo libcrypto ompi-c)
PKG_LIBS   = $(shell pkg-config --libs lua5.4 libcjson sndfile fftw3f soxr cairo libcrypto ompi-c)

OPT      ?= -O2
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) $(WARN) \
             -fPIC -fopenmp -Iruntime/include -I$(OPENBLAS_INC) $(PKG_CFLAGS) \
             -DMACHRT_VERSION='"$(VERSION)"' -DMACHRT_PREFIX='"$(PREFIX)"' $(EXTRA_CFLAGS)
LIBS_ALL   = -L$(OPENBLAS_LIB) -Wl,-rpath,$(OPENBLAS_LIB) -lopenblas -ldnnl $(PKG_LIBS) -fopenmp -lm \
             $(EXTRA_LDFLAGS)

CORE_SRC := $(wildcard runtime/core/*.c runtime/cpu/*.c runtime/audio/*.c runtime/synth/*.c \
              runtime/nn/*.c runtime/optim/*.c runtime/sys/*.c runtime/plot/*.c runtime/dist/*.c)
LUA_SRC  := $(wildcard runtime/lua/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
LUA_OBJ  := $(LUA_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/runtime/main.o
CTEST_SRC := $(wildcard tests/c/test_*.c)
CTEST_BIN := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
HEADERS  := $(wildcard runtime/include/machrt/*.h runtime/*/*.h tests/c/*.h)

# ---- CUDA backend ---------------------------------------------------------
# runtime/cuda/*.cu are built twice: by nvcc for the device (CUDA=1), and
# always by the C++ compiler against runtime/cuda/emu/cuda_emu.h, which runs
# the same kernels on the CPU (cuBLAS -> OpenBLAS, cuFFT -> FFTW) for the
# backend-parity suite of `make test`.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CU_SRC    := $(wildcard runtime/cuda/*.cu)
CU_HEADERS := $(wildcard runtime/cuda/*.h runtime/cuda/emu/*.h)
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
EMU_CXXFLAGS = -std=c++17 -x c++ -D_DEFAULT_SOURCE $(OPT) $(WARN) -fPIC -fopenmp \
               -Iruntime/include -Iruntime/cuda -I$(OPENBLAS_INC) $(EXTRA_CFLAGS)
EMU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/emu/%.o) $(BUILD)/emu/runtime/cuda/emu/cuda_emu.o \
             $(BUILD)/emu/runtime/core/backend.o
EMU_LIBS   = -lfftw3f -lstdc++
ifeq ($(CUDA),1)
CFLAGS_ALL += -DMRT_HAVE_CUDA
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
CORE_OBJ  += $(CU_OBJ)
# NCCL (runtime/dist/nccl.c): device gradients reduced on the GPUs; its
# headers and library come with the CUDA toolkit.
CFLAGS_ALL += -I$(CUDA_HOME)/include
LIBS_ALL  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcufft -lcudart -lnccl -lstdc++
NVCCFLAGS = -std=c++17 -O2 $(CUDA_ARCH) -Werror all-warnings -DMRT_HAVE_CUDA \
            -Xcompiler -fPIC,-fopenmp,-Wall,-Wextra,-Wno-unused-parameter \
            -Iruntime/include -Iruntime/cuda -I$(OPENBLAS_INC)
LINK_MODE := cuda
else
LINK_MODE := cpu
endif
# ./machrt is shared by both builds: relink it when the mode changes.
LINK_STAMP := build/.link-mode
$(shell mkdir -p build && (echo $(LINK_MODE) | cmp -s - $(LINK_STAMP) || echo $(LINK_MODE) > $(LINK_STAMP)))

.PHONY: all deps deps-dist run test lint test-c test-lua sanitize sanitize-lua fuzz fuzz-targets bench install uninstall clean
.DEFAULT_GOAL := all

all: machrt $(BUILD)/lua/machrt.so

deps:
	@sh scripts/deps.sh

# Slurm and munge, for the job-array test of `make test` (not for building).
deps-dist:
	@sh scripts/deps.sh dist

$(BUILD)/obj/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libmachrt.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/runtime/cuda/%.o: runtime/cuda/%.cu $(HEADERS) $(CU_HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  NVCC    $<"
	@$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/emu/runtime/cuda/%.o: runtime/cuda/%.cu $(HEADERS) $(CU_HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CXX     $< (emulated)"
	@$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

$(BUILD)/emu/runtime/cuda/emu/cuda_emu.o: runtime/cuda/emu/cuda_emu.cpp $(CU_HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CXX     $<"
	@$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

$(BUILD)/emu/runtime/core/backend.o: runtime/core/backend.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $< (emulated CUDA)"
	@$(CC) $(CFLAGS_ALL) -DMRT_HAVE_CUDA -c $< -o $@

# The core with the emulated CUDA backend (for the parity suite).
$(BUILD)/libmachrt_emu.a: $(filter-out $(BUILD)/obj/runtime/core/backend.o $(CU_OBJ),$(CORE_OBJ)) $(EMU_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

# A host on the emulated backend, for the Lua part of the parity suite.
$(BUILD)/machrt-emu: $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt_emu.a
	@echo "  LD      $@"
	@$(CC) -o $@ $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt_emu.a $(LIBS_ALL) $(EMU_LIBS) -lreadline

machrt: $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a $(LINK_STAMP)
	@echo "  LD      $@"
	@$(CC) -o $@ $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL) -lreadline

# The same C modules for the stock lua5.4 interpreter (package.cpath).
$(BUILD)/lua/machrt.so: $(LUA_OBJ) $(BUILD)/libmachrt.a $(LINK_STAMP)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) -shared -o $@ $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL)

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libmachrt.a $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) -Itests/c $< -o $@ $(BUILD)/libmachrt.a $(LIBS_ALL) \
	    $$(pkg-config --libs check)

# The backend-parity suite: against the emulated backend, or with CUDA=1
# against the device (it reports itself skipped when no device is found).
ifeq ($(CUDA),1)
$(BUILD)/tests/test_backend_parity: tests/c/test_backend_parity.c $(BUILD)/libmachrt.a $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) -DMRT_PARITY_HOST='"./machrt"' -Itests/c $< -o $@ $(BUILD)/libmachrt.a \
	    $(LIBS_ALL) $$(pkg-config --libs check)
else
$(BUILD)/tests/test_backend_parity: tests/c/test_backend_parity.c $(BUILD)/libmachrt_emu.a $(HEADERS) \
    $(BUILD)/machrt-emu | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@ (emulated CUDA)"
	@$(CC) $(CFLAGS_ALL) -DMRT_HAVE_CUDA -DMRT_PARITY_HOST='"$(BUILD)/machrt-emu"' -Itests/c $< \
	    -o $@ $(BUILD)/libmachrt_emu.a $(LIBS_ALL) \
	    $(EMU_LIBS) $$(pkg-config --libs check)
endif

run: all
	@./machrt $(MAIN_SCRIPT) $(ARGS)

test: all $(CTEST_BIN) deps-dist lint
	@sh tests/run_all.sh $(BUILD)

# One indentation for the Lua code (four spaces a block), checked with every
# test run; `./machrt tests/lint/lua_indent.lua --from 2 FILE` re-indents a
# file written with two.
LUA_FILES = $$(find experiments modules scripts tests bench examples -name '*.lua' | sort)
lint: all
	@./machrt tests/lint/lua_indent.lua $(LUA_FILES)

test-c: $(CTEST_BIN)
	@sh tests/run_c.sh $(BUILD)

test-lua: all deps-dist
	@./machrt tests/lua/run.lua

# Check's per-test timeouts x4: ASan and UBSan run the C core several times slower.
SANITIZE_MAKE = $(MAKE) --no-print-directory BUILD=build-sanitize OPT="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"
sanitize:
	@CK_TIMEOUT_MULTIPLIER=4 LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0" \
	  $(SANITIZE_MAKE) test-c

# The Lua tests whose names match LUA_TESTS (run.lua's pattern; all when
# empty) on a host built the same way, build-sanitize/machrt-host. Leaks are
# not reported (the host leaves its Lua state to the exit), and allocations
# too large to make return NULL: "cannot allocate" is then a Lua error, as
# in the ordinary build, instead of ASan's abort.
sanitize-lua:
	@$(SANITIZE_MAKE) build-sanitize/machrt-host
	@ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
	  build-sanitize/machrt-host tests/lua/run.lua $(LUA_TESTS)

$(BUILD)/machrt-host: $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a
	@echo "  LD      $@"
	@$(CC) -o $@ $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL) -lreadline

# ---- fuzzing ----------------------------------------------------------------
# libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang under ASan+UBSan in
# build-fuzz/, each run FUZZ_SECONDS from its seeds (tests/fuzz/seeds/);
# findings land in build-fuzz/fuzz/findings/. Not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := safetensors audio csv json
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# At -O1 clang reports `omp simd` loops it leaves scalar; that is not a fault.
FUZZ_WARN := -Wno-pass-failed

fuzz:
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN) $(FUZZ_WARN)" EXTRA_LDFLAGS="$(FUZZ_SAN)" fuzz-targets
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh build-fuzz $(FUZZ_TARGETS)

fuzz-targets: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_file.h tests/fuzz/fuzz_lua.h $(LUA_OBJ) $(BUILD)/libmachrt.a | deps
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer $< -o $@ $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmachrt.a | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) $< -o $@ $(BUILD)/libmachrt.a $(LIBS_ALL)

ifeq ($(CUDA),1)
# make bench CUDA=1: training samples/s and log-mel clips/s on the device,
# next to PyTorch CUDA when it is installed.
bench: all
	@./machrt bench/cuda.lua
else
bench: all $(BUILD)/bench/blas_direct $(BUILD)/bench/conv_layers $(BUILD)/bench/gemm_choice
	@sh scripts/deps.sh bench
	@BUILD=$(BUILD) sh bench/run.sh
endif

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/machrt \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4
	install -m 755 machrt $(DESTDIR)$(PREFIX)/bin/machrt
	install -m 755 $(BUILD)/lua/machrt.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/machrt.so
	rm -rf $(DESTDIR)$(PREFIX)/share/machrt/modules
	cp -r modules $(DESTDIR)$(PREFIX)/share/machrt/modules

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/machrt $(DESTDIR)$(PREFIX)/share/machrt \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/machrt.so

clean:
	rm -rf build build-sanitize build-fuzz machrt

# machrt — build, test, benchmark.
#
#   make            build ./machrt, build/libmachrt.a and build/lua/machrt.so
#   make run        the main job (installs, builds, trains the reference experiment)
#   make test       C (Check) suites, Lua tests, end-to-end smoke runs
#   make sanitize   C suites under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      throughput benchmarks (side by side with PyTorch when present)
#   make install    machrt on the PATH (PREFIX=/usr/local)
#
# Every target first runs scripts/deps.sh, which apt-installs whatever Debian
# package is missing, so a fresh machine needs nothing but make.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= gcc
VERSION  := 0.1.0
MAIN_SCRIPT := experiments/resnet34.lua

OPENBLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
OPENBLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp

# Recursive (=) so pkg-config runs after `deps` has installed it.
PKG_CFLAGS = $(shell pkg-config --cflags lua5.4 libcjson sndfile fftw3f soxr cairo libcrypto)
PKG_LIBS   = $(shell pkg-config --libs lua5.4 libcjson sndfile fftw3f soxr cairo libcrypto)

OPT      ?= -O2
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) $(WARN) \
             -fPIC -fopenmp -Iruntime/include -I$(OPENBLAS_INC) $(PKG_CFLAGS) \
             -DMACHRT_VERSION='"$(VERSION)"' -DMACHRT_PREFIX='"$(PREFIX)"' $(EXTRA_CFLAGS)
LIBS_ALL   = -L$(OPENBLAS_LIB) -Wl,-rpath,$(OPENBLAS_LIB) -lopenblas $(PKG_LIBS) -fopenmp -lm \
             $(EXTRA_LDFLAGS)

CORE_SRC := $(wildcard runtime/core/*.c runtime/cpu/*.c runtime/audio/*.c runtime/nn/*.c runtime/optim/*.c)
LUA_SRC  := $(wildcard runtime/lua/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
LUA_OBJ  := $(LUA_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/runtime/main.o
CTEST_SRC := $(wildcard tests/c/test_*.c)
CTEST_BIN := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
HEADERS  := $(wildcard runtime/include/machrt/*.h runtime/*/*.h tests/c/*.h)

.PHONY: all deps run test test-c test-lua sanitize bench install uninstall clean
.DEFAULT_GOAL := all

all: machrt $(BUILD)/lua/machrt.so

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libmachrt.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

machrt: $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a
	@echo "  LD      $@"
	@$(CC) -o $@ $(MAIN_OBJ) $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL) -lreadline

# The same C modules for the stock lua5.4 interpreter (package.cpath).
$(BUILD)/lua/machrt.so: $(LUA_OBJ) $(BUILD)/libmachrt.a
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) -shared -o $@ $(LUA_OBJ) $(BUILD)/libmachrt.a $(LIBS_ALL)

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libmachrt.a $(HEADERS) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) -Itests/c $< -o $@ $(BUILD)/libmachrt.a $(LIBS_ALL) \
	    $$(pkg-config --libs check)

run: all
	@if [ -f $(MAIN_SCRIPT) ]; then ./machrt $(MAIN_SCRIPT) $(ARGS); else \
	  echo "machrt: $(MAIN_SCRIPT) is not part of this version yet (see README, Status)."; \
	  echo "machrt: running the tensor tour instead: ./machrt examples/tour.lua"; \
	  ./machrt examples/tour.lua; fi

test: all $(CTEST_BIN)
	@sh tests/run_all.sh $(BUILD)

test-c: $(CTEST_BIN)
	@sh tests/run_c.sh $(BUILD)

test-lua: all
	@./machrt tests/lua/run.lua

sanitize:
	@$(MAKE) --no-print-directory BUILD=build-sanitize OPT="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" test-c

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmachrt.a | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) $< -o $@ $(BUILD)/libmachrt.a $(LIBS_ALL)

bench: all $(BUILD)/bench/blas_direct $(BUILD)/bench/conv_layers
	@BUILD=$(BUILD) sh bench/run.sh

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
	rm -rf build build-sanitize machrt

#!/bin/sh
# `make bench`: every benchmark, one after the other.
set -e
BUILD=${BUILD:-build}
echo "== core: matmul, elementwise bandwidth, start-up"
./machrt bench/core.lua "$BUILD" ./machrt
./machrt bench/audio_mel.lua
./machrt bench/audio_io.lua

#!/bin/sh
# `make bench`: every benchmark, one after the other.
set -e
BUILD=${BUILD:-build}
echo "== core: matmul, elementwise bandwidth, start-up"
./machrt bench/core.lua "$BUILD" ./machrt
./machrt bench/audio_mel.lua
./machrt bench/audio_io.lua
echo "== conv layers of a ResNet34 training step, machrt vs PyTorch (bench/conv_layers.c)"
"$BUILD"/bench/conv_layers --peer

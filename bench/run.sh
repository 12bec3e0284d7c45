#!/bin/sh
# `make bench`: every benchmark, one after the other.
set -e
BUILD=${BUILD:-build}
if [ -z "${MACHRT_SAMPLE_DATA:-}" ] && [ -d ../shared/data/mimii-sample ]; then
    MACHRT_SAMPLE_DATA="$(cd ../shared/data/mimii-sample && pwd)"
    export MACHRT_SAMPLE_DATA
fi
echo "== core: matmul, elementwise bandwidth, start-up"
./machrt bench/core.lua "$BUILD" ./machrt
echo "== checkpoint checksum next to writing the checkpoint"
./machrt bench/checkpoint.lua
echo "== log-mel front end"
./machrt bench/audio_mel.lua
echo "== decoding and resampling"
./machrt bench/audio_io.lua
echo "== conv layers of a ResNet34 training step, machrt vs PyTorch (bench/conv_layers.c)"
"$BUILD"/bench/conv_layers --peer
echo "== conv layers: oneDNN's convolutions vs machrt's own kernels, fp32 then bf16 (the choice in runtime/nn/conv2d.c)"
"$BUILD"/bench/conv_layers --algo onednn --vs-own
"$BUILD"/bench/conv_layers --algo onednn --vs-own --bf16 || echo "bf16 rows skipped: this CPU has no bf16"
echo "== CPU GEMM: OpenBLAS, oneDNN fp32 and bf16 on ResNet34's shapes (bench/gemm_choice.c)"
"$BUILD"/bench/gemm_choice
echo "== ResNet34 training step and inference, machrt fp32 and bf16 vs the peers under PEERS_PYTHON"
./machrt bench/train_step.lua --profile --rounds 3
echo "== anomaly detection on the synthetic corpus: the DCASE 2020 baseline, machrt vs PyTorch (bench/anomaly_peer.lua)"
./machrt bench/anomaly_peer.lua
echo "== the default experiment end to end, machrt vs PyTorch (bench/e2e.lua; BENCH_E2E_EPOCHS=N for a shorter run)"
./machrt bench/e2e.lua

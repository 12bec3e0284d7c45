#!/usr/bin/env python3
"""Peer of bench/resampler_mel.lua: resamples the waves of a safetensors file
with torchaudio's default resampler (torchaudio.functional.resample:
sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), as a PyTorch
pipeline that loads at the file's rate and resamples would.

    python bench/peers/torchaudio_resample_clips.py IN OUT FROM TO

IN holds {frames} float32 tensors; OUT gets the same names, resampled.
"""
import os
import sys

import torch
import torchaudio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
from st_io import load_file, save_file  # noqa: E402

src, dst, orig, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
waves = load_file(src)
out = {k: torchaudio.functional.resample(torch.from_numpy(v.copy()), orig, new).numpy() for k, v in waves.items()}
save_file(out, dst)

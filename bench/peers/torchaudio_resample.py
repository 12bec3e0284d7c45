#!/usr/bin/env python3
"""Peer of bench/audio_io.lua: torchaudio.transforms.Resample, timed.

    python3 bench/peers/torchaudio_resample.py [--clips 16] [--seconds 10]
        [--orig 16000] [--new 22050] [--threads 2] [--reps 5]

Resamples a batch of white-noise clips ({clips, frames}) with torchaudio's
default Resample (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99) and
prints one line

    torchaudio <clips per second> <output frames> <err 1k> <err 5k> <err 7k>

for the best of `reps` timed calls (after one untimed warm-up call), followed
by the relative error power (dB) of 1, 5 and 7 kHz tones against the ideal
tone at the new rate, edges (5 % each side) excluded, the same measure as
machrt's test. When torch or torchaudio cannot be imported it prints
"PyTorch not installed" and exits 0, so the Lua side can say so.
"""
import argparse
import math
import sys
import time

try:
    import torch
    import torchaudio
except ImportError:
    print("PyTorch not installed")
    sys.exit(0)


def tone_error_db(resample, f, orig, new, n):
    t = torch.arange(n, dtype=torch.float64)
    y = resample(torch.sin(2 * math.pi * f * t / orig).float()).double()
    m = y.numel()
    ref = torch.sin(2 * math.pi * f * torch.arange(m, dtype=torch.float64) / new)
    mid = slice(m // 20, m - m // 20)
    e = ((y[mid] - ref[mid]) ** 2).sum().item()
    s = (ref[mid] ** 2).sum().item()
    return 10 * math.log10(e / s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--orig", type=int, default=16000)
    ap.add_argument("--new", type=int, default=22050)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    resample = torchaudio.transforms.Resample(a.orig, a.new)
    gen = torch.Generator().manual_seed(0)
    wave = torch.rand(a.clips, int(round(a.seconds * a.orig)), generator=gen) * 2 - 1

    with torch.inference_mode():
        y = resample(wave)
        best = float("inf")
        for _ in range(a.reps):
            t0 = time.perf_counter()
            y = resample(wave)
            best = min(best, time.perf_counter() - t0)
        errs = [tone_error_db(resample, f, a.orig, a.new, 2 * a.orig) for f in (1000, 5000, 7000)]
    print("torchaudio %.3f %d %.1f %.1f %.1f" % (a.clips / best, y.shape[-1], *errs))


if __name__ == "__main__":
    main()

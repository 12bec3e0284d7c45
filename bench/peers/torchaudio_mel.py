#!/usr/bin/env python3
"""Peer of bench/audio_mel.lua: torchaudio's log-mel front end, timed.

    python3 bench/peers/torchaudio_mel.py [--batch 32] [--seconds 10]
        [--threads 2] [--reps 5]

Runs torchaudio.transforms.MelSpectrogram followed by AmplitudeToDB at the
reference settings (22050 Hz, n_fft 2048, hop 512, 128 mels, 50-16000 Hz) on
a batch of white-noise clips and prints one line

    torchaudio <clips per second> <shape>

for the best of `reps` timed calls (after one untimed warm-up call). When torch
or torchaudio cannot be imported it prints "PyTorch not installed" and exits 0,
so the Lua side can say so instead of failing.
"""
import argparse
import sys
import time

try:
    import torch
    import torchaudio
except ImportError:
    print("PyTorch not installed")
    sys.exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()

    import warnings
    warnings.simplefilter("ignore")  # the all-zero filters above Nyquist warn

    torch.set_num_threads(a.threads)
    sr = 22050
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=2048, hop_length=512, f_min=50.0, f_max=16000.0, n_mels=128)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power")
    gen = torch.Generator().manual_seed(0)
    wave = torch.rand(a.batch, int(round(a.seconds * sr)), generator=gen) * 2 - 1

    with torch.inference_mode():
        y = to_db(mel(wave))
        best = float("inf")
        for _ in range(a.reps):
            t0 = time.perf_counter()
            y = to_db(mel(wave))
            best = min(best, time.perf_counter() - t0)
    print("torchaudio %.3f %s" % (a.batch / best, "x".join(str(s) for s in y.shape)))


if __name__ == "__main__":
    main()

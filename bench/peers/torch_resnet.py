#!/usr/bin/env python3
"""PyTorch peer of bench/train_step.lua: torchvision resnet34 with a 1-channel
conv1 and 4 classes, AdamW, BCEWithLogits; 2 threads.

    torch_resnet.py TRAIN_STEPS INFER_REPS BATCH

prints `train_samples_per_s`, `infer_chunks_per_s` and `peak_rss_mb` lines."""
import resource
import sys
import time

import torch
import torch.nn as nn
import torchvision


def main():
    steps, reps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet34(num_classes=4)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, 128, 431)
    t = torch.zeros(batch, 4)
    t[:, 0] = 1

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()

    model.train()
    step()  # warm-up
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    print(f"train_samples_per_s {batch / best:.3f}")

    model.eval()
    xi = torch.randn(batch, 1, 128, 216)
    with torch.no_grad():
        model(xi)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            model(xi)
            best = min(best, time.perf_counter() - t0)
    print(f"infer_chunks_per_s {batch / best:.3f}")
    print(f"peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()

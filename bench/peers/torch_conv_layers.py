#!/usr/bin/env python3
"""PyTorch's side of bench/conv_layers.c: every distinct convolution shape of a
ResNet34 training step (batch 32 of 1 x 128 x 431), timed through
torch.nn.functional.conv2d forward and autograd backward on the CPU (oneDNN),
with 2 threads by default.

Prints one line per shape, "layer <name> <fwd_ms> <bwd_ms>" (best of --reps),
which bench/conv_layers parses; --table prints a readable table instead.
The shapes and names must stay those of bench/conv_layers.c."""
import argparse
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch not available", file=sys.stderr)
    sys.exit(2)

# name, cin, cout, k, stride, pad, H, W, count in the network, needs grad input
LAYERS = [
    ("conv1_7x7s2", 1, 64, 7, 2, 3, 128, 431, 1, False),
    ("l1_3x3_64", 64, 64, 3, 1, 1, 32, 108, 6, True),
    ("l2_3x3s2_64_128", 64, 128, 3, 2, 1, 32, 108, 1, True),
    ("l2_3x3_128", 128, 128, 3, 1, 1, 16, 54, 7, True),
    ("l2_ds_1x1s2", 64, 128, 1, 2, 0, 32, 108, 1, True),
    ("l3_3x3s2_128_256", 128, 256, 3, 2, 1, 16, 54, 1, True),
    ("l3_3x3_256", 256, 256, 3, 1, 1, 8, 27, 11, True),
    ("l3_ds_1x1s2", 128, 256, 1, 2, 0, 16, 54, 1, True),
    ("l4_3x3s2_256_512", 256, 512, 3, 2, 1, 8, 27, 1, True),
    ("l4_3x3_512", 512, 512, 3, 1, 1, 4, 14, 5, True),
    ("l4_ds_1x1s2", 256, 512, 1, 2, 0, 8, 27, 1, True),
]


clock = time.perf_counter


def best_ms(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--cpu", action="store_true",
                    help="time CPU seconds of the process instead of wall-clock ones")
    a = ap.parse_args()
    global clock
    if a.cpu:
        clock = time.process_time
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    total_f = total_b = 0.0
    for name, cin, cout, k, s, p, h, w, count, gin in LAYERS:
        x = torch.randn(a.batch, cin, h, w, requires_grad=gin)
        wt = (torch.randn(cout, cin, k, k) * 0.05).requires_grad_(True)
        y = F.conv2d(x, wt, None, s, p)
        dy = torch.randn_like(y)
        del y

        def fwd():
            with torch.no_grad():
                F.conv2d(x, wt, None, s, p)

        # Backward alone: the forward that builds the graph is outside the
        # timed region, as machrt's backward is a separate call.
        def bwd_once():
            y = F.conv2d(x, wt, None, s, p)
            t0 = clock()
            y.backward(dy)
            dt = clock() - t0
            wt.grad = None
            if gin:
                x.grad = None
            return dt

        fwd()
        bwd_once()
        tf = best_ms(fwd, a.reps)
        tb = min(bwd_once() for _ in range(a.reps)) * 1e3
        total_f += tf * count
        total_b += tb * count
        if a.table:
            print(f"{name:18s} x{count:<3d} fwd {tf:8.2f} ms  bwd {tb:8.2f} ms")
        else:
            print(f"layer {name} {tf:.4f} {tb:.4f}", flush=True)
    if a.table:
        print(f"network conv total: fwd {total_f:.1f} ms  bwd {total_b:.1f} ms  "
              f"step {total_f + total_b:.1f} ms")


if __name__ == "__main__":
    main()

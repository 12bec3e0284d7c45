#!/usr/bin/env python3
"""PyTorch's side of bench/conv_layers.c: every distinct convolution shape of a
ResNet34 training step (batch 32 of 1 x 128 x 431; --width changes the 431),
timed through torch.nn.functional.conv2d forward and autograd backward on the
CPU (oneDNN), with 2 threads by default.

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


def half(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def layers(height, width):
    """name, cin, cout, k, stride, pad, H, W, count in the network, needs grad
    input: the distinct conv shapes of a ResNet34 on 1 x height x width."""
    h, w = [height], [width]
    h.append(half(half(h[0], 7, 2, 3), 3, 2, 1))
    w.append(half(half(w[0], 7, 2, 3), 3, 2, 1))
    for _ in range(3):
        h.append(half(h[-1], 3, 2, 1))
        w.append(half(w[-1], 3, 2, 1))
    return [
        ("conv1_7x7s2", 1, 64, 7, 2, 3, h[0], w[0], 1, False),
        ("l1_3x3_64", 64, 64, 3, 1, 1, h[1], w[1], 6, True),
        ("l2_3x3s2_64_128", 64, 128, 3, 2, 1, h[1], w[1], 1, True),
        ("l2_3x3_128", 128, 128, 3, 1, 1, h[2], w[2], 7, True),
        ("l2_ds_1x1s2", 64, 128, 1, 2, 0, h[1], w[1], 1, True),
        ("l3_3x3s2_128_256", 128, 256, 3, 2, 1, h[2], w[2], 1, True),
        ("l3_3x3_256", 256, 256, 3, 1, 1, h[3], w[3], 11, True),
        ("l3_ds_1x1s2", 128, 256, 1, 2, 0, h[2], w[2], 1, True),
        ("l4_3x3s2_256_512", 256, 512, 3, 2, 1, h[3], w[3], 1, True),
        ("l4_3x3_512", 512, 512, 3, 1, 1, h[4], w[4], 5, True),
        ("l4_ds_1x1s2", 256, 512, 1, 2, 0, h[3], w[3], 1, True),
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
    ap.add_argument("--width", type=int, default=431, help="input frames (431 = 10 s, 216 = 5 s)")
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
    for name, cin, cout, k, s, p, h, w, count, gin in layers(128, a.width):
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
            oh, ow = half(h, k, s, p), half(w, k, s, p)
            flops = 2.0 * a.batch * cout * cin * k * k * oh * ow
            bflops = flops * (2 if gin else 1)
            print(f"{name:18s} x{count:<3d} fwd {tf:8.2f} ms {flops / tf * 1e-6:6.1f} GF/s  "
                  f"bwd {tb:8.2f} ms {bflops / tb * 1e-6:6.1f} GF/s")
        else:
            print(f"layer {name} {tf:.4f} {tb:.4f}", flush=True)
    if a.table:
        print(f"network conv total: fwd {total_f:.1f} ms  bwd {total_b:.1f} ms  "
              f"step {total_f + total_b:.1f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peers of bench/train_step.lua: torchvision resnet34 with a 1-channel conv1
and 4 classes, 2 threads, the shapes of machrt's lines (training: batch of
1 x 128 x 431, AdamW, BCEWithLogits; inference: batch of 1 x 128 x 216).

    peers_resnet.py TRAIN_STEPS INFER_REPS BATCH [THREADS [cpu-time]]

PyTorch 2.x in fp32 and with bf16 autocast, each in contiguous and
channels_last layout (training and inference); ONNX Runtime in fp32 and
OpenVINO in fp32 and in its default precision on this CPU (inference only:
neither trains). Prints `name value` lines: `<peer>.train_samples_per_s`,
`<peer>.infer_chunks_per_s`, `openvino_default.precision`, and `skip.<peer>
why` for a peer whose package is missing. THREADS (default 2) sets every
engine's thread count; TRAIN_STEPS 0 leaves training out; `cpu-time` times
in CPU seconds of the process (time.process_time), for comparisons with
machrt's --cpu-time on a loaded machine (meaningful with THREADS 1)."""
import os
import sys
import tempfile
import time

THREADS = 2
CLOCK = time.perf_counter


def best_of(reps, fn):
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def make_model(torch, torchvision):
    torch.manual_seed(0)
    model = torchvision.models.resnet34(num_classes=4)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def torch_peers(steps, reps, batch):
    import torch
    import torchvision
    torch.set_num_threads(THREADS)
    x = torch.randn(batch, 1, 128, 431)
    xi = torch.randn(batch, 1, 128, 216)
    t = torch.zeros(batch, 4)
    t[:, 0] = 1
    bf16_native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)()
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not bf16_native:
            print("skip.torch_bf16 this CPU has no native bf16 (autocast would be emulated)", flush=True)
            continue
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            model = make_model(torch, torchvision).to(memory_format=fmt)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
            loss_fn = torch.nn.BCEWithLogitsLoss()
            xx, xxi = x.to(memory_format=fmt), xi.to(memory_format=fmt)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

            def step():
                opt.zero_grad()
                with autocast:
                    loss = loss_fn(model(xx).float(), t)
                loss.backward()
                opt.step()

            name = f"torch_{precision}_{layout}"
            if steps > 0:
                model.train()
                print(f"{name}.train_samples_per_s {batch / best_of(steps, step):.3f}", flush=True)
            model.eval()
            with torch.no_grad(), autocast:
                dt = best_of(reps, lambda: model(xxi))
            print(f"{name}.infer_chunks_per_s {batch / dt:.3f}", flush=True)


def export_onnx(path, batch):
    import torch
    import torchvision
    model = make_model(torch, torchvision).eval()
    torch.onnx.export(model, torch.randn(batch, 1, 128, 216), path, input_names=["x"],
                      output_names=["logits"], opset_version=17, dynamo=False)


def ort_peer(path, reps, batch):
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xi = np.random.default_rng(0).standard_normal((batch, 1, 128, 216), dtype=np.float32)
    dt = best_of(reps, lambda: sess.run(None, {"x": xi}))
    print(f"onnxruntime_fp32.infer_chunks_per_s {batch / dt:.3f}", flush=True)


def openvino_peers(path, reps, batch):
    import numpy as np
    import openvino as ov
    core = ov.Core()
    xi = np.random.default_rng(0).standard_normal((batch, 1, 128, 216), dtype=np.float32)
    for name, config in (("openvino_fp32", {"INFERENCE_PRECISION_HINT": "f32"}),
                         ("openvino_default", {})):
        config = dict(config, INFERENCE_NUM_THREADS=THREADS)
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        if name == "openvino_default":
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            print(f"openvino_default.precision {getattr(hint, 'get_type_name', lambda: hint)()}")
        request = compiled.create_infer_request()
        dt = best_of(reps, lambda: request.infer({0: xi}))
        print(f"{name}.infer_chunks_per_s {batch / dt:.3f}", flush=True)


def main():
    global THREADS, CLOCK
    steps, reps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:
        THREADS = int(sys.argv[4])
    if len(sys.argv) > 5:
        if sys.argv[5] != "cpu-time":
            sys.exit(f"peers_resnet.py: unknown option {sys.argv[5]!r} (valid: cpu-time)")
        CLOCK = time.process_time
    try:
        torch_peers(steps, reps, batch)
    except ImportError as e:
        print(f"skip.torch {e}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "resnet34.onnx")
        try:
            export_onnx(path, batch)
        except Exception as e:  # noqa: BLE001 - any export failure skips both engines
            print(f"skip.onnx export failed: {e}")
            return
        for name, fn in (("onnxruntime", ort_peer), ("openvino", openvino_peers)):
            try:
                fn(path, reps, batch)
            except ImportError as e:
                print(f"skip.{name} {e}")


if __name__ == "__main__":
    main()

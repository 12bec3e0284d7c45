#!/usr/bin/env python3
"""The default experiment (experiments/resnet34.lua, docs/REFERENCE.md) end to
end in PyTorch 2.x, on the same corpus: the peer of `make run` in bench/e2e.lua.

    python bench/peers/e2e_resnet34.py [--data data/synthetic] [--epochs 5] [--out DIR]

The recipe, setting by setting as machrt's defaults: the dataframe's rows
split by group k-fold over the index (k = round(1 / validation_size) = 5,
each row its own group, as machrt.data.folds assigns them; a `fold` column
is used as given), fold 4 validates. Each training item is decoded (16-bit
WAV), resampled to 22050 Hz (torchaudio.functional.resample) and randomly
cropped to 10 s (zero-padded when shorter) in a DataLoader worker (4
workers, batches of 32, shuffled, last incomplete batch dropped); the
main process computes the front end (torchaudio MelSpectrogram: n_fft =
window = 2048, hop 512, 128 HTK mels from 50 to 16000 Hz, power 2, then
AmplitudeToDB: 10 log10(max(x, 1e-10)), in float32), and trains
torchvision's resnet34 with a 1-channel conv1 and GeM pooling (p = 3,
learned) under BCEWithLogitsLoss, AdamW over parameter groups (no decay on
biases and norm weights), the learning rate stepped per batch on a cosine
from 1e-3 to 0, in bf16 autocast when --mixed-precision is on (the
default, as environment.mixed_precision_training = true asks; the front end
stays float32). After every epoch: validation (clips cut into
non-overlapping 5 s chunks, at most 600 s, mean of the chunks' sigmoids,
float32 as mixed_precision_inference = false asks; macro F1 on the argmax)
and a checkpoint (model and optimizer) written to --out.

machrt caches decoded waves in memory; this script decodes every item every
epoch, as a PyTorch recipe does (its workers are processes: a cache in one is
not seen by the others).

Prints one JSON line at the end (after human-readable lines): wall seconds,
peak RSS of this process, peak PSS of this process and its workers together
(sampled every 0.2 s from /proc: the memory the job really holds, shared
pages counted once), per-epoch seconds and the final validation metrics.
"""
import argparse
import csv
import json
import math
import os
import resource
import threading
import time

import numpy as np
import scipy.io.wavfile
import torch
import torch.nn as nn
import torchaudio
import torchvision
from sklearn.metrics import f1_score

T0 = time.monotonic()


class GeM(nn.Module):
    """machrt's nn.GeM: mean of x.clamp(eps) ** p over H x W, then ** (1 / p)."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        return x.clamp(min=self.eps).pow(self.p).mean((-2, -1), keepdim=True).pow(1.0 / self.p)


def build_model(classes):
    model = torchvision.models.resnet34(num_classes=classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.avgpool = GeM()
    return model


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def assign_folds(header, rows, group_column, validation_size):
    """machrt.data.folds.assign: a fold column as given, else group k-fold as
    scikit-learn's GroupKFold (groups by size, largest first, ties by first
    appearance, each into the fold with the fewest rows, lowest id on ties)."""
    if "fold" in header:
        c = header.index("fold")
        return [int(float(r[c])) for r in rows]
    k = int(math.floor(1 / validation_size + 0.5))
    # 'Unnamed: 0' is how pandas names an unnamed index column.
    name = "" if group_column == "Unnamed: 0" else group_column
    c = header.index(name)
    groups = [r[c] for r in rows]
    size, first = {}, {}
    for pos, g in enumerate(groups):
        size[g] = size.get(g, 0) + 1
        first.setdefault(g, pos)
    load, fold_of = [0] * k, {}
    for g in sorted(size, key=lambda g: (-size[g], first[g])):
        best = min(range(k), key=lambda f: (load[f], f))
        fold_of[g] = best
        load[best] += size[g]
    return [fold_of[g] for g in groups]


def decode(path, sample_rate):
    """The first channel of a WAV file as float32 at sample_rate."""
    rate, data = scipy.io.wavfile.read(path)
    if data.ndim == 2:
        data = data[:, 0]
    if data.dtype == np.int16:
        wave = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        wave = data.astype(np.float32) / 2147483648.0
    else:
        wave = data.astype(np.float32)
    wave = torch.from_numpy(wave)
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, rate, sample_rate)
    return wave


class Clips(torch.utils.data.Dataset):
    def __init__(self, files, targets, a, train):
        self.files, self.targets, self.a, self.train = files, targets, a, train

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        wave = decode(self.files[i], self.a.sample_rate)
        if self.train:
            frames = int(round(self.a.chunk_seconds * self.a.sample_rate))
            if wave.numel() >= frames:
                start = torch.randint(0, wave.numel() - frames + 1, (1,)).item()
                x = wave[start:start + frames]
            else:
                x = torch.zeros(frames)
                x[:wave.numel()] = wave
        else:
            frames = int(round(self.a.val_chunk_seconds * self.a.sample_rate))
            used = wave[:int(self.a.max_seconds * self.a.sample_rate)]
            if used.numel() < frames:
                x = torch.zeros(1, frames)
                x[0, :used.numel()] = used
            else:
                n = used.numel() // frames
                x = used[:n * frames].reshape(n, frames)
        return x, self.targets[i]


def collate_chunks(items):
    chunks = torch.cat([x for x, _ in items])
    counts = torch.tensor([x.shape[0] for x, _ in items])
    return chunks, counts, torch.stack([t for _, t in items])


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class PssPeak:
    """The peak of this process's PSS plus its workers', sampled."""

    def __init__(self, every=0.2):
        self.peak, self.every, self.stop = 0, every, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            self.peak = max(self.peak, pss_bytes(me) + sum(pss_bytes(c) for c in children(me)))
            self.stop.wait(self.every)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--csv", default=None, help="default: DATA/dataset.csv")
    ap.add_argument("--fold", type=int, default=4)
    ap.add_argument("--validation-size", type=float, default=0.2)
    ap.add_argument("--group-column", default="Unnamed: 0")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--chunk-seconds", type=float, default=10)
    ap.add_argument("--val-chunk-seconds", type=float, default=5)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--mixed-precision", choices=["on", "off"], default="on",
                    help="bf16 autocast for the model's forward and backward (default on)")
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
                    help="the model's activation layout (oneDNN's fastest is channels_last)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="checkpoints go here (default: a temporary folder)")
    a = ap.parse_args()
    pss = PssPeak()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.out is None:
        import tempfile
        a.out = tempfile.mkdtemp(prefix="e2e_resnet34_")
    os.makedirs(a.out, exist_ok=True)

    header, rows = read_rows(a.csv or os.path.join(a.data, "dataset.csv"))
    audio_col, label_col = header.index("audio"), header.index("label")
    folds = assign_folds(header, rows, a.group_column, a.validation_size)
    classes = sorted({r[label_col] for r in rows})
    onehot = {c: torch.eye(len(classes))[k] for k, c in enumerate(classes)}
    split = {"train": [], "val": []}
    for r, f in zip(rows, folds):
        split["val" if f == a.fold else "train"].append(r)
    sets = {name: Clips([os.path.join(a.data, r[audio_col]) for r in part], [onehot[r[label_col]] for r in part],
                        a, name == "train") for name, part in split.items()}
    print(f"fold {a.fold}: {len(sets['train'])} training and {len(sets['val'])} validation clips, "
          f"classes: {', '.join(classes)}", flush=True)
    train_loader = torch.utils.data.DataLoader(sets["train"], batch_size=a.batch_size, shuffle=True,
                                               drop_last=True, num_workers=a.workers)
    val_loader = torch.utils.data.DataLoader(sets["val"], batch_size=a.batch_size, shuffle=False,
                                             num_workers=a.workers, collate_fn=collate_chunks)

    front = nn.Sequential(
        torchaudio.transforms.MelSpectrogram(sample_rate=a.sample_rate, n_fft=2048, win_length=2048,
                                             hop_length=512, f_min=50, f_max=16000, n_mels=128),
        torchaudio.transforms.AmplitudeToDB(stype="power"))
    memory_format = torch.channels_last if a.memory_format == "channels_last" else torch.contiguous_format
    model = build_model(len(classes)).to(memory_format=memory_format)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    total = len(train_loader) * a.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (1 + math.cos(math.pi * min(1.0, k / total))) / 2)
    loss_fn = nn.BCEWithLogitsLoss()
    bf16 = a.mixed_precision == "on"

    def features(wave):
        with torch.no_grad():
            return front(wave).unsqueeze(1).contiguous(memory_format=memory_format)

    def evaluate():
        model.eval()
        probs, targets = [], []
        with torch.no_grad():
            for chunks, counts, target in val_loader:
                p = torch.sigmoid(model(features(chunks)).float())
                at = 0
                for n in counts.tolist():
                    probs.append(p[at:at + n].mean(0))
                    at += n
                targets.append(target)
        model.train()
        probs, targets = torch.stack(probs).numpy().astype(np.float64), torch.cat(targets).numpy()
        truth, pred = targets.argmax(1), probs.argmax(1)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        loss = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
        return {"f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
                "accuracy": float((truth == pred).mean()), "loss": loss}

    history = []
    for epoch in range(1, a.epochs + 1):
        t_epoch = time.monotonic()
        model.train()
        loss_sum, seen = 0.0, 0
        for b, (wave, target) in enumerate(train_loader, 1):
            x = features(wave)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = loss_fn(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            loss_sum += loss.item() * wave.shape[0]
            seen += wave.shape[0]
            if b % 4 == 0:
                print(f"epoch {epoch} batch {b}/{len(train_loader)}  loss {loss_sum / seen:.4f}  "
                      f"{seen / (time.monotonic() - t_epoch):.1f} samples/s", flush=True)
        train_seconds = time.monotonic() - t_epoch
        ev = evaluate()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch},
                   os.path.join(a.out, "checkpoint.pt"))
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": ev["loss"], "val_f1": ev["f1"],
               "val_accuracy": ev["accuracy"], "train_seconds": train_seconds,
               "samples_per_second": seen / train_seconds, "epoch_seconds": time.monotonic() - t_epoch}
        history.append(row)
        print(f"epoch {epoch}/{a.epochs}: train loss {row['train_loss']:.4f}  val loss {ev['loss']:.4f}  "
              f"val F1 {ev['f1']:.4f}  accuracy {ev['accuracy']:.4f}  ({train_seconds:.1f} s training, "
              f"{row['samples_per_second']:.1f} samples/s; {row['epoch_seconds']:.1f} s with evaluation)",
              flush=True)
    wall = time.monotonic() - T0
    pss.stop.set()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"wall {wall:.1f} s, peak RSS {rss / 1e9:.2f} GB (main process), peak PSS {pss.peak / 1e9:.2f} GB "
          f"(main process and {a.workers} workers)", flush=True)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "wall_seconds": wall, "peak_rss_bytes": rss,
                      "peak_pss_bytes": pss.peak, "epochs": a.epochs, "bf16": bf16,
                      "memory_format": a.memory_format, "workers": a.workers, "threads": a.threads,
                      "final": history[-1], "history": history}))


if __name__ == "__main__":
    main()

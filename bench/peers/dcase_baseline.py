#!/usr/bin/env python3
"""The DCASE 2020 Task 2 baseline (dense autoencoder on log-mel frames), in
PyTorch, on a machrt corpus: the reference anomaly detector the synthetic
corpus is tuned against and machrt's detectors are compared with.

    python3 bench/peers/dcase_baseline.py --data data/synthetic
        [--epochs 100] [--threads 2] [--holdout 0.25] [--json out.json]
        [--types fan,pump] [--check] [--write-folds CSV]

The corpus is a folder with dataset.csv in machrt's layout (first column the
index, then audio, label, model_id, condition, snr_db; audio relative to the
folder; 16 kHz mono 16-bit WAVs), as scripts/synth.lua writes it.

Split (deterministic, no random draw): for each (type, model id), the
normal clips in CSV order; a share `--holdout` of them (default 0.25) is held
out, spread evenly (the k-th normal clip, 0-based, is held out when
floor((k + 1) h) > floor(k h)); the test part is those plus every abnormal
clip of the pair, as DCASE's development set holds out normal clips next to
the abnormal ones. The training part is the other normal clips.

The model, exactly as the baseline (keras_model.py, 00_train.py, 01_test.py
of DCASE2020 task2 baseline): log-mel, 128 bins, n_fft 1024, hop 512, power
2, 10 log10(mel + float eps); 5 frames of context flattened to 640 values;
Dense 128-128-128-128-8-128-128-128-128, each followed by BatchNorm and ReLU,
then Dense 640; MSE; Adam lr 1e-3; 100 epochs; batch 512; shuffled;
validation split 0.1 (the last 10 % of the training vectors, reported, not
used for stopping). One model per machine type, trained on the normal
training clips of all its model ids. A clip's score is the mean over its
frames of the per-frame mean squared reconstruction error. Keras defaults are
kept where PyTorch's differ: Glorot-uniform weights and zero biases,
BatchNorm momentum 0.99 (PyTorch 0.01) and epsilon 1e-3, Adam epsilon 1e-7.

The log-mel uses torchaudio.transforms.MelSpectrogram with librosa's
defaults (Slaney mel scale and Slaney area normalisation, Hann window,
centred frames); librosa 0.10 pads the ends with zeros where torchaudio
reflects, which changes only the first and last two frames of 313, and the
spectrogram is computed in float32 instead of float64, far below the 1e-16
floor's effect on any band that holds sound.

AUC and pAUC per type and model id: pAUC is
sklearn.metrics.roc_auc_score(y, score, max_fpr=0.1), as DCASE 2020's own
evaluator computes it, which applies McClish's standardisation (0.5 for a
random detector, 1 for a perfect one). The type's figures are over all its
test clips pooled; DCASE 2020 reports the mean over model ids, printed too.

Prints a table and, with --json, writes per type and id AUC, pAUC, clip
counts, wall times, the thread count and every test clip's score (with its
fault_severity when the CSV has that column). --check runs a 2-epoch model on at
most 2 types in seconds (a smoke test, not a figure). When torch,
torchaudio or scikit-learn cannot be imported it prints "PyTorch not
installed" and exits 0.
"""
import argparse
import csv
import json
import math
import os
import sys
import time
import wave

np = torch = torchaudio = roc_auc_score = None


def import_peers():
    """numpy, torch, torchaudio and scikit-learn, or exit 0 saying so."""
    global np, torch, torchaudio, roc_auc_score
    try:
        import numpy as np
        import torch
        import torchaudio
        from sklearn.metrics import roc_auc_score
    except ImportError:
        print("PyTorch not installed")
        sys.exit(0)

RATE = 16000
N_MELS, N_FFT, HOP, POWER, FRAMES = 128, 1024, 512, 2.0, 5
EPS = sys.float_info.epsilon


def read_corpus(folder, csv_name="dataset.csv"):
    """Rows of the corpus CSV as dicts (audio made absolute, index int)."""
    path = os.path.join(folder, csv_name)
    if not os.path.exists(path):
        sys.exit(f"dcase_baseline: no {csv_name} in {folder}")
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        need = ["audio", "label", "model_id", "condition"]
        missing = [c for c in need if c not in header]
        if missing:
            sys.exit(f"dcase_baseline: {path} lacks the column(s) {', '.join(missing)} "
                     f"(has {', '.join(header)})")
        for rec in reader:
            row = dict(zip(header, rec))
            row["index"] = int(rec[0])
            row["audio"] = os.path.join(folder, row["audio"])
            if row["condition"] not in ("normal", "abnormal"):
                sys.exit(f"dcase_baseline: {path}: condition must be normal or abnormal, "
                         f"got '{row['condition']}'")
            rows.append(row)
    return rows


def read_wav(path):
    """A 16 kHz 16-bit PCM WAV as float32 in [-1, 1), first channel."""
    with wave.open(path, "rb") as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2:
            sys.exit(f"dcase_baseline: {path}: needs 16 kHz 16-bit PCM, got "
                     f"{w.getframerate()} Hz, {8 * w.getsampwidth()} bit")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        data = data.reshape(-1, w.getnchannels())[:, 0]
    return data.astype(np.float32) / 32768.0


_MEL = None


def log_mel(wave_f32):
    """log-mel (frames x 128) in dB, the baseline's front end."""
    global _MEL
    if _MEL is None:
        _MEL = torchaudio.transforms.MelSpectrogram(
            sample_rate=RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=POWER,
            norm="slaney", mel_scale="slaney")
    with torch.no_grad():
        mel = _MEL(torch.from_numpy(wave_f32))
    return (20.0 / POWER * torch.log10(mel + EPS)).T.contiguous()


def vectors(lm):
    """5 consecutive frames flattened: (frames - 4) x 640, frame t first."""
    n = lm.shape[0] - FRAMES + 1
    return torch.cat([lm[t:t + n] for t in range(FRAMES)], dim=1)


def write_folds(rows, holdout, folder, path):
    """The corpus CSV plus a "fold" column, 0 for the test part of split()
    and 1 for its training part, so that machrt's experiments
    (--dataset.train_dataframe=PATH --dataset.folds=0) train and validate on
    exactly this peer's split."""
    train, _ = split(rows, holdout)
    in_train = {r["index"] for r in train}
    with open(os.path.join(folder, "dataset.csv"), newline="") as f:
        records = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(records[0] + ["fold"])
        for rec in records[1:]:
            out.writerow(rec + ["1" if int(rec[0]) in in_train else "0"])
    print(f"dcase_baseline: {path}: {len(in_train)} training and "
          f"{len(records) - 1 - len(in_train)} test rows (fold 0)")


def split(rows, holdout):
    """(train, test) row lists: see the module docstring."""
    normals = {}
    train, test = [], []
    for r in rows:
        if r["condition"] == "abnormal":
            test.append(r)
            continue
        key = (r["label"], r["model_id"])
        k = normals.get(key, 0)
        normals[key] = k + 1
        held = math.floor((k + 1) * holdout + 1e-9) > math.floor(k * holdout + 1e-9)
        (test if held else train).append(r)
    return train, test


def dense(i, o):
    lin = torch.nn.Linear(i, o)
    torch.nn.init.xavier_uniform_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    return lin


def baseline_model(dim=N_MELS * FRAMES):
    layers, width = [], dim
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        layers += [dense(width, units), torch.nn.BatchNorm1d(units, eps=1e-3, momentum=0.01),
                   torch.nn.ReLU()]
        width = units
    layers.append(dense(width, dim))
    return torch.nn.Sequential(*layers)


def train(x, epochs, batch, log):
    model = baseline_model(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    n_val = int(x.shape[0] * 0.1)   # Keras: the last 10 %, before shuffling
    xt, xv = x[:x.shape[0] - n_val], x[x.shape[0] - n_val:]
    loss_fn = torch.nn.MSELoss()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(xt.shape[0])
        total = 0.0
        for b in range(0, xt.shape[0], batch):
            xb = xt[perm[b:b + batch]]
            if xb.shape[0] < 2:
                continue   # BatchNorm needs two samples in training mode
            opt.zero_grad()
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        if log and (ep == epochs - 1 or ep % max(1, epochs // 5) == 0):
            model.eval()
            with torch.no_grad():
                val = loss_fn(model(xv), xv).item() if n_val else float("nan")
            log(f"  epoch {ep + 1}/{epochs}: loss {total / xt.shape[0]:.3f}, val_loss {val:.3f}")
    model.eval()
    return model


def score(model, clip_vectors):
    with torch.no_grad():
        return float(((model(clip_vectors) - clip_vectors) ** 2).mean(dim=1).mean())


def metrics(y, s):
    if len(set(y)) < 2:
        return float("nan"), float("nan")
    return float(roc_auc_score(y, s)), float(roc_auc_score(y, s, max_fpr=0.1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="corpus folder holding dataset.csv")
    ap.add_argument("--csv", default="dataset.csv")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--holdout", type=float, default=0.25,
                    help="share of each (type, id)'s normal clips held out for testing")
    ap.add_argument("--types", default=None, help="comma-separated machine types (default all)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed (weights, shuffling)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--check", action="store_true", help="2 epochs, 2 types: a smoke run")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--write-folds", default=None, metavar="CSV",
                    help="write the corpus CSV with this split as a fold column (0: test) and exit")
    a = ap.parse_args()
    if not 0.0 < a.holdout < 1.0:
        sys.exit(f"dcase_baseline: --holdout must be in (0, 1), got {a.holdout}")
    if a.write_folds:
        write_folds(read_corpus(a.data, a.csv), a.holdout, a.data, a.write_folds)
        return
    import_peers()
    if a.epochs < 1:
        sys.exit(f"dcase_baseline: --epochs must be positive, got {a.epochs}")

    import warnings
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    log = None if a.quiet else (lambda m: print(m, flush=True))

    rows = read_corpus(a.data, a.csv)
    types = sorted({r["label"] for r in rows})
    if a.types:
        want = a.types.split(",")
        bad = [t for t in want if t not in types]
        if bad:
            sys.exit(f"dcase_baseline: no clips of type {', '.join(bad)} (has {', '.join(types)})")
        types = want
    if a.check:
        types, a.epochs = types[:2], 2
    t_all = time.time()
    result = {"epochs": a.epochs, "batch": a.batch, "threads": torch.get_num_threads(),
              "holdout": a.holdout, "pauc": "sklearn roc_auc_score(max_fpr=0.1), McClish",
              "torch": torch.__version__, "types": {}}
    print(f"{'type':8} {'id':>4} {'normal':>6} {'abn.':>5} {'AUC':>7} {'pAUC':>7} {'seconds':>8}")
    for t in types:
        t0 = time.time()
        tr, te = split([r for r in rows if r["label"] == t], a.holdout)
        if a.check:
            tr, te = tr[:8], te[:4] + [r for r in te if r["condition"] == "abnormal"][:4]
        x = torch.cat([vectors(log_mel(read_wav(r["audio"]))) for r in tr])
        t_feat = time.time() - t0
        if log:
            log(f"{t}: {len(tr)} training clips, {x.shape[0]} vectors, features {t_feat:.1f} s")
        model = train(x, a.epochs, a.batch, log)
        t_train = time.time() - t0 - t_feat
        scores = [score(model, vectors(log_mel(read_wav(r["audio"])))) for r in te]
        y = [1 if r["condition"] == "abnormal" else 0 for r in te]
        ids = sorted({r["model_id"] for r in te})
        per_id = {}
        for i in ids:
            sel = [k for k, r in enumerate(te) if r["model_id"] == i]
            auc, pauc = metrics([y[k] for k in sel], [scores[k] for k in sel])
            per_id[i] = {"auc": auc, "pauc": pauc, "normal": sum(1 - y[k] for k in sel),
                         "abnormal": sum(y[k] for k in sel)}
        auc, pauc = metrics(y, scores)
        secs = time.time() - t0
        result["types"][t] = {
            "auc": auc, "pauc": pauc,
            "auc_mean_over_ids": float(np.nanmean([v["auc"] for v in per_id.values()])),
            "pauc_mean_over_ids": float(np.nanmean([v["pauc"] for v in per_id.values()])),
            "train_clips": len(tr), "test_normal": len(y) - sum(y), "test_abnormal": sum(y),
            "seconds": secs, "seconds_features": t_feat, "seconds_training": t_train,
            "ids": per_id,
            "clips": [{"audio": os.path.relpath(r["audio"], a.data), "condition": r["condition"],
                       "model_id": r["model_id"], "score": sc,
                       "fault_severity": float(r.get("fault_severity") or 0)}
                      for r, sc in zip(te, scores)]}
        for i, v in per_id.items():
            print(f"{t:8} {i:>4} {v['normal']:6d} {v['abnormal']:5d} {v['auc']:7.3f} "
                  f"{v['pauc']:7.3f}")
        r = result["types"][t]
        print(f"{t:8} {'all':>4} {r['test_normal']:6d} {r['test_abnormal']:5d} {auc:7.3f} "
              f"{pauc:7.3f} {secs:8.1f}")
        print(f"{t:8} {'mean':>4} {'':6} {'':5} {r['auc_mean_over_ids']:7.3f} "
              f"{r['pauc_mean_over_ids']:7.3f}", flush=True)
    result["seconds"] = time.time() - t_all
    print(f"dcase baseline: {len(types)} types, {a.epochs} epochs, "
          f"{result['threads']} threads, {result['seconds']:.1f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

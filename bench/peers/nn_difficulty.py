#!/usr/bin/env python3
"""How easy the corpus makes classification: leave-one-out 1-nearest-
neighbour accuracy on level-normalised band means.

    python3 bench/peers/nn_difficulty.py --data data/synthetic [--json out.json]

Each clip becomes one vector: the time average of its log-mel (the DCASE
baseline's front end, bench/peers/dcase_baseline.py: 128 bins, dB), minus
that vector's own mean over the bins, so the recording level is no cue.
Each clip is then labelled by its nearest other clip (Euclidean). Printed:
the machine-type accuracy over all clips, the model-id accuracy within each
type, and the normal/abnormal accuracy within each (type, id). A corpus on
which the first is near 100 % makes type classification a lookup of the
long-term spectrum. When the Python packages are missing it prints
"PyTorch not installed" and exits 0.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcase_baseline as base  # noqa: E402  (prints the notice and exits without torch)

import torch  # noqa: E402


def band_means(rows):
    out = []
    for r in rows:
        m = base.log_mel(base.read_wav(r["audio"])).mean(dim=0)
        out.append(m - m.mean())
    return torch.stack(out).double()


def loo_accuracy(x, labels):
    """Leave-one-out 1-NN accuracy of `labels` over the rows of x."""
    if len(x) < 2:
        return float("nan")
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    nn = d.argmin(dim=1).tolist()
    return sum(labels[i] == labels[j] for i, j in enumerate(nn)) / len(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--csv", default="dataset.csv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import warnings
    warnings.simplefilter("ignore")
    rows = base.read_corpus(a.data, a.csv)
    x = band_means(rows)
    res = {"clips": len(rows), "type": loo_accuracy(x, [r["label"] for r in rows]),
           "model_id": {}, "condition": {}}
    print(f"1-NN type accuracy over {len(rows)} clips: {100 * res['type']:.1f} %")
    for t in sorted({r["label"] for r in rows}):
        sel = [k for k, r in enumerate(rows) if r["label"] == t]
        res["model_id"][t] = loo_accuracy(x[sel], [rows[k]["model_id"] for k in sel])
        conds = []
        for i in sorted({rows[k]["model_id"] for k in sel}):
            s2 = [k for k in sel if rows[k]["model_id"] == i]
            conds.append(loo_accuracy(x[s2], [rows[k]["condition"] for k in s2]))
        res["condition"][t] = sum(conds) / len(conds)
        print(f"  {t:8} model id {100 * res['model_id'][t]:5.1f} %, "
              f"normal/abnormal within an id {100 * res['condition'][t]:5.1f} %")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

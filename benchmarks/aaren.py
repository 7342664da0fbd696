"""Aaren benchmarks: constant memory per stream, linear streaming time, and the parallel scan's speed.

  (a) memory per stream after 1k / 10k / 100k tokens: the Aaren step's state (and the peak RSS of a process
      streaming the exported ONNX step) vs the KV cache of a Transformer decoder of the same width;
  (b) cumulative time to process T tokens one at a time: exported Aaren step vs the KV-cache decoder (eager);
  (c) the parallel prefix scan vs a step-by-step loop for the many-to-many output, T = 1k .. 16k;
  and per new token at T = 1,000: the exported step vs recomputing the eager parallel form over the prefix.
Single thread. Writes its section of docs/benchmarks.md.

Run: python benchmarks/aaren.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from edgeseq.models.aaren import prefix_scan, sequential_scan  # noqa: E402
from _common import stream_peak_rss, write_section  # noqa: E402  (benchmarks/_common.py)

ROOT = Path(__file__).resolve().parent.parent
D_IN, D_MODEL, HEADS, LAYERS, D_FF = 16, 64, 4, 2, 128


class KVCacheDecoder(nn.Module):
    """A pre-LN Transformer decoder of the same width, streaming one token at a time with a KV cache."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(D_IN, D_MODEL)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"n1": nn.LayerNorm(D_MODEL), "qkv": nn.Linear(D_MODEL, 3 * D_MODEL), "o": nn.Linear(D_MODEL, D_MODEL),
                           "n2": nn.LayerNorm(D_MODEL), "ff": nn.Sequential(nn.Linear(D_MODEL, D_FF), nn.GELU(), nn.Linear(D_FF, D_MODEL))})
            for _ in range(LAYERS))
        self.head = nn.Linear(D_MODEL, 1)

    def step(self, x: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]):
        h = self.embed(x)  # (1, D)
        new = []
        for layer, (k_c, v_c) in zip(self.layers, cache):
            q, k, v = layer["qkv"](layer["n1"](h)).view(1, 3, HEADS, D_MODEL // HEADS).unbind(1)  # (1, H, dh)
            k_c = torch.cat([k_c, k[:, :, None]], dim=2)  # (1, H, t, dh): grows by one token
            v_c = torch.cat([v_c, v[:, :, None]], dim=2)
            att = torch.softmax((q[:, :, None] @ k_c.transpose(-1, -2)) / math.sqrt(D_MODEL // HEADS), -1)  # (1, H, 1, t)
            h = h + layer["o"]((att @ v_c).reshape(1, D_MODEL))
            h = h + layer["ff"](layer["n2"](h))
            new.append((k_c, v_c))
        return self.head(h), new

    def empty_cache(self):
        z = torch.zeros(1, HEADS, 0, D_MODEL // HEADS)
        return [(z, z) for _ in range(LAYERS)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lengths = [1_000, 10_000] + ([] if args.quick else [100_000])
    model = edgeseq.build("aaren", d_in=D_IN, d_out=1, d_model=D_MODEL, n_heads=HEADS, n_layers=LAYERS, d_ff=D_FF).eval()
    step = edgeseq.convert(model)
    lines = ["## Aaren (benchmarks/aaren.py)", "",
             f"Aaren {LAYERS} layers x {HEADS} heads, width {D_MODEL}, feed-forward {D_FF}; the Transformer decoder has "
             "the same width, depth and feed-forward and streams with a KV cache (eager PyTorch). Single thread.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        art = edgeseq.export(step, Path(tmp) / "aaren", target="onnx")
        # (a) memory
        print("(a) memory ...", file=sys.stderr)
        lines += ["### (a) Memory per stream", "",
                  "| tokens | Aaren state (measured) | Aaren process peak RSS, ONNX step | Transformer KV cache |", "|---:|---:|---:|---:|"]
        dec = KVCacheDecoder().eval()
        kv_measured = {}
        cache = dec.empty_cache()
        x1 = torch.randn(1, D_IN)
        with torch.no_grad():
            for t in range(1, 10_001):
                _, cache = dec.step(x1, cache)
                if t in (1_000, 10_000):
                    kv_measured[t] = sum(k.numel() * 4 + v.numel() * 4 for k, v in cache)
        per_token = kv_measured[10_000] // 10_000
        rss = {}
        for n in lengths:
            state_b, hwm = stream_peak_rss(art.path, n)
            rss[n] = (state_b, hwm)
            kv = kv_measured.get(n)
            kv_txt = f"{kv:,} B (measured)" if kv else f"{per_token * n:,} B ({per_token} B/token x {n:,}, computed)"
            lines.append(f"| {n:,} | {state_b:,} B | {hwm / 2**20:.1f} MiB | {kv_txt} |")
        first, last = rss[lengths[0]][1], rss[lengths[-1]][1]
        lines += ["", f"Aaren's state is {rss[lengths[0]][0]:,} bytes whatever the length; the process peak RSS moves "
                  f"{(last / first - 1) * 100:+.2f}% from {lengths[0]:,} to {lengths[-1]:,} tokens (target: within 5%). "
                  f"The KV cache grows by {per_token:,} bytes per token.", ""]

        # (b) cumulative streaming time
        print("(b) streaming time ...", file=sys.stderr)
        marks = [250, 500, 1000, 2000] + ([] if args.quick else [4000, 8000])
        sess = edgeseq.open(art.path)
        xs = np.random.default_rng(0).standard_normal((marks[-1], 1, D_IN)).astype(np.float32)
        t_aaren, t_dec = {}, {}
        t0 = time.perf_counter()
        for t in range(marks[-1]):
            sess.push(xs[t])
            if t + 1 in marks:
                t_aaren[t + 1] = time.perf_counter() - t0
        cache = dec.empty_cache()
        xt = torch.from_numpy(xs)
        t0 = time.perf_counter()
        with torch.no_grad():
            for t in range(marks[-1]):
                _, cache = dec.step(xt[t], cache)
                if t + 1 in marks:
                    t_dec[t + 1] = time.perf_counter() - t0
        lines += ["### (b) Cumulative time to stream T tokens one at a time", "",
                  "| T | Aaren, ONNX step (s) | µs/token | Transformer, KV cache (s) | µs/token |", "|---:|---:|---:|---:|---:|"]
        for m in marks:
            lines.append(f"| {m:,} | {t_aaren[m]:.3f} | {t_aaren[m] / m * 1e6:.0f} | {t_dec[m]:.3f} | {t_dec[m] / m * 1e6:.0f} |")
        lines += ["", f"From {marks[0]:,} to {marks[-1]:,} tokens Aaren's time grows {t_aaren[marks[-1]] / t_aaren[marks[0]]:.1f}x "
                  f"for {marks[-1] / marks[0]:.0f}x the tokens (linear); the KV-cache decoder's grows "
                  f"{t_dec[marks[-1]] / t_dec[marks[0]]:.1f}x (its per-token cost rises with the cache).", ""]

        # the target: exported step vs recomputing the parallel form at T = 1000
        print("per-token cost at T=1000 ...", file=sys.stderr)
        prefix = torch.randn(1, 1000, D_IN)
        with torch.no_grad():
            recompute = _mean(lambda: model.forward_steps(prefix), reps=10, warmup=3)
        sess.reset()
        per_token = _mean(lambda: sess.push(xs[0]), reps=2000, warmup=200)
        lines += ["### Target: one new token at T = 1,000", "",
                  f"Recomputing the eager parallel form over the 1,000-token prefix: {recompute * 1e3:.2f} ms; the exported "
                  f"ONNX step (`StreamSession.push`): {per_token * 1e6:.0f} µs: **{recompute / per_token:.0f}x** faster per new "
                  "token (target >= 50x).", ""]

    # (c) parallel scan vs loop
    print("(c) scan vs loop ...", file=sys.stderr)
    lines += ["### (c) Many-to-many output: parallel prefix scan vs a step-by-step loop", "",
              f"Scores (1, {HEADS}, T), values (1, {HEADS}, T, {D_MODEL // HEADS}); eager PyTorch, one thread.", "",
              "| T | parallel scan (ms) | sequential loop (ms) | speed-up |", "|---:|---:|---:|---:|"]
    for T in [1024, 2048, 4096] + ([] if args.quick else [8192, 16384]):
        s, v = torch.randn(1, HEADS, T), torch.randn(1, HEADS, T, D_MODEL // HEADS)
        tp = _best(lambda: prefix_scan(s, v), 5)
        tl = _best(lambda: sequential_scan(s, v), 2)
        lines.append(f"| {T:,} | {tp * 1e3:.1f} | {tl * 1e3:.1f} | {tl / tp:.1f}x |")
    lines.append("")
    md = "\n".join(lines)
    print(md)
    write_section(args.out, "aaren", md)


def _mean(fn, reps: int, warmup: int) -> float:
    """Mean seconds per call over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


if __name__ == "__main__":
    main()

"""Streaming activity recognition on a smart watch's IMU, sample by sample (BasicMotions, 10 Hz, 6 channels).

A temporal CNN clip classifier is trained offline on 3.2 s windows (32 samples) cut from the training
recordings, converted into a continual step (one new sample in, the class scores of the window that ends at
that sample out, the work of one sample), exported to ExecuTorch, and fed the 40 test recordings back to back
as one 4,000-sample stream. It checks that the streamed scores equal the clip model run on every window of that
stream, and reports window accuracy offline vs streamed, FLOPs per sample vs per window, latency per sample,
and state bytes.

Run: python examples/sensor_stream.py [--epochs 60] [--out runs/sensor]   (needs the [data] extra: aeon)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.flops import step_cost
from edgeseq.models.continual import OfflineModel

WINDOW = 32  # samples per clip: 3.2 s at 10 Hz


def clip_model(d_in: int, classes: int) -> nn.Sequential:
    """Unpadded dilated convolutions (receptive field 29 samples), a global pool over the clip, a linear head."""
    return nn.Sequential(
        nn.Conv1d(d_in, 32, 5), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 32, 5, dilation=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 32, 5, dilation=4), nn.BatchNorm1d(32), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, classes),
    )


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> list[float]:
    """Random 32-sample crops of the training recordings, 16 per recording per epoch; AdamW."""
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    xs, ys = torch.from_numpy(x).transpose(1, 2), torch.from_numpy(y)  # (N, C, T)
    losses = []
    net.train()
    for _ in range(epochs):
        idx = np.repeat(np.arange(len(xs)), 16)
        starts = g.integers(0, xs.shape[2] - WINDOW + 1, size=len(idx))
        order = g.permutation(len(idx))
        total = 0.0
        for b in range(0, len(order), 64):
            sel = order[b : b + 64]
            clips = torch.stack([xs[idx[i], :, starts[i] : starts[i] + WINDOW] for i in sel])
            loss = nn.functional.cross_entropy(net(clips), ys[idx[sel]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(sel)
        losses.append(total / len(order))
    return losses


def run(epochs: int, out: Path, quiet: bool = False) -> dict:
    say = (lambda *a: None) if quiet else print
    ds = load_dataset("basic-motions")
    net = clip_model(ds.d_in, ds.d_out)
    t0 = time.perf_counter()
    losses = train(net, ds.train.x, ds.train.y, epochs)
    net.eval()
    say(f"trained {epochs} epochs in {time.perf_counter() - t0:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    model = OfflineModel(net, ds.d_in, window=WINDOW)
    step = edgeseq.convert(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, out / "sensor_clip", target="executorch")
    say(f"exported {art.path.name}: export parity over {art.parity['steps']} steps {art.parity['max_abs_error']:.2e}")

    stream = ds.test.x.reshape(-1, ds.d_in)  # 40 recordings x 100 samples, back to back
    owner = np.repeat(np.arange(len(ds.test.y)), ds.test.x.shape[1])  # recording of each sample
    sess = edgeseq.open(art.path)
    scores, times = [], []
    for sample in stream:  # one sample at a time, as it arrives from the watch
        t = time.perf_counter()
        y = sess.push(sample[None])
        times.append(time.perf_counter() - t)
        scores.append(y[0] if sess.ready else None)
    delay = sess.delay
    streamed = np.stack(scores[delay:])  # window m = samples m .. m + 31, ready at sample m + 31
    with torch.no_grad():
        offline = model.forward_steps(torch.from_numpy(stream)[None])[0].numpy()  # the clip model on every window
    starts = np.arange(len(streamed))
    inside = owner[starts] == owner[starts + WINDOW - 1]  # windows within one recording
    labels = ds.test.y[owner[starts]]
    acc = lambda s: float((s.argmax(1)[inside] == labels[inside]).mean())  # noqa: E731
    cost = step_cost(step)
    result = {
        "epochs": epochs, "window": WINDOW, "delay": delay, "stream_samples": len(stream),
        "windows_inside_recordings": int(inside.sum()),
        "stream_vs_clip_model_max_abs": float(np.abs(streamed - offline).max()),
        "accuracy_clip_model": acc(offline), "accuracy_streamed": acc(streamed),
        "flops_per_sample": cost["flops_per_step"], "flops_per_window": cost["offline_flops_per_output"],
        "us_per_sample_median": float(np.median(times[10:]) * 1e6),
        "state_bytes": step.state_spec.bytes_per_stream, "artifact": str(art.path),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensor_stream.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"streamed {len(stream)} samples; first {delay} not ready; streamed vs clip model on every window: max abs "
        f"{result['stream_vs_clip_model_max_abs']:.2e}")
    say(f"window accuracy ({result['windows_inside_recordings']} windows inside a recording): clip model "
        f"{result['accuracy_clip_model']:.4f}, streamed {result['accuracy_streamed']:.4f}")
    say(f"{cost['flops_per_step'] / 1e3:.1f} kFLOP per sample vs {cost['offline_flops_per_output'] / 1e3:.1f} kFLOP to "
        f"recompute the window ({cost['offline_over_step']:.1f}x); {result['us_per_sample_median']:.0f} µs per sample "
        f"(session.push, median); state {result['state_bytes']:,} bytes")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("runs/sensor"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    run(args.epochs, args.out)


if __name__ == "__main__":
    main()

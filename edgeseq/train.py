"""Training the parallel form on a registered data set (CPU, or CUDA when available).

Library code: no printing. Pass ``progress(epoch, epochs, loss)`` to follow along.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgeseq.data import SequenceDataset, Split


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # passes over the training split
    batch_size: int = 32  # series per optimiser step
    lr: float = 1e-2  # AdamW learning rate (peak; cosine decay to 0)
    weight_decay: float = 1e-4  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0  # initialisation and shuffling
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class TrainResult:
    metrics: dict[str, float]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _loss(model: nn.Module, task: str, x, lengths, y):
    if task == "classify":
        return nn.functional.cross_entropy(model(x, lengths), y)
    pred = model(x)  # (B, T, d_out)
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    return ((pred - y) ** 2 * mask).sum() / (mask.sum() * pred.shape[-1])


def fit(
    model: nn.Module, data: SequenceDataset, config: TrainConfig = TrainConfig(),
    progress: Callable[[int, int, float], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train``; returns metrics on ``data.test``. Sets ``model.train_length``. ``data``:
    a SequenceDataset, a bundled data set's name or a data file or folder (:func:`edgeseq.data.load`).

    ``after_step()`` runs after every optimiser step (pruning uses it to keep pruned weights at zero)."""
    from edgeseq.data import check_fits, load

    c = getattr(model, "config", None)
    data = load(data, d_in=getattr(c, "d_in", None), labels_for="training")
    if c is not None and hasattr(c, "d_in"):
        check_fits(data, c.d_in, d_out=getattr(c, "d_out", None), task=getattr(c, "task", None), what="training data")
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    model.to(device).train()
    x, lengths, y = (t.to(device) for t in data.train.tensors())
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.epochs, 1))
    g = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    for epoch in range(config.epochs):
        order = torch.randperm(len(lengths), generator=g).to(device)
        total, n = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            with autocast:
                loss = _loss(model, data.task, x[idx], lengths[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        sched.step()
        losses.append(total / n)
        if progress is not None:
            progress(epoch + 1, config.epochs, losses[-1])
    seconds = time.perf_counter() - t0
    model.to("cpu").eval()
    model.train_length = data.max_length
    return TrainResult(evaluate(model, data.task, data.test), losses, seconds)


def evaluate(model: nn.Module, task: str, split: Split) -> dict[str, float]:
    """Accuracy (classify) or MSE/MAE over valid steps (sequence) of the parallel form."""
    x, lengths, y = split.tensors()
    model.eval()
    with torch.no_grad():
        if task == "classify":
            pred = model(x, lengths).argmax(-1)
            return {"accuracy": float((pred == y).float().mean())}
        out = model(x)
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        err = (out - y) * mask
        denom = float(mask.sum() * out.shape[-1])
        return {"mse": float((err**2).sum()) / denom, "mae": float(err.abs().sum()) / denom}


def stream_outputs(session, split: Split, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Stream every series of ``split`` through a :class:`StreamSession` (batch 1), one frame at a time, from a
    reset state; return the output after each series' last frame: (series, d_out)."""
    outs = []
    for i in range(len(split)):
        session.reset()
        y = None
        for frame in split.series(i):
            y = session.push(np.ascontiguousarray(frame, dtype=np.float32))
        outs.append(y[0] if y.ndim == 2 else y)
        if progress is not None:
            progress(i + 1, len(split))
    return np.stack(outs)


def stream_predictions(session, split: Split) -> np.ndarray:
    """The predicted class per series when each series is streamed frame by frame (classification)."""
    return stream_outputs(session, split).argmax(-1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

"""Pruning methods ``unstructured`` (magnitude, global or per layer) and ``n:m`` (N of every M weights kept).

Both zero weights inside dense matrices: the saving is a smaller compressed download (zeros compress), not speed
on CPU runtimes (ExecuTorch XNNPACK and onnxruntime CPU run dense kernels: FACTS.md). ``n:m`` with 2:4 is the
pattern TensorRT's sparse tensor cores run on Jetson Orin (Ampere); the mask groups M consecutive weights along
each row's input dimension, the layout those kernels expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.quant.prune import PruneConfig, PruneMethod, register_method, weight_matrices


@dataclass(frozen=True)
class UnstructuredConfig(PruneConfig):
    method = "unstructured"
    scope: str = "global"  # global: one magnitude threshold over every matrix; layer: the same fraction per matrix

    def __post_init__(self):
        super().__post_init__()
        if self.scope not in ("global", "layer"):
            raise ConfigError(f"unstructured: scope must be 'global' or 'layer', got {self.scope!r}")


@dataclass(frozen=True)
class NMConfig(PruneConfig):
    method = "n:m"
    n: int = 2  # weights kept in every group
    m: int = 4  # group size along the input dimension
    amount: float = 0.5  # informational: 1 - n/m

    def __post_init__(self):
        if not 0 < self.n < self.m:
            raise ConfigError(f"n:m: need 0 < n < m, got {self.n}:{self.m}")
        object.__setattr__(self, "amount", 1 - self.n / self.m)


def _unstructured(model: nn.Module, config: UnstructuredConfig) -> dict[str, torch.Tensor]:
    ws = weight_matrices(model)
    masks = {}
    with torch.no_grad():
        if config.scope == "global":
            allw = torch.cat([w.detach().abs().flatten() for w in ws.values()])
            k = int(config.amount * allw.numel())
            thr = allw.kthvalue(k).values if k > 0 else allw.min() - 1
            for n, w in ws.items():
                masks[n] = (w.abs() > thr).to(w.dtype)
        else:
            for n, w in ws.items():
                k = int(config.amount * w.numel())
                thr = w.detach().abs().flatten().kthvalue(k).values if k > 0 else w.abs().min() - 1
                masks[n] = (w.abs() > thr).to(w.dtype)
        for n, w in ws.items():
            w.mul_(masks[n])
    return masks


def _nm(model: nn.Module, config: NMConfig) -> dict[str, torch.Tensor]:
    ws = weight_matrices(model)
    bad = [n for n, w in ws.items() if w.shape[1] % config.m]
    if bad:
        raise ConfigError(f"n:m {config.n}:{config.m}: input widths of {', '.join(bad)} are not multiples of {config.m}")
    masks = {}
    with torch.no_grad():
        for n, w in ws.items():
            g = w.abs().reshape(w.shape[0], -1, config.m)
            keep = g.topk(config.n, dim=-1).indices
            mask = torch.zeros_like(g).scatter_(-1, keep, 1.0).reshape(w.shape)
            masks[n] = mask
            w.mul_(mask)
    return masks


register_method(PruneMethod("unstructured", UnstructuredConfig, "magnitude pruning inside dense matrices (download size, not speed, on CPU)", _unstructured))
register_method(PruneMethod("n:m", NMConfig, "N of every M input weights kept (2:4: TensorRT sparse tensor cores on Orin)", _nm))

"""``prune_(model, config)``: prune a trained parallel-form model in place (then convert and export it as usual).

Methods (one module each, registered by config type): ``unstructured`` (magnitude, global or per layer),
``n:m`` (N of every M consecutive input weights kept, 2:4 for sparse tensor cores on Jetson Orin), both
masks on dense matrices: a smaller compressed download, no speed-up on CPU runtimes, which run dense kernels; and
``structured`` (whole hidden units removed, the model rewritten into physically smaller matrices: faster
everywhere). ``finetune_epochs`` retrains on real data afterwards, keeping pruned weights at zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.registry import Registry


@dataclass(frozen=True)
class PruneConfig:
    method = ""  # class attribute: the registry key
    version = 1
    amount: float = 0.5  # fraction of weights (unstructured) or hidden units (structured) to remove

    def __post_init__(self):
        if not 0.0 <= self.amount < 1.0:
            raise ConfigError(f"{self.method}: amount must be in [0, 1), got {self.amount}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, **dataclasses.asdict(self)}


@dataclass
class PruneMethod:
    name: str
    config: type[PruneConfig]
    summary: str
    apply: Callable[[nn.Module, PruneConfig], dict[str, torch.Tensor]]  # returns masks (name -> 0/1) to keep during fine-tuning


METHODS: Registry[PruneMethod] = Registry("pruning method")


def register_method(m: PruneMethod) -> PruneMethod:
    METHODS.register(m.name, m)
    return m


def weight_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every 2-D weight (linear layers, recurrent input/hidden matrices); biases, norms and embeddings' 1-D
    parameters are never pruned."""
    return {n: p for n, p in model.named_parameters() if p.dim() == 2 and "weight" in n.split(".")[-1]}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> Callable[[], None]:
    params = dict(model.named_parameters())

    def reapply() -> None:
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m.to(params[n].device))

    return reapply


def sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the prunable weight matrices."""
    ws = list(weight_matrices(model).values())
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws)) / max(total, 1)


def prune_(model: nn.Module, config: PruneConfig, *, data=None, finetune_epochs: int = 0,
           progress: Callable[[int, int, float], None] | None = None) -> nn.Module:
    """Prune ``model`` in place with ``config``; fine-tune for ``finetune_epochs`` on ``data`` (a data set name, a
    data file or folder, or a SequenceDataset; see :func:`edgeseq.data.load`) keeping pruned weights at zero. Records ``model.pruning`` (goes into the manifest). Returns the model."""
    method = METHODS.find(lambda _k, m: type(config) is m.config)
    if method is None:
        raise ConfigError(f"{type(config).__name__} is not a pruning config; known: {', '.join(METHODS.keys())}")
    if finetune_epochs and not data:
        raise ConfigError("fine-tuning needs data: pass data= a data set name (e.g. 'japanese-vowels') or a data file")
    ds = None
    if finetune_epochs:  # the data is checked against the model before anything is pruned
        from edgeseq.data import check_fits, load

        c = getattr(model, "config", None)
        ds = load(data, d_in=getattr(c, "d_in", None), labels_for="fine-tuning")
        check_fits(ds, c.d_in, d_out=getattr(c, "d_out", None), task=getattr(c, "task", None), what="fine-tuning data")
    masks = method.apply(model, config)
    record: dict[str, Any] = {"config": config.to_dict(), "summary": method.summary,
                              "sparsity": sparsity(model), "params": sum(p.numel() for p in model.parameters())}
    if finetune_epochs:
        from edgeseq.train import TrainConfig, fit

        res = fit(model, ds, TrainConfig(epochs=finetune_epochs, lr=3e-3), progress=progress,
                  after_step=apply_masks(model, masks) if masks else None)
        record["finetune"] = {"data": ds.name, "epochs": finetune_epochs, "metrics": res.metrics}
        record["sparsity"] = sparsity(model)
    model.pruning = record
    return model

"""Pruning method ``structured``: remove whole hidden units, rewriting the model into physically smaller matrices.

A unit's importance is the L2 norm of every weight that touches it: its rows in the input and hidden matrices
(all gates), its column in the hidden matrix, and its column in whatever reads the layer (the next layer's input
matrix or the head). Each layer keeps its ``(1 - amount) * H`` most important units (the same count per layer:
the family's config has one width). Rewriters are registered per model type; this version has the ``rnn``
family (LSTM, GRU, Elman). Aaren and Mamba would need head/channel rewriters of their own: refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.quant.prune import PruneConfig, PruneMethod, register_method
from edgeseq.registry import Registry


@dataclass(frozen=True)
class StructuredConfig(PruneConfig):
    method = "structured"


REWRITERS: Registry[Callable[[nn.Module, float], None]] = Registry("structured-pruning model type")


def _structured(model: nn.Module, config: StructuredConfig) -> dict:
    rewrite = REWRITERS.find(lambda k, _v: isinstance(model, k))
    if rewrite is None:
        raise ConfigError(
            f"structured pruning has no rewriter for {type(model).__name__}; it supports: "
            f"{', '.join(k.__name__ for k in REWRITERS.keys())} (register one in edgeseq.quant.prune_structured.REWRITERS)"
        )
    rewrite(model, config.amount)
    return {}  # the removed weights are gone: nothing to mask while fine-tuning


def _rnn_units(model, amount: float) -> None:
    from edgeseq.models.rnn import RNNModel

    c = model.config
    if c.proj_size:
        raise ConfigError("structured pruning of LSTM with proj_size is not supported (the projection mixes units)")
    H, L = c.d_hidden, c.num_layers
    keep_n = max(1, round(H * (1 - amount)))
    gates = {"lstm": 4, "gru": 3}.get(c.cell, 1)
    sd = {k: v.detach().clone() for k, v in model.rnn.state_dict().items()}
    head_w = model.head.weight.detach() if isinstance(model.head, nn.Linear) else None
    keeps = []
    for layer in range(L):
        w_ih, w_hh = sd[f"weight_ih_l{layer}"], sd[f"weight_hh_l{layer}"]
        rows = torch.stack([torch.cat([w_ih[g * H + j] for g in range(gates)] + [w_hh[g * H + j] for g in range(gates)]) for j in range(H)])
        score = rows.pow(2).sum(1) + w_hh.pow(2).sum(0)  # incoming rows (all gates) + recurrent column
        reader = sd[f"weight_ih_l{layer + 1}"] if layer + 1 < L else head_w
        if reader is not None:
            score = score + reader.pow(2).sum(0)
        keeps.append(torch.sort(score.topk(keep_n).indices).values)
    new = RNNModel(dataclasses.replace(c, d_hidden=keep_n))
    nsd = {}
    for layer, keep in enumerate(keeps):
        gate_rows = torch.cat([g * H + keep for g in range(gates)])
        prev = keeps[layer - 1] if layer else None
        w_ih = sd[f"weight_ih_l{layer}"][gate_rows]
        nsd[f"weight_ih_l{layer}"] = w_ih if prev is None else w_ih[:, prev]
        nsd[f"weight_hh_l{layer}"] = sd[f"weight_hh_l{layer}"][gate_rows][:, keep]
        for b in ("bias_ih", "bias_hh"):
            if f"{b}_l{layer}" in sd:
                nsd[f"{b}_l{layer}"] = sd[f"{b}_l{layer}"][gate_rows]
    new.rnn.load_state_dict(nsd)
    if head_w is not None:
        with torch.no_grad():
            new.head.weight.copy_(head_w[:, keeps[-1]])
            new.head.bias.copy_(model.head.bias.detach())
    model.rnn, model.head, model.config = new.rnn, new.head, new.config


def _register() -> None:
    from edgeseq.models.rnn import RNNModel

    REWRITERS.register(RNNModel, _rnn_units)


_register()
register_method(PruneMethod("structured", StructuredConfig, "whole hidden units removed: physically smaller matrices, faster on every runtime", _structured))

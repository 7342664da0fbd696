"""Pruning method ``structured``: remove whole hidden units, rewriting the model into physically smaller matrices.

A unit's importance is the L2 norm of every weight that touches it: its rows in the input and hidden matrices
(all gates), its column in the hidden matrix, and its column in whatever reads the layer (the next layer's input
matrix or the head). Each layer keeps its ``(1 - amount) * H`` most important units (the same count per layer:
the family's config has one width). Rewriters are registered per model type: the ``rnn`` family (LSTM, GRU,
Elman: hidden units), ``aaren`` (attention heads and feed-forward units) and ``mamba`` (mamba1: inner channels; mamba2:
heads, evenly per group) and ``continual`` (the temporal CNN's convolution channels). Other models (a
continual network converted from plain modules, say) are refused by name.
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


def _keep(score: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sort(score.topk(n).indices).values


def _aaren_heads_ff(model, amount: float) -> None:
    """Aaren: remove attention heads and feed-forward units. A head's importance is the squared norm of its query,
    its key and value rows and its columns in the output projection; an FF unit's, its row in the first FF matrix
    (and bias) and its column in the second. The residual width d_model stays: LayerNorm and the residual stream
    see every channel. Each layer keeps the same counts (the config has one n_heads and one d_ff)."""
    from edgeseq.models.aaren import AarenModel

    c = model.config
    dh = c.d_head
    keep_h, keep_f = max(1, round(c.n_heads * (1 - amount))), max(1, round(c.d_ff * (1 - amount)))
    new = AarenModel(dataclasses.replace(c, n_heads=keep_h, head_width=dh, d_ff=keep_f))
    with torch.no_grad():
        for old_b, new_b in zip(model.blocks, new.blocks):
            a, f0, f2 = old_b.attn, old_b.ff[0], old_b.ff[2]
            per_head = lambda w: w.reshape(c.n_heads, dh, -1).pow(2).sum((1, 2))  # noqa: E731 - rows grouped by head
            score = (a.query.pow(2).sum(1) + per_head(a.key.weight) + a.key.bias.reshape(c.n_heads, dh).pow(2).sum(1)
                     + per_head(a.value.weight) + a.value.bias.reshape(c.n_heads, dh).pow(2).sum(1)
                     + per_head(a.out.weight.t()))
            heads = _keep(score, keep_h)
            rows = (heads[:, None] * dh + torch.arange(dh)).reshape(-1)  # the kept heads' channels
            na = new_b.attn
            na.query.copy_(a.query[heads])
            for lin in ("key", "value"):
                getattr(na, lin).weight.copy_(getattr(a, lin).weight[rows])
                getattr(na, lin).bias.copy_(getattr(a, lin).bias[rows])
            na.out.weight.copy_(a.out.weight[:, rows])
            na.out.bias.copy_(a.out.bias)
            units = _keep(f0.weight.pow(2).sum(1) + f0.bias.pow(2) + f2.weight.pow(2).sum(0), keep_f)
            new_b.ff[0].weight.copy_(f0.weight[units])
            new_b.ff[0].bias.copy_(f0.bias[units])
            new_b.ff[2].weight.copy_(f2.weight[:, units])
            new_b.ff[2].bias.copy_(f2.bias)
            new_b.norm1.load_state_dict(old_b.norm1.state_dict())
            new_b.norm2.load_state_dict(old_b.norm2.state_dict())
    model.blocks, model.config = new.blocks, new.config


def _copy_mixer_io(old_layer, new_layer, in_rows, conv_ch, out_cols) -> None:
    """What every Mamba mixer variant has, copied into the smaller layer: the kept in_proj rows, depthwise
    convolution channels and out_proj columns (biases where present), and the residual block's RMSNorm whole."""
    a, b = old_layer.mixer, new_layer.mixer
    b.in_proj.weight.copy_(a.in_proj.weight[in_rows])
    if a.in_proj.bias is not None:
        b.in_proj.bias.copy_(a.in_proj.bias[in_rows])
    b.conv1d.weight.copy_(a.conv1d.weight[conv_ch])
    if a.conv1d.bias is not None:
        b.conv1d.bias.copy_(a.conv1d.bias[conv_ch])
    b.out_proj.weight.copy_(a.out_proj.weight[:, out_cols])
    if a.out_proj.bias is not None:
        b.out_proj.bias.copy_(a.out_proj.bias)
    new_layer.norm.load_state_dict(old_layer.norm.state_dict())


def _mamba1_channels(model, amount: float) -> None:
    """Mamba-1: remove inner channels. A channel's importance is the squared norm of its x and z rows in in_proj,
    its convolution taps, its column in x_proj (dt, B and C read every channel), its dt_proj row, A and D entries,
    and its column in out_proj. The residual width stays; the config records the pruned width as ``inner_width``.
    """
    from edgeseq.models.mamba import MambaModel

    c = model.config
    E = c.d_inner
    keep_n = max(1, round(E * (1 - amount)))
    new = MambaModel(dataclasses.replace(c, inner_width=keep_n))
    with torch.no_grad():
        for old_l, new_l in zip(model.layers, new.layers):
            a, b = old_l.mixer, new_l.mixer
            w = a.in_proj.weight
            score = (w[:E].pow(2).sum(1) + w[E:].pow(2).sum(1) + a.conv1d.weight.pow(2).sum((1, 2))
                     + a.x_proj.weight.pow(2).sum(0) + a.dt_proj.weight.pow(2).sum(1) + a.A_log.pow(2).sum(1)
                     + a.D.pow(2) + a.out_proj.weight.pow(2).sum(0))
            keep = _keep(score, keep_n)
            _copy_mixer_io(old_l, new_l, in_rows=torch.cat([keep, E + keep]), conv_ch=keep, out_cols=keep)  # x, z
            b.x_proj.weight.copy_(a.x_proj.weight[:, keep])
            b.dt_proj.weight.copy_(a.dt_proj.weight[keep])
            b.dt_proj.bias.copy_(a.dt_proj.bias[keep])
            b.A_log.copy_(a.A_log[keep])
            b.D.copy_(a.D[keep])
    model.layers, model.config = new.layers, new.config


def _mamba2_heads(model, amount: float) -> None:
    """Mamba-2: remove whole heads (a head's P channels share dt, A and D), the same number from every group, so
    the groups stay equal slices (B, C and the gated norm are per group) and n_groups stays. A head's importance is
    the squared norm of its channels' z and x rows in in_proj, their convolution taps, their gated-norm gains and
    out_proj columns, plus its dt row, dt bias, A and D. B and C are kept whole. The gated RMSNorm then averages over
    the kept channels of each group. The config records the pruned width as ``inner_width`` (heads = width / P)."""
    from edgeseq.models.mamba import MambaModel

    c = model.config
    E, H, G, P, N = c.d_inner, c.n_heads, c.n_groups, c.head_dim, c.d_state
    per_group = H // G
    if per_group < 2:
        raise ConfigError(f"structured pruning of mamba2 removes heads within groups; this model has {H} heads in "
                          f"{G} groups (one per group): nothing to remove")
    keep_k = max(1, round(per_group * (1 - amount)))
    new = MambaModel(dataclasses.replace(c, inner_width=G * keep_k * P))
    conv_dim = c.conv_dim
    with torch.no_grad():
        for old_l, new_l in zip(model.layers, new.layers):
            a, b = old_l.mixer, new_l.mixer
            w = a.in_proj.weight
            by_head = lambda t: t.reshape(H, -1).pow(2).sum(1)  # noqa: E731 - channel-major rows/values per head
            score = (by_head(w[:E]) + by_head(w[E: 2 * E]) + w[E + conv_dim:].pow(2).sum(1)
                     + by_head(a.conv1d.weight[:E]) + by_head(a.out_proj.weight.t()) + by_head(a.norm.weight)
                     + a.dt_bias.pow(2) + a.A_log.pow(2) + a.D.pow(2))
            if a.conv1d.bias is not None:
                score = score + by_head(a.conv1d.bias[:E])
            heads = torch.cat([g * per_group + _keep(score[g * per_group: (g + 1) * per_group], keep_k)
                               for g in range(G)])
            ch = (heads[:, None] * P + torch.arange(P)).reshape(-1)  # the kept heads' channels
            bc = E + torch.arange(2 * G * N)  # B and C channels of the convolution input, all kept
            _copy_mixer_io(old_l, new_l, in_rows=torch.cat([ch, E + ch, E + bc, E + conv_dim + heads]),  # z, x, B C, dt
                           conv_ch=torch.cat([ch, bc]), out_cols=ch)
            b.dt_bias.copy_(a.dt_bias[heads])
            b.A_log.copy_(a.A_log[heads])
            b.D.copy_(a.D[heads])
            b.norm.weight.copy_(a.norm.weight[ch])
    model.layers, model.config = new.layers, new.config


def _continual_channels(model, amount: float) -> None:
    """Continual temporal CNN (the family's ``TemporalCNN``): remove output channels of every convolution level. A
    residual level adds its input to its output, so the levels joined by residuals share one kept set (chosen by
    their summed importance); a channel's importance is the squared norm of its output row (and bias) in every
    level of its set and its input column in every convolution that reads it (the next level or the head).
    Pooling is per channel. The config's ``channels`` records the pruned widths; a level must stay residual exactly
    when it was, so a non-residual level whose pruned width would equal its input's keeps one channel more."""
    from edgeseq.models.continual import Residual, TemporalCNN

    c = model.config
    n = len(c.channels)
    residual = [c.residual and c.channels[i] == ([c.d_in] + list(c.channels))[i] for i in range(n)]
    levels = list(model.net)[:n]
    conv = lambda level: (level.body if isinstance(level, Residual) else level)[0][1]  # noqa: E731 - (pad, conv), ReLU
    readers = [conv(levels[i + 1]) for i in range(n - 1)] + [model.net[-1]]  # what reads level i's output
    group = []
    for i in range(n):
        group.append(group[-1] if (i and residual[i]) else len(set(group)))
    members = {g: [i for i in range(n) if group[i] == g] for g in set(group)}
    keep_n = {g: max(1, round(c.channels[m[0]] * (1 - amount))) for g, m in members.items()}
    for _ in range(n + 1):  # keep residual levels residual, and the others not
        widths = [c.d_in] + [keep_n[group[i]] for i in range(n)]
        clash = [i for i in range(n) if not residual[i] and c.residual and widths[i + 1] == widths[i]]
        if not clash:
            break
        g = group[clash[0]]
        keep_n[g] += 1 if keep_n[g] < c.channels[clash[0]] else -1
    with torch.no_grad():
        kept = {}
        for g, m in members.items():
            score = sum(conv(levels[i]).weight.pow(2).sum((1, 2)) + conv(levels[i]).bias.pow(2)
                        + readers[i].weight.pow(2).sum((0, 2)) for i in m)
            kept[g] = _keep(score, keep_n[g])
        new = TemporalCNN(dataclasses.replace(c, channels=tuple(keep_n[group[i]] for i in range(n))))
        new_levels = list(new.net)[:n]
        prev = torch.arange(c.d_in)
        for i in range(n):
            out = kept[group[i]]
            a, b = conv(levels[i]), conv(new_levels[i])
            b.weight.copy_(a.weight[out][:, prev])
            b.bias.copy_(a.bias[out])
            prev = out
        new.net[-1].weight.copy_(model.net[-1].weight[:, prev])
        new.net[-1].bias.copy_(model.net[-1].bias)
    model.net, model.config = new.net, new.config


MAMBA_REWRITERS = {"mamba1": _mamba1_channels, "mamba2": _mamba2_heads}


def _mamba(model, amount: float) -> None:
    MAMBA_REWRITERS[model.config.variant](model, amount)


def _register() -> None:
    from edgeseq.models.aaren import AarenModel
    from edgeseq.models.continual import TemporalCNN
    from edgeseq.models.mamba import MambaModel
    from edgeseq.models.rnn import RNNModel

    REWRITERS.register(RNNModel, _rnn_units)
    REWRITERS.register(AarenModel, _aaren_heads_ff)
    REWRITERS.register(MambaModel, _mamba)
    REWRITERS.register(TemporalCNN, _continual_channels)


_register()
register_method(PruneMethod("structured", StructuredConfig, "whole hidden units removed: physically smaller matrices, faster on every runtime", _structured))

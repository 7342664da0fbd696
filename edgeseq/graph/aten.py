"""Stream operations for the ATen-level graph of a ``torch.export`` program (a user's ``.pt2`` archive).

A program loaded with ``torch.export.load`` is an fx graph of ``torch.ops.aten`` calls rather than modules and
``torch.nn.functional`` calls: ``aten.conv1d`` instead of ``nn.Conv1d``, ``aten.slice.Tensor`` instead of
``x[:, :-2]``, ``aten.gru.input`` with its weights as a list instead of ``nn.GRU``. Each registration here reads
such a call's arguments and hands them to the builder of the same operation in :mod:`edgeseq.graph.ops`: one
rewrite per operation, whichever way the graph spells it. Operations that act within a frame need nothing: the
converter runs them as they are, after checking that they read no other frame.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseq.graph.ops import (
    Build, BuildCtx, ConvSpec, Identity, _arange, _conv, _conv_function, _fpad, _pad_timing, _running, _time_pad, _time_slice,
    leaf_module, refuse, register_stream_op,
)

aten = torch.ops.aten


def _slice(ctx: BuildCtx) -> Build | None:
    """``aten.slice.Tensor(x, dim, start, end, step)``: a shift of the timing where ``dim`` is time."""
    node = ctx.node
    src = node.args[0]
    if src.meta.get("time") is None:
        return None
    dim = ctx.value(ctx.arg(1, "dim", 0))
    if dim % ctx.env[src].dim() != src.meta["time"]:
        if ctx.timing(src).pad is None:
            return None  # a slice inside the frame: run as is
        # x[:, :-1] on a padded x slices the batch axis whole first: the padding stays pending through it
        return Build(Identity(lambda args, kwargs, _op=node.target: _op(*args, **kwargs)), ctx.timing(src))
    bounds = [ctx.arg(i, name, default) for i, (name, default) in enumerate((("start", None), ("end", None), ("step", 1)), 2)]
    e_a = slice(*(ctx.value(b) for b in bounds))
    e_b = slice(*(ctx.value_longer(b) for b in bounds))
    return _time_slice(ctx, src, e_a, e_b, lambda args, kwargs: args[0])


def _constant_pad(ctx: BuildCtx) -> Build | None:
    """``aten.constant_pad_nd(x, pad, value)``: F.pad's constant mode."""
    node = ctx.node
    src = node.all_input_nodes[0]
    pad = ctx.value(ctx.arg(1, "pad"))
    value = ctx.value(ctx.arg(2, "value", 0.0)) or 0.0
    left, right = _time_pad(node, tuple(pad), src.meta["time"], ctx.env[src].dim())
    if not (left or right):
        return None
    return _pad_timing(ctx, left, right, float(value))


def _convolution(ctx: BuildCtx) -> Build | None:
    """``aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)``."""
    node = ctx.node
    if ctx.value(ctx.arg(6, "transposed", False)):
        src = node.all_input_nodes[0]
        if src.meta.get("time") in (None, 0):
            return None
        raise refuse(node, "is a transposed convolution along time: it raises the frame rate, which a step that "
                           "emits one output per input frame cannot do")
    weight, bias = ctx.arg(1, "weight"), ctx.arg(2, "bias")
    spec = ConvSpec(ctx.value(weight).detach(), None if bias is None else ctx.value(bias).detach(),
                    tuple(ctx.value(ctx.arg(3, "stride"))), tuple(ctx.value(ctx.arg(4, "padding"))),
                    tuple(ctx.value(ctx.arg(5, "dilation"))), int(ctx.value(ctx.arg(8, "groups", 1))))
    return _conv(ctx, spec)


def _zeros(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_zeros(v) for v in value)
    return isinstance(value, torch.Tensor) and not bool(value.any())


def _recurrent(kind: str):
    """``aten.gru.input`` / ``aten.lstm.input`` / ``aten.rnn_tanh.input`` / ``aten.rnn_relu.input``: the layer
    rebuilt as the ``nn`` module it was (weights from the call's list), then the registered converter's step."""

    def build(ctx: BuildCtx) -> Build:
        node = ctx.node
        src, hx, params = node.args[0], node.args[1], node.args[2]
        has_biases, layers, _dropout, _train, bidirectional, batch_first = (ctx.value(a) for a in node.args[3:9])
        if not _zeros(ctx.value(hx)):
            raise refuse(node, "starts from a non-zero initial state; the step starts from zeros: export the model "
                               "called with the sequence alone")
        weights = [ctx.value(p).detach() for p in params]
        per_layer = len(weights) // (layers * (2 if bidirectional else 1))
        w_ih, w_hh = weights[0], weights[1]
        gates = {"gru": 3, "lstm": 4}.get(kind, 1)
        hidden = w_ih.shape[0] // gates
        proj = weights[per_layer - 1].shape[0] if kind == "lstm" and per_layer in (3, 5) else 0
        common = dict(input_size=w_ih.shape[1], hidden_size=hidden, num_layers=layers, bias=bool(has_biases),
                      batch_first=bool(batch_first), bidirectional=bool(bidirectional))
        if kind == "lstm":
            module = nn.LSTM(**common, proj_size=proj)
        elif kind == "gru":
            module = nn.GRU(**common)
        else:
            module = nn.RNN(**common, nonlinearity="tanh" if kind == "rnn_tanh" else "relu")
        if len(module._flat_weights_names) != len(weights) or w_hh.shape[1] != (proj or hidden):
            raise refuse(node, f"has {len(weights)} weights that do not form an {type(module).__name__}")
        with torch.no_grad():
            for name, w in zip(module._flat_weights_names, weights):
                getattr(module, name).copy_(w)
        return leaf_module(ctx, module.eval(), src)

    return build


for _op, _build in (
    (aten.slice.Tensor, _slice),
    (aten.pad.default, _fpad),
    (aten.constant_pad_nd.default, _constant_pad),
    (aten.convolution.default, _convolution),
    (aten.conv1d.default, _conv_function(1)), (aten.conv1d.padding, _conv_function(1)),
    (aten.conv2d.default, _conv_function(2)), (aten.conv2d.padding, _conv_function(2)),
    (aten.conv3d.default, _conv_function(3)), (aten.conv3d.padding, _conv_function(3)),
    (aten.arange.default, _arange), (aten.arange.start, _arange), (aten.arange.start_step, _arange),
    (aten.gru.input, _recurrent("gru")), (aten.lstm.input, _recurrent("lstm")),
    (aten.rnn_tanh.input, _recurrent("rnn_tanh")), (aten.rnn_relu.input, _recurrent("rnn_relu")),
):
    register_stream_op(_op, _build)
for _kind in ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"):
    register_stream_op(getattr(aten, _kind).default, _running(_kind))

# ATen's shape ops, which may take a size read from the time axis (1 in the step): see graph.step.SHAPE_OPS
SHAPE_OPS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default,
             aten.unflatten.int, aten.flatten.using_ints, aten.new_zeros.default, aten.new_ones.default,
             aten.new_empty.default, aten.sym_size.int}

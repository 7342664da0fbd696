"""Sub-modules with a registered converter (``nn.GRU`` / ``LSTM`` / ``RNN``, an edgeseq model, a Hugging Face
Mamba block), run as their converter's step."""

from __future__ import annotations

from torch import fx, nn

from edgeseq.graph.ops.base import (
    Build, BuildCtx, Flat, GraphOp, Pair, Timing, _frame, _timed, full, held, no_pending_pad, refuse,
)


class LeafStepOp(GraphOp):
    """A sub-module with a registered converter (an ``nn.GRU``, an edgeseq family model, a Hugging Face Mamba
    block), run as its converter's step on the frame. Before its input's first real frame its state is held."""

    def __init__(self, step, in_axis: int, out_axis: int, first: int, returns_tuple: bool):
        super().__init__()
        self.sub, self.in_axis, self.out_axis, self.first, self.returns_tuple = step, in_axis, out_axis, first, returns_tuple

    def states(self):
        return self.sub.state_spec.tensors

    def step(self, args, kwargs, state, t):
        x = args[0]
        x = x.t if isinstance(x, Flat) and self.in_axis >= 1 else _frame(full(x), self.in_axis)  # (B, d_in)
        y, new = self.sub.step(x, tuple(state))
        new = held(new, state, t, self.first)
        if self.out_axis >= 1:  # (B, H) is the output without its time axis: no reshape unless a consumer needs it
            rest = tuple(y.shape[1:])
            y = Flat(y, (*rest[:self.out_axis - 1], 1, *rest[self.out_axis - 1:]))
        else:
            y = _timed(y, self.out_axis)
        return (Pair(y, None) if self.returns_tuple else y), new


# ----------------------------------------------------------------------------------------------- sub-models
def _leaf(ctx: BuildCtx) -> Build:
    """A module with a registered converter (nn.LSTM / GRU / RNN, an edgeseq model, a Hugging Face Mamba)."""
    node = ctx.node
    if len(node.args) > 1 or node.kwargs:
        raise refuse(node, "is given an initial state or extra arguments; the step starts from the converter's own "
                           "initial state: call it with the sequence alone")
    return leaf_module(ctx, ctx.gm.get_submodule(node.target), node.args[0] if node.args else None)


def leaf_module(ctx: BuildCtx, module: nn.Module, src) -> Build:
    """``module`` (with a registered converter) applied to ``src`` at ``ctx.node``, run as its converter's step
    (the registered converter itself: the proof of the whole model covers the sub-step)."""
    from edgeseq.converters import find_converter

    def convert(m: nn.Module):
        return find_converter(m).convert(m).eval()

    node = ctx.node
    no_pending_pad(ctx)
    if not isinstance(src, fx.Node) or src.meta.get("time") is None:
        raise refuse(node, "takes no time-carrying input")
    rnn = isinstance(module, nn.RNNBase)
    if rnn and module.bidirectional:
        raise refuse(node, "is bidirectional: its backward direction reads the sequence from its end, which a stream "
                           "never reaches (use bidirectional=False)")
    in_axis = src.meta["time"]
    expect = (1 if module.batch_first else 0) if rnn else 1
    if in_axis != expect:
        raise refuse(node, f"reads time on axis {expect}, but its input has time on axis {in_axis}")
    x = ctx.env[src]
    if x.dim() != 3:
        raise refuse(node, f"takes (batch, time, features) frames; its input has shape {tuple(x.shape)}")
    if rnn:
        from edgeseq.models.rnn import RNNModel

        sub = convert(RNNModel.from_module(module))
    else:
        sub = convert(module)
    out = ctx.env[node]
    out_axis = expect  # the output keeps the input's layout: (B, T, H), or (T, B, H) for batch_first=False
    t = ctx.timing(src)
    d = sub.state_spec.delay
    r = t.rate  # a sub-step behind strides takes a frame every r steps (its state is held in between)
    span = None if (t.span is None or sub.state_spec.receptive_field is None) else t.span + (sub.state_spec.receptive_field - 1) * r
    if sub.state_spec.output_stride != 1:
        raise refuse(node, "has temporal strides of its own inside a converted sub-model; the graph converter "
                           "streams strides of the model's own layers")
    return Build(LeafStepOp(sub, in_axis, out_axis, t.first, isinstance(out, tuple)),
                 Timing(t.delay + d * r, t.first + d * r, span, rate=r),
                 ({0}, "its final state (h_n) is used: it is the state after the whole sequence, which a stream never "
                       "has; use the per-frame output (the first element)"))



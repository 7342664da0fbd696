"""Running reductions along time (``cumsum``, ``cumprod``, ``cummax`` / ``cummin``, ``logcumsumexp``) and
``torch.arange`` over the length (a step counter)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import fx

from edgeseq.graph.ops.base import (
    Build, BuildCtx, GraphOp, Pair, Timing, held, no_pending_pad, refuse, register_stream_op,
)
from edgeseq.step import StateTensor
from edgeseq.stream import LOWEST


def _logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) + exp(b)) from the larger of the two (stable, like Aaren's running (m, u, w)); written with
    maximum, exp and log, which XNNPACK delegates (``torch.logaddexp`` lowers to a log1p it does not)."""
    m = torch.maximum(a, b)
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m))


RUNNING = {  # kind -> (combine(total, frame), the total before the first frame)
    "cumsum": (torch.add, 0.0),
    "cumprod": (torch.mul, 1.0),
    "cummax": (torch.maximum, LOWEST),  # float32's lowest finite value for -inf (see edgeseq.stream.LOWEST)
    "cummin": (torch.minimum, -LOWEST),
    "logcumsumexp": (_logaddexp, LOWEST),  # a running log-sum-exp; from float32's lowest, exp() of it is 0
}


class RunningOp(GraphOp):
    """A running reduction along time (``cumsum``, ``cumprod``, ``cummax``, ``cummin``, ``logcumsumexp``): the
    running total is the state. ``cummax``/``cummin`` give a (values, indices) pair; the indices (frame numbers) are refused when read."""

    def __init__(self, kind: str, shape: tuple[int, ...], first: int):
        super().__init__()
        self.kind, self.shape, self.first = kind, shape, first

    def states(self):
        return (StateTensor("total", self.shape, fill=RUNNING[self.kind][1]),)

    def step(self, args, kwargs, state, t):
        total = RUNNING[self.kind][0](state[0], args[0])
        (total,) = held((total,), state, t, self.first)
        return (Pair(total, None) if self.kind in ("cummax", "cummin") else total), (total,)


class CounterOp(GraphOp):
    """``torch.arange`` over the sequence length (``torch.arange(1, T + 1)``, the count of a running mean
    ``x.cumsum(1) / torch.arange(1, T + 1)``): at step n it is ``start + n * step``; the state counts the steps.
    A float32 count is exact up to 2**24 frames (46 hours at 100 frames/s)."""

    def __init__(self, start: float, step: float, dtype: torch.dtype):
        super().__init__()
        self.start, self.stride, self.dtype = float(start), float(step), dtype

    def states(self):
        return (StateTensor("count", (1,), fill=self.start),)

    def step(self, args, kwargs, state, t):
        now = state[0]
        value = now[:1].reshape(1)  # every stream of a batch started together: one count
        return (value if self.dtype.is_floating_point else value.to(self.dtype)), (now + self.stride,)


# ----------------------------------------------------------------------------------------------- running ops
def _running(kind: str):
    def build(ctx: BuildCtx) -> Build:
        node = ctx.node
        no_pending_pad(ctx)
        src = node.args[0]
        dim = ctx.value(ctx.arg(1, "dim"))
        x = ctx.env[src]
        if dim is None or dim % x.dim() != src.meta["time"]:
            return None
        if node.kwargs.get("dtype") is not None:
            raise refuse(node, "with a dtype= argument is not supported")
        t = ctx.timing(src)
        shape = tuple(s if i != src.meta["time"] else 1 for i, s in enumerate(x.shape))[1:]
        pair = ({0, "values"}, "its indices are used: they count frames from the start of the sequence; use the "
                               "values") if kind in ("cummax", "cummin") else None
        return Build(RunningOp(kind, shape, t.first), replace(t, span=None), pair)

    return build


for _kind in RUNNING:
    register_stream_op(getattr(torch, _kind), _running(_kind))
    register_stream_op(_kind, _running(_kind))


def _arange(ctx: BuildCtx) -> Build | None:
    node = ctx.node
    ints = [a for a in node.args if isinstance(a, fx.Node)]
    if node.meta.get("time") is None or not ints:
        return None
    args = [ctx.value(a) for a in node.args]
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
    starts_at = node.args[0] if len(node.args) > 1 else None
    if isinstance(starts_at, fx.Node) and starts_at.meta.get("int_of_length"):
        raise refuse(node, "counts from a start that depends on the sequence length: a stream does not know its end")
    if ctx.env[node].dim() != 1:
        raise refuse(node, "makes a tensor along time from the sequence length that the converter cannot follow")
    return Build(CounterOp(start, step, ctx.env[node].dtype), Timing())


register_stream_op(torch.arange, _arange)

"""What every kind of stream operation shares (the kinds: :mod:`edgeseq.graph.ops`).

Every value that carries time has a :class:`Timing` in the stream: at step n it holds the model's frame
``(n - delay) / rate`` when that is a whole number (a value behind a stride-k convolution, pool or ``x[:, ::k]`` is
fresh only every ``rate``-th step, and holds what it held in between); its first real frame arrives at step
``first``; a pending left ``pad`` (frames of a constant that precede the real ones) waits for the convolution that
reads it, whose ring buffer starts filled with it. The
builders are looked up by module type (``call_module``), by function (``call_function``) or by method name
(``call_method``) in :data:`STREAM_OPS`; :func:`register_stream_op` adds one. The buffers are the stream
vocabulary of :mod:`edgeseq.stream` (:class:`~edgeseq.stream.ConvStep`, :class:`~edgeseq.stream.DelayLine`),
and a module with a registered converter runs as that converter's step.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from edgeseq.errors import UnsupportedModuleError
from edgeseq.graph.trace import describe, where
from edgeseq.registry import Registry
from edgeseq.step import StateTensor
from edgeseq.stream.base import fresh_mask


class StreamRefusal(UnsupportedModuleError):
    """A model the graph converter cannot stream: names the operation, its source line and why."""


def refuse(node: fx.Node, why: str) -> StreamRefusal:
    return StreamRefusal(f"{describe(node)} at {where(node)}: {why}")


@dataclass(frozen=True)
class Timing:
    delay: int = 0  # the value at step n is the model's frame n - delay
    first: int = 0  # the step at which its first real frame arrives
    span: int | None = 0  # input frames of history one frame depends on (None: unbounded)
    pad: tuple[int, float] | None = None  # pending left padding (frames, value) for the next convolution
    rate: int = 1  # input frames per frame of this value (the product of the strides before it)


def align(timings: list[Timing]) -> Timing:
    """The timing of a per-frame op's output from its inputs' (aligned to the latest delay; one rate, checked by
    the plan)."""
    delay = max(t.delay for t in timings)
    spans = [None if t.span is None else t.span + delay - t.delay for t in timings]  # a delayed input reaches back
    return Timing(delay, max(t.first for t in timings), None if any(s is None for s in spans) else max(spans),
                  rate=timings[0].rate)


def on_phase(first: int, delay: int, rate: int) -> int:
    """The first step at or after ``first`` at which a value of this delay and rate is fresh."""
    return first if rate == 1 or first <= delay else delay + -(-(first - delay) // rate) * rate


def windowed(t: Timing, span: int, own: int, stride: int) -> Timing:
    """The timing after a window over time (a convolution or a pool) on an input of timing ``t``: ``span`` frames
    of history, ``own`` of them its own left padding, one output every ``stride`` of its input frames (which come
    every ``t.rate`` steps)."""
    r = t.rate
    delay = t.delay + (span - own) * r
    return Timing(delay, on_phase(max(delay, t.first), delay, r * stride),
                  None if t.span is None else t.span + span * r, rate=r * stride)


# what a stream op with a pair of outputs gives in the step: the per-frame value first (an RNN's sequence output,
# a running max's values), the second (h_n, the indices) never read (the plan refuses it)
Pair = namedtuple("Pair", "values indices")


class GraphOp(nn.Module):
    """A stream operation: ``step(args, kwargs, state, t) -> (value, new state)``; ``states()`` its tensors.
    ``hold``: (first, rate) of its input where that comes every ``rate``-th step (set by the plan): the step keeps
    the op's state where the input is not fresh (:func:`held`), so that no op needs to know about rates."""

    hold: tuple[int, int] | None = None

    def states(self) -> tuple[StateTensor, ...]:
        return ()

    def step(self, args: tuple, kwargs: dict, state: tuple, t: torch.Tensor | None) -> tuple[Any, tuple]:
        raise NotImplementedError


class Identity(GraphOp):
    """Padding or a slice along time: nothing to do in the stream (the timing records it)."""

    def __init__(self, pick: Callable[[tuple, dict], Any]):
        super().__init__()
        self.pick = pick

    def step(self, args, kwargs, state, t):
        return self.pick(args, kwargs), ()


class Flat:
    """A one-frame value held without its length-1 time axis, ``t`` (B, *rest), with its shape in the model's
    graph ``full`` (batch excluded, time as 1). Operations that act per feature (elementwise math, ``Linear`` and
    norms on a last axis that is not time, recurrent layers) take ``t`` as it is; any other gets :meth:`value`, a
    reshape, made once. It spares the exported program the reshapes into and out of each recurrent layer and head
    (a user's LSTM + Linear class: 4 view ops per step fewer than with the time axis kept)."""

    __slots__ = ("t", "full", "_value")

    def __init__(self, t: torch.Tensor, full: tuple[int, ...]):
        self.t, self.full, self._value = t, full, None

    def value(self) -> torch.Tensor:
        if self._value is None:
            self._value = self.t.reshape(self.t.shape[0], *self.full)
        return self._value


def held(new, old, t, first: int, rate: int = 1) -> tuple:
    """The new state tensors, or the old ones where the input is not fresh: before its first real frame arrives
    (step ``first``, frame counter ``t``), and between its frames when it comes every ``rate``-th step. Arithmetic
    with the 0/1 :func:`~edgeseq.stream.fresh_mask`, which XNNPACK delegates."""
    if (not first and rate == 1) or t is None:
        return tuple(new)
    fresh = fresh_mask(t, first, rate)
    return tuple(n * fresh.reshape(-1, *(1,) * (n.dim() - 1)) + o * (1.0 - fresh.reshape(-1, *(1,) * (o.dim() - 1)))
                 for n, o in zip(new, old))


def full(v):
    """``v`` with its time axis (a Flat's reshape), anything else as it is."""
    return v.value() if isinstance(v, Flat) else v


def _frame(v: torch.Tensor, axis: int) -> torch.Tensor:
    """A value with its size-1 time axis removed (a reshape: XNNPACK delegates it, not squeeze)."""
    return v.reshape(*v.shape[:axis], *v.shape[axis + 1:])


def _timed(v: torch.Tensor, axis: int) -> torch.Tensor:
    """A frame with a size-1 time axis put back at ``axis`` (a reshape, not unsqueeze)."""
    return v.reshape(*v.shape[:axis], 1, *v.shape[axis:])


@dataclass
class Build:
    """What a builder returns: the op (None: run the node as is), the output's timing."""

    op: GraphOp | None
    timing: Timing
    # for an op with a pair of outputs: the keys of the element that streams, and why the other cannot
    element: tuple[set, str] | None = None


@dataclass
class BuildCtx:
    gm: fx.GraphModule
    node: fx.Node
    env: dict  # values of the example run
    timings: dict  # fx.Node -> Timing, of the inputs

    def arg(self, i: int, name: str | None = None, default=None):
        node = self.node
        if i < len(node.args):
            return node.args[i]
        return node.kwargs.get(name, default) if name else default

    def value(self, a):
        return fx.node.map_arg(a, lambda n: self.env[n])

    def value_longer(self, a):
        return fx.node.map_arg(a, lambda n: n.meta["value_longer"] if n.meta.get("value_longer") is not None else self.env[n])

    def timing(self, n: fx.Node) -> Timing:
        return self.timings[n]


STREAM_OPS: Registry[Callable[[BuildCtx], Build]] = Registry("stream operation")


def register_stream_op(key, build: Callable[[BuildCtx], Build]) -> None:
    """Teach the graph converter a time-mixing operation: ``key`` is a module type, a function or a method name."""
    STREAM_OPS.register(key, build)


def find_builder(gm: fx.GraphModule, node: fx.Node) -> Callable[[BuildCtx], Build] | None:
    if node.op == "call_module":
        kind = type(gm.get_submodule(node.target))
        for cls in kind.__mro__:
            if cls in STREAM_OPS:
                # a subclass with a forward of its own does something else (pads first, chomps after): not this op
                return STREAM_OPS.get(cls) if kind.forward is cls.forward else None
        from edgeseq.graph.trace import has_converter

        from edgeseq.graph.ops.leaf import _leaf

        return _leaf if has_converter(gm.get_submodule(node.target)) else None
    if node.op in ("call_function", "call_method") and node.target in STREAM_OPS:
        return STREAM_OPS.get(node.target)
    return None


def no_pending_pad(ctx: BuildCtx) -> None:
    for a in ctx.node.all_input_nodes:
        if a in ctx.timings and ctx.timings[a].pad is not None:
            raise refuse(ctx.node, "reads a sequence padded along time; padding along time must feed a convolution "
                                   "over time directly (nn.Conv1d), which turns it into the initial ring buffer")



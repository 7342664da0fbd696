"""Stream operations: what each time-mixing operation of a traced graph becomes in the step.

Every value that carries time has a :class:`Timing` in the stream: at step n it holds the model's frame
``n - delay``; its first real frame arrives at step ``first``; a pending left ``pad`` (frames of a constant that
precede the real ones) waits for the convolution that reads it, whose ring buffer starts filled with it. The
builders here are looked up by module type (``call_module``), by function (``call_function``) or by method name
(``call_method``) in :data:`STREAM_OPS`; :func:`register_stream_op` adds one. The buffers are the stream
vocabulary of :mod:`edgeseq.stream` (:class:`~edgeseq.stream.ConvStep`, :class:`~edgeseq.stream.DelayLine`),
and a module with a registered converter runs as that converter's step.
"""

from __future__ import annotations

import math
import operator
from collections import namedtuple
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.graph.trace import describe, where
from edgeseq.stream import LOWEST, ConvStep, Ctx, DelayLine, fresh_mask
from edgeseq.registry import Registry
from edgeseq.step import StateTensor


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


def align(timings: list[Timing]) -> Timing:
    """The timing of a per-frame op's output from its inputs' (aligned to the latest delay)."""
    delay = max(t.delay for t in timings)
    spans = [None if t.span is None else t.span + delay - t.delay for t in timings]  # a delayed input reaches back
    return Timing(delay, max(t.first for t in timings), None if any(s is None for s in spans) else max(spans))


# what a stream op with a pair of outputs gives in the step: the per-frame value first (an RNN's sequence output,
# a running max's values), the second (h_n, the indices) never read (the plan refuses it)
Pair = namedtuple("Pair", "values indices")


class GraphOp(nn.Module):
    """A stream operation: ``step(args, kwargs, state, t) -> (value, new state)``; ``states()`` its tensors."""

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


def full(v):
    """``v`` with its time axis (a Flat's reshape), anything else as it is."""
    return v.value() if isinstance(v, Flat) else v


def _frame(v: torch.Tensor, axis: int) -> torch.Tensor:
    """A value with its size-1 time axis removed (a reshape: XNNPACK delegates it, not squeeze)."""
    return v.reshape(*v.shape[:axis], *v.shape[axis + 1:])


def _timed(v: torch.Tensor, axis: int) -> torch.Tensor:
    """A frame with a size-1 time axis put back at ``axis`` (a reshape, not unsqueeze)."""
    return v.reshape(*v.shape[:axis], 1, *v.shape[axis:])


class ConvOp(GraphOp):
    """A convolution with time on one of its spatial axes: the continual family's ring buffer
    (:class:`~edgeseq.stream.ConvStep`) on the frame in its canonical layout, (C,) for a Conv1d or
    (C, *other spatial axes) with the kernel's time taps first. Moving a length-1 time axis is a reshape."""

    def __init__(self, conv: ConvStep, canon: tuple[int, ...], out_frame: tuple[int, ...]):
        super().__init__()
        self.conv, self.canon, self.out_frame = conv, canon, out_frame

    def states(self):
        return self.conv.states()

    def step(self, args, kwargs, state, t):
        x = args[0]
        if len(self.canon) == 1 and x.dim() == 3:  # a (B, C, 1) frame: the buffer's own layout
            return self.conv.step_timed(x, state, t)
        y, new = self.conv.step(x.reshape(x.shape[0], *self.canon), state, t)
        return y.reshape(y.shape[0], *self.out_frame), new


class DelayOp(GraphOp):
    """A value held back ``delay`` frames, to meet a slower one (a residual around a delayed branch), starting
    full of ``fill``: the frames of a left padding (the previous frame as ``F.pad(x, ...)[:, :-1]``)."""

    def __init__(self, shape: tuple[int, ...], delay: int, fill: float = 0.0):
        super().__init__()
        self.shape, self.fill = shape, fill
        self.line = DelayLine((math.prod(shape),), delay)

    def states(self):
        return tuple(replace(t, fill=self.fill) for t in self.line.states())

    def step(self, args, kwargs, state, t):
        v = args[0]
        y, new = self.line.step(v.reshape(v.shape[0], -1), state, t)
        return y.reshape(v.shape), new


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
        if self.first and t is not None:
            fresh = fresh_mask(t, self.first, 1)
            new = tuple(n * fresh.reshape(-1, *(1,) * (n.dim() - 1)) + o * (1.0 - fresh.reshape(-1, *(1,) * (o.dim() - 1)))
                        for n, o in zip(new, state))
        if self.out_axis >= 1:  # (B, H) is the output without its time axis: no reshape unless a consumer needs it
            rest = tuple(y.shape[1:])
            y = Flat(y, (*rest[:self.out_axis - 1], 1, *rest[self.out_axis - 1:]))
        else:
            y = _timed(y, self.out_axis)
        return (Pair(y, None) if self.returns_tuple else y), new


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
        if self.first and t is not None:
            fresh = fresh_mask(t, self.first, 1).reshape(-1, *(1,) * (total.dim() - 1))
            total = total * fresh + state[0] * (1.0 - fresh)
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

        return _leaf if has_converter(gm.get_submodule(node.target)) else None
    if node.op in ("call_function", "call_method") and node.target in STREAM_OPS:
        return STREAM_OPS.get(node.target)
    return None


def no_pending_pad(ctx: BuildCtx) -> None:
    for a in ctx.node.all_input_nodes:
        if a in ctx.timings and ctx.timings[a].pad is not None:
            raise refuse(ctx.node, "reads a sequence padded along time; padding along time must feed a convolution "
                                   "over time directly (nn.Conv1d), which turns it into the initial ring buffer")


# ----------------------------------------------------------------------------------------------- padding
def _time_pad(node: fx.Node, pad: tuple, axis: int, ndim: int) -> tuple[int, int]:
    k = ndim - 1 - axis  # F.pad lists (left, right) pairs from the last axis backwards
    pairs = [tuple(pad[i:i + 2]) for i in range(0, len(pad), 2)]
    others = [p for i, p in enumerate(pairs) if i != k and any(p)]
    left, right = pairs[k] if k < len(pairs) else (0, 0)
    if others and (left or right):
        raise refuse(node, "pads the time axis and a frame axis in one call; pad them in two calls")
    return int(left), int(right)


def _pad_timing(ctx: BuildCtx, left: int, right: int, value: float, mode: str = "constant") -> Build:
    node, src = ctx.node, ctx.node.all_input_nodes[0]
    if mode != "constant":
        raise refuse(node, f"{mode} padding along time copies frames from later in the sequence (or its end) to its "
                           "start; a stream has not seen them: use constant (zero) padding on the left")
    if left < 0 or right < 0:
        raise refuse(node, "negative padding along time crops frames; slice instead")
    t = ctx.timing(src)
    if t.pad is not None and left and t.pad[1] != value:
        raise refuse(node, f"pads with {value} a sequence already padded with {t.pad[1]}: one value per convolution")
    pending = (t.pad[0] if t.pad else 0) + left
    timing = replace(t, delay=t.delay - left, pad=(pending, float(value)) if pending else None)
    return Build(Identity(lambda args, kwargs: args[0]), timing)


def _fpad(ctx: BuildCtx) -> Build:
    node = ctx.node
    src = node.all_input_nodes[0]
    pad = ctx.value(ctx.arg(1, "pad"))
    mode = ctx.value(ctx.arg(2, "mode", "constant")) or "constant"
    value = ctx.value(ctx.arg(3, "value", 0.0)) or 0.0
    left, right = _time_pad(node, tuple(pad), src.meta["time"], ctx.env[src].dim())
    if not (left or right):
        return None  # padding inside the frame (reflect padding of a per-frame sub-network): run as is
    return _pad_timing(ctx, left, right, float(value), mode)


def _pad_module(ctx: BuildCtx) -> Build:
    m = ctx.gm.get_submodule(ctx.node.target)
    src = ctx.node.all_input_nodes[0]
    left, right = _time_pad(ctx.node, tuple(m.padding), src.meta["time"], ctx.env[src].dim())
    if not (left or right):
        return None
    return _pad_timing(ctx, left, right, float(getattr(m, "value", 0.0)))


register_stream_op(nn.functional.pad, _fpad)
for _cls in (nn.ConstantPad1d, nn.ZeroPad1d, nn.ConstantPad2d, nn.ZeroPad2d, nn.ConstantPad3d):
    register_stream_op(_cls, _pad_module)


# ----------------------------------------------------------------------------------------------- slicing
def _index_entry(index: tuple, ndim: int, axis: int) -> int | None:
    """Which entry of an index tuple addresses input axis ``axis`` (None: the axis is taken whole by omission)."""
    consuming = [i for i, e in enumerate(index) if e is not None and e is not Ellipsis]
    pos = 0
    for i, e in enumerate(index):
        if e is None:
            continue
        if e is Ellipsis:
            pos += ndim - len(consuming)
            if pos > axis:
                return None
            continue
        if pos == axis:
            return i
        pos += 1
    return None


def _getitem(ctx: BuildCtx) -> Build | None:
    node = ctx.node
    src = node.args[0]
    if not isinstance(src, fx.Node) or src.meta.get("time") is None or not isinstance(ctx.env[src], torch.Tensor):
        return None  # indexing a tuple (an RNN's outputs) or a shape: nothing to do with time here
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    entry = _index_entry(index, ctx.env[src].dim(), src.meta["time"])
    if entry is None:
        return None

    def pick(args, kwargs, _entry=entry):
        idx = list(args[1]) if isinstance(args[1], tuple) else [args[1]]
        idx[_entry] = slice(None)
        if all(isinstance(i, slice) and i == slice(None) for i in idx):
            return args[0]  # only the time axis was sliced: nothing to do on one frame (no alias op in the program)
        return args[0][tuple(idx)]

    return _time_slice(ctx, src, ctx.value(index[entry]), ctx.value_longer(index[entry]), pick)


def _time_slice(ctx: BuildCtx, src: fx.Node, e_a, e_b, pick) -> Build:
    """A slice along time, ``e_a`` at the example's length and ``e_b`` one frame longer: a shift of the timing
    (``x[:, 1:]``, the chomp ``x[..., :-k]``), or refused where it is not one."""
    node = ctx.node
    n = src.meta["length"]
    if not isinstance(e_a, slice):
        raise refuse(node, "selects single frames of the sequence (x[:, -1], an index along time): a stream gives "
                           "an output per frame; return the whole sequence and read the frame you need from the stream")
    start_a, stop_a, step_a = e_a.indices(n)
    start_b, stop_b, _ = e_b.indices(n + 1)
    if step_a != 1:
        raise refuse(node, f"takes every {step_a}th frame: it changes the frame rate along time, which a step that "
                           "emits one output per input frame cannot do")
    if start_a != start_b:
        raise refuse(node, "slices from a start that depends on the sequence length (x[:, -k:] keeps the last frames "
                           "of the whole sequence, which a stream has not seen yet)")
    if n - stop_a != n + 1 - stop_b:
        raise refuse(node, f"keeps only frames {start_a}..{stop_a - 1} (a stop that does not move with the sequence "
                           "length): a stream never ends")
    t = ctx.timing(src)
    if t.pad is not None:  # dropping the first frames of a padding leaves less of it pending
        left, value = t.pad
        rest = left - start_a
        timing = replace(t, delay=t.delay + start_a, first=t.first + max(0, -rest),
                         pad=(rest, value) if rest > 0 else None)
    else:
        timing = replace(t, delay=t.delay + start_a, first=t.first + start_a)
    return Build(Identity(pick), timing)


register_stream_op(operator.getitem, _getitem)


# ----------------------------------------------------------------------------------------------- convolution
@dataclass
class ConvSpec:
    """A convolution's parameters, from an ``nn.ConvNd`` or an ``F.convNd`` call with constant weights, in the
    canonical layout :class:`ConvStep` reads: time the first spatial axis, a Conv2d given a trailing unit axis
    (a Conv3d whose last axis has size 1), so that its other axis is convolved inside each frame."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]


def _numeric_padding(node: fx.Node, spec: ConvSpec, k: int) -> tuple[int, ...]:
    """Padding per spatial axis; ``"same"`` resolved (symmetric on every frame axis, or refused)."""
    nd = len(spec.kernel_size)
    if spec.padding == "valid":
        return (0,) * nd
    if spec.padding == "same":
        totals = [d * (kk - 1) for d, kk in zip(spec.dilation, spec.kernel_size)]
        for i, tot in enumerate(totals):
            if i != k and tot % 2:
                raise refuse(node, f"padding='same' with an even kernel pads axis {i + 2} of each frame asymmetrically;"
                                   " give the padding as numbers")
        return tuple(tot // 2 for tot in totals)
    return tuple(int(p) for p in spec.padding)


def _conv(ctx: BuildCtx, spec: ConvSpec) -> Build | None:
    node = ctx.node
    src = node.all_input_nodes[0]
    x = ctx.env[src]
    axis, nd = src.meta["time"], x.dim() - 2
    if axis == 0:
        return None  # time folded into the batch: a convolution over each frame's own axes, run as is
    if axis == 1:
        raise refuse(node, f"convolves an input of shape {tuple(x.shape)} whose time is on the channel axis (1): "
                           "transpose time to a spatial axis first (the convolution would mix frames as channels)")
    k = axis - 2  # which spatial axis carries time
    if spec.stride[k] != 1:
        raise refuse(node, f"stride {spec.stride[k]} along time changes the frame rate (one output every "
                           f"{spec.stride[k]} frames), which the graph converter does not stream yet")
    if spec.padding_mode != "zeros":
        raise refuse(node, f"padding_mode={spec.padding_mode!r} reads frames from the end of the sequence or mirrors "
                           "future ones; a stream cannot (use zero padding on the left)")
    padding = _numeric_padding(node, spec, k)
    kt, dt = spec.kernel_size[k], spec.dilation[k]
    span, own = (kt - 1) * dt, padding[k]
    if nd == 1:
        canon_spec, canon = spec, (x.shape[1],)
    else:  # time to the first spatial axis; a Conv2d gets a unit axis to run as the 3D form ConvStep knows
        order = [k] + [i for i in range(nd) if i != k]
        unit = (1,) if nd == 2 else ()
        w = spec.weight.permute(0, 1, *(2 + i for i in order))
        w = w.reshape(*w.shape, *unit)
        pick = lambda v, pad: tuple(v[i] for i in order) + pad  # noqa: E731
        canon_spec = replace(spec, weight=w, stride=pick(spec.stride, unit), padding=pick(padding, (0,) * len(unit)),
                             dilation=pick(spec.dilation, unit))
        canon = (x.shape[1], *(x.shape[2 + i] for i in order[1:]), *unit)
    t = ctx.timing(src)
    pending, value = t.pad if t.pad else (0, 0.0)
    if own and pending and value != 0.0:
        raise refuse(node, f"zero padding of its own after padding with {value}: two padding values in one window")
    try:
        step = ConvStep(canon_spec, Ctx(canon, what=f"{describe(node)} at {where(node)}"), pending + own, value)
    except ConfigError as exc:
        raise StreamRefusal(str(exc)) from None
    if t.pad is not None and t.first:
        step.upstream = t.first  # the padding frames wait in the buffer until the real ones come
    out = ctx.env[node]
    out_frame = tuple(1 if i == axis else s for i, s in enumerate(out.shape))[1:]
    delay = t.delay - own + span
    return Build(ConvOp(step, canon, out_frame), Timing(delay, max(delay, t.first), None if t.span is None else t.span + span))


def _conv_module(ctx: BuildCtx) -> Build | None:
    m = ctx.gm.get_submodule(ctx.node.target)
    spec = ConvSpec(m.weight.detach(), None if m.bias is None else m.bias.detach(), tuple(m.stride),
                    m.padding if isinstance(m.padding, str) else tuple(m.padding), tuple(m.dilation), m.groups,
                    m.padding_mode)
    return _conv(ctx, spec)


def _conv_function(nd: int):
    def build(ctx: BuildCtx) -> Build | None:
        node = ctx.node
        weight, bias = ctx.arg(1, "weight"), ctx.arg(2, "bias")
        for name, a in (("weight", weight), ("bias", bias)):
            if isinstance(a, fx.Node) and a.meta.get("time") is not None:
                raise refuse(node, f"takes a {name} that changes along time")
            if isinstance(a, fx.Node) and a.op != "get_attr":
                raise refuse(node, f"takes a {name} computed in forward; the converter streams convolutions with the "
                                   "model's own weights (an attribute or parameter)")
        n = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd  # noqa: E731
        padding = ctx.value(ctx.arg(4, "padding", 0))
        spec = ConvSpec(ctx.value(weight).detach(), None if bias is None else ctx.value(bias).detach(),
                        n(ctx.value(ctx.arg(3, "stride", 1))), padding if isinstance(padding, str) else n(padding),
                        n(ctx.value(ctx.arg(5, "dilation", 1))), int(ctx.value(ctx.arg(6, "groups", 1))))
        return _conv(ctx, spec)

    return build


for _nd, (_cls, _fn) in enumerate(((nn.Conv1d, F.conv1d), (nn.Conv2d, F.conv2d), (nn.Conv3d, F.conv3d)), start=1):
    register_stream_op(_cls, _conv_module)
    register_stream_op(_fn, _conv_function(_nd))


# ----------------------------------------------------------------------------------------------- sub-models
def _leaf(ctx: BuildCtx) -> Build:
    """A module with a registered converter (nn.LSTM / GRU / RNN, an edgeseq model, a Hugging Face Mamba)."""
    node = ctx.node
    if len(node.args) > 1 or node.kwargs:
        raise refuse(node, "is given an initial state or extra arguments; the step starts from the converter's own "
                           "initial state: call it with the sequence alone")
    return leaf_module(ctx, ctx.gm.get_submodule(node.target), node.args[0] if node.args else None)


def leaf_module(ctx: BuildCtx, module: nn.Module, src) -> Build:
    """``module`` (with a registered converter) applied to ``src`` at ``ctx.node``, run as its converter's step."""
    from edgeseq.convert import convert

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
    span = None if (t.span is None or sub.state_spec.receptive_field is None) else t.span + sub.state_spec.receptive_field - 1
    return Build(LeafStepOp(sub, in_axis, out_axis, t.first, isinstance(out, tuple)),
                 Timing(t.delay + d, t.first + d, span),
                 ({0}, "its final state (h_n) is used: it is the state after the whole sequence, which a stream never "
                       "has; use the per-frame output (the first element)"))


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

"""Convolutions along time (``nn.Conv1d/2d/3d`` and their functional forms, time on any spatial axis) as the
continual family's ring buffers (:class:`~edgeseq.stream.ConvStep`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeseq.errors import ConfigError
from edgeseq.graph.ops.base import Build, BuildCtx, GraphOp, StreamRefusal, refuse, register_stream_op, windowed
from edgeseq.graph.trace import describe, where
from edgeseq.stream import ConvStep, Ctx


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
    stride = spec.stride[k]  # one output every `stride` frames of its input: the buffer computes it when it is due
    spec = replace(spec, stride=tuple(1 if i == k else s for i, s in enumerate(spec.stride)))
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
    return Build(ConvOp(step, canon, out_frame), windowed(t, span, own, stride))


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



"""Pooling along time (``nn.AvgPool1d/2d``, ``nn.MaxPool1d/2d`` and their functional forms, time on a spatial
axis) as the continual family's pooling ring buffer (:class:`~edgeseq.stream.PoolStep`): the last (k - 1) * d
frames of its input, reduced when a frame comes. A stride along time makes it a multi-rate step (one output every
``stride`` frames of its input, see :class:`~edgeseq.graph.ops.base.Timing`); a 2D pool pools the frame's other
axis inside each frame (max and mean over a rectangle are the same over time of the same over the other axis)."""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeseq.errors import ConfigError
from edgeseq.graph.ops.base import Build, BuildCtx, GraphOp, StreamRefusal, refuse, register_stream_op, windowed
from edgeseq.graph.trace import describe, where
from edgeseq.stream import Ctx, PoolStep


class PoolOp(GraphOp):
    """A pool with time on one spatial axis, on the frame without its time axis: (C,) or (C, F)."""

    def __init__(self, pool: PoolStep, canon: tuple[int, ...], out_frame: tuple[int, ...]):
        super().__init__()
        self.pool, self.canon, self.out_frame = pool, canon, out_frame

    def states(self):
        return self.pool.states()

    def step(self, args, kwargs, state, t):
        x = args[0]
        y, new = self.pool.step(x.reshape(x.shape[0], *self.canon), state, t)
        return y.reshape(y.shape[0], *self.out_frame), new


class TiledMax(nn.Module):
    """``nn.MaxPool1d(k)`` (stride k, no padding) over a frame's other axis, (B, C, F) -> (B, C, F // k), as
    elementwise maxima of k slices of a reshape: XNNPACK delegates them, and left the max pool (through
    ``max_pool2d_with_indices``) and its squeezes outside its partition."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        B, C, n = x.shape
        tiles = (x[:, :, : n - n % self.k] if n % self.k else x).reshape(B, C, n // self.k, self.k)
        y = tiles[..., :1]
        for i in range(1, self.k):
            y = torch.maximum(y, tiles[..., i:i + 1])
        return y.reshape(B, C, n // self.k)


def _pair(v, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _pool(ctx: BuildCtx, kind: str, nd: int, kernel, stride, padding, dilation, ceil_mode: bool,
          count_include_pad: bool, divisor_override, return_indices: bool) -> Build | None:
    node = ctx.node
    src = node.all_input_nodes[0]
    x = ctx.env[src]
    axis = src.meta["time"]
    if axis == 0 or x.dim() != nd + 2:
        return None  # time folded into the batch (or an unbatched call): a pooling inside each frame, run as is
    if axis == 1:
        raise refuse(node, f"pools an input of shape {tuple(x.shape)} whose time is on the channel axis (1): "
                           "transpose time to a spatial axis first")
    if return_indices:
        raise refuse(node, "returns the indices of its maxima, which count frames from the sequence start")
    if divisor_override:
        raise refuse(node, "has a divisor_override; the stream divides by the kernel size")
    k, s = _pair(kernel, nd), _pair(stride if stride not in (None, [], ()) else kernel, nd)
    p, d = _pair(padding, nd), _pair(dilation, nd)
    a = axis - 2  # which spatial axis carries time
    if kind == "avg" and p[a] and not count_include_pad:
        raise refuse(node, "count_include_pad=False changes the divisor at the sequence's start; a stream cannot")
    other = [i for i in range(nd) if i != a]
    spatial = None
    if other and (k[other[0]], s[other[0]], p[other[0]], d[other[0]]) != (1, 1, 0, 1):
        j = other[0]
        if kind == "max" and k[j] == s[j] and (p[j], d[j]) == (0, 1) and not (ceil_mode and x.shape[2 + j] % k[j]):
            spatial = TiledMax(k[j])
        else:
            spatial = (nn.AvgPool1d(k[j], s[j], p[j], ceil_mode=ceil_mode, count_include_pad=count_include_pad)
                       if kind == "avg" else nn.MaxPool1d(k[j], s[j], p[j], dilation=d[j], ceil_mode=ceil_mode))
    fill = 0.0 if kind == "avg" else float("-inf")
    t = ctx.timing(src)
    own = p[a]
    pending, value = t.pad if t.pad else (0, fill)
    if own and pending and value != fill:
        raise refuse(node, f"pads with {fill} after padding with {value}: two padding values in one window")
    canon = (x.shape[1],) if nd == 1 else (x.shape[1], x.shape[2 + other[0]])
    try:
        step = PoolStep(kind, Ctx(canon, what=f"{describe(node)} at {where(node)}"), k[a], d[a], pending + own,
                        value if pending else fill, spatial)
    except ConfigError as exc:
        raise StreamRefusal(str(exc)) from None
    if t.pad is not None and t.first:
        step.upstream = t.first  # the padding frames wait in the buffer until the real ones come
    out = ctx.env[node]
    out_frame = tuple(1 if i == axis else n for i, n in enumerate(out.shape))[1:]
    return Build(PoolOp(step, canon, out_frame), windowed(t, (k[a] - 1) * d[a], own, s[a]))


def _pool_module(kind: str, nd: int):
    def build(ctx: BuildCtx) -> Build | None:
        m = ctx.gm.get_submodule(ctx.node.target)
        return _pool(ctx, kind, nd, m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1), m.ceil_mode,
                     getattr(m, "count_include_pad", True), getattr(m, "divisor_override", None),
                     getattr(m, "return_indices", False))

    return build


def _pool_function(kind: str, nd: int):
    names = (("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override") if kind == "avg"
             else ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"))
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": None, "return_indices": False}

    def build(ctx: BuildCtx) -> Build | None:
        for a in list(ctx.node.args[1:]) + list(ctx.node.kwargs.values()):
            if isinstance(a, fx.Node):
                raise refuse(ctx.node, "takes a kernel size or stride computed in forward; give it as a number")
        v = {name: ctx.value(ctx.arg(i, name, defaults.get(name))) for i, name in enumerate(names, start=1)}
        return _pool(ctx, kind, nd, v["kernel_size"], v["stride"], v["padding"], v.get("dilation", 1),
                     bool(v["ceil_mode"]), bool(v.get("count_include_pad", True)), v.get("divisor_override"),
                     bool(v.get("return_indices", False)))

    return build


for _nd, (_avg, _max, _favg, _fmax) in enumerate(((nn.AvgPool1d, nn.MaxPool1d, F.avg_pool1d, F.max_pool1d),
                                                 (nn.AvgPool2d, nn.MaxPool2d, F.avg_pool2d, F.max_pool2d)), start=1):
    register_stream_op(_avg, _pool_module("avg", _nd))
    register_stream_op(_max, _pool_module("max", _nd))
    register_stream_op(_favg, _pool_function("avg", _nd))
    register_stream_op(_fmax, _pool_function("max", _nd))

"""Stream operations that shift time: delay lines, padding along time (a pending left pad for the next
convolution, right padding as a delay), slices along time (look-ahead as a delay, chomps)."""

from __future__ import annotations

from dataclasses import replace
import math
import operator

import torch
from torch import fx, nn

from edgeseq.graph.ops.base import Build, BuildCtx, GraphOp, Identity, on_phase, refuse, register_stream_op
from edgeseq.stream import DelayLine


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
    timing = replace(t, delay=t.delay - left * t.rate, pad=(pending, float(value)) if pending else None)
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
    """A slice along time, ``e_a`` at the example's length and ``e_b`` in the longer run: a shift of the timing
    (``x[:, 1:]``, the chomp ``x[..., :-k]``), every k-th frame (``x[:, ::k]``: a k times slower rate), or refused
    where it is none of these."""
    node = ctx.node
    n, grow = src.meta["length"], src.meta.get("growth", 1)
    if not isinstance(e_a, slice):
        raise refuse(node, "selects single frames of the sequence (x[:, -1], an index along time): a stream gives "
                           "an output per frame; return the whole sequence and read the frame you need from the stream")
    start_a, stop_a, step_a = e_a.indices(n)
    start_b, stop_b, _ = e_b.indices(n + grow)
    if step_a < 1:
        raise refuse(node, "reverses time (a negative step): a stream cannot read its frames backwards")
    if start_a != start_b:
        raise refuse(node, "slices from a start that depends on the sequence length (x[:, -k:] keeps the last frames "
                           "of the whole sequence, which a stream has not seen yet)")
    if n - stop_a != n + grow - stop_b:
        raise refuse(node, f"keeps only frames {start_a}..{stop_a - 1} (a stop that does not move with the sequence "
                           "length): a stream never ends")
    t = ctx.timing(src)
    if step_a > 1 and t.pad is not None:
        raise refuse(node, "takes every k-th frame of a sequence padded along time; pad after the subsampling")
    r = t.rate
    if t.pad is not None:  # dropping the first frames of a padding leaves less of it pending
        left, value = t.pad
        rest = left - start_a
        timing = replace(t, delay=t.delay + start_a * r, first=t.first + max(0, -rest) * r,
                         pad=(rest, value) if rest > 0 else None)
    else:
        delay = t.delay + start_a * r
        timing = replace(t, delay=delay, first=on_phase(t.first + start_a * r, delay, r * step_a), rate=r * step_a)
    return Build(Identity(pick), timing)


register_stream_op(operator.getitem, _getitem)



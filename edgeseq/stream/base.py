"""The stream layers' contract and the layers that hold no window: one frame in, one frame out, explicit state.

A :class:`StreamLayer` maps one input frame (B, C, *spatial) to one output frame and names its state tensors;
:class:`Ctx` is what a converter knows at a point of a network (the frame shape, the layout, pending padding).
Per-frame layers (:class:`Pointwise`, :class:`Affine`, :class:`FrameLayerNorm`), the frame counter's
:func:`fresh_mask`, and the containers (:class:`DelayLine`, :class:`Chain`, :class:`BranchesStep`) are here; the
ring-buffer layers are in :mod:`edgeseq.stream.window`, single-output attention in :mod:`edgeseq.stream.attention`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.step import State, StateTensor

LOWEST = -3.4028234663852886e38  # float32's lowest finite value: stands in for -inf padding in a buffer


def prefixed(prefix: str, tensors: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
    """A sub-layer's state tensors, named ``<prefix>.<name>`` inside its container."""
    return tuple(StateTensor(f"{prefix}.{t.name}", t.shape, t.dtype, t.fill) for t in tensors)


@dataclass
class Pending:
    """Padding met before the temporal layer that consumes it: (left, right, value)."""

    left: int = 0
    right: int = 0
    value: float | None = None


@dataclass
class Ctx:
    """What the converter knows at a point of the stack."""

    shape: tuple[int, ...]  # one frame: (C,) or (C, H, W)
    layout: str = "bct"  # how the offline net holds time: (B, C, T, ...) or (B, T, C)
    length: int | None = None  # frames per window here (clip / window models); None: a whole sequence
    timed: bool = True  # False once the offline tensor has lost its time axis (pooled, then flattened)
    single: str = ""  # set after a single-output attention layer: the layer that made it so
    stream_padding: bool = False  # a clip model read as CoX3D does: temporal padding comes from the stream
    in_branch: str = ""  # inside parallel branches / a residual body: the container's label
    pending: Pending = field(default_factory=Pending)
    what: str = "module"

    @property
    def channels(self) -> int:
        return self.shape[0]


class StreamLayer(nn.Module):
    """One converted layer: ``step(x (B, *frame), state) -> (y (B, *frame_out), new state)``."""

    delay: int = 0  # output at frame n = offline output at frame n - delay
    span: int = 0  # frames of history it reads besides the newest
    length_change: int = 0  # how much the layer shortens (< 0) or lengthens the offline sequence (stride 1)
    shape_out: tuple[int, ...] | None = None  # None: the frame shape that comes in
    stride: int = 1  # temporal stride: one output per `stride` input frames

    def states(self) -> tuple[StateTensor, ...]:
        return ()

    def step(self, x: torch.Tensor, state: State, t: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """``t`` (B, 1): frames seen so far (saturating at the network's delay), or None when nothing waits."""
        raise NotImplementedError


class Pointwise(StreamLayer):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).eval()

    def step(self, x, state, t):
        return self.module(x), ()


class Affine(StreamLayer):
    """An eval-mode BatchNorm as one per-channel scale and shift (any frame rank)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, spatial: int):
        super().__init__()
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        shift = -bn.running_mean * scale + (0 if bn.bias is None else bn.bias.detach())
        view = (-1,) + (1,) * spatial
        self.register_buffer("scale", scale.detach().reshape(view).clone())
        self.register_buffer("shift", shift.detach().reshape(view).clone())

    def step(self, x, state, t):
        return x * self.scale + self.shift, ()


class Folded(StreamLayer):
    """Where a BatchNorm stood that was folded into the convolution before it (:meth:`ConvStep.absorb`)."""

    def step(self, x, state, t):
        return x, ()


class FrameLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dim written as matmuls and elementwise ops (means as products with a 1/D
    column), which XNNPACK delegates; ExecuTorch 1.5 leaves ``native_layer_norm`` outside the partition."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise ConfigError(f"LayerNorm over {tuple(ln.normalized_shape)}: only the last dim is supported")
        d = ln.normalized_shape[0]
        self.eps = ln.eps
        self.register_buffer("mean_col", torch.full((d, 1), 1.0 / d))
        self.weight = None if ln.weight is None else nn.Parameter(ln.weight.detach().clone(), requires_grad=False)
        self.bias = None if getattr(ln, "bias", None) is None else nn.Parameter(ln.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - torch.matmul(x, self.mean_col)
        y = centred * torch.rsqrt(torch.matmul(centred * centred, self.mean_col) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y if self.bias is None else y + self.bias


class Buffered(StreamLayer):
    """A layer with a ring buffer of past frames. Its input is fresh at frames upstream + k * rate (the layers
    before it delay their first output by `upstream` frames and give one every `rate` frames); only fresh
    frames enter the buffer."""

    upstream: int = 0  # the first frame at which the input is a valid output of the layers before
    rate: int = 1  # frames between valid inputs (the product of the temporal strides before)

    def keep_ready(self, new: torch.Tensor, old: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        if (not self.upstream and self.rate == 1) or t is None:
            return new
        fresh = fresh_mask(t, self.upstream, self.rate).reshape(-1, *(1,) * (new.dim() - 1))
        return new * fresh + old * (1.0 - fresh)


def fresh_mask(t: torch.Tensor, first: int, rate: int) -> torch.Tensor:
    """1.0 where frame counter t is first + k * rate, else 0.0 (t counts whole frames, see ContinualStep).
    Arithmetic rather than torch.where, so that runtimes without a select op (XNNPACK) keep the step in one
    partition: clamp(t - first + 1, 0, 1) is exactly 0 or 1."""
    ready = torch.clamp(t - float(first - 1), 0.0, 1.0)
    if rate > 1:
        # (t - first) mod rate as u - rate * floor(u / rate): XNNPACK delegates floor and div, not remainder (which
        # split a strided step's ExecuTorch program in two). Exact: u is a whole number below 2**24, and a quotient
        # that is whole is exactly so in float32, one that is not lies at least 1/rate from the next whole one
        u = t - float(first)
        ready = ready * torch.clamp(1.0 - (u - float(rate) * torch.floor(u / float(rate))), 0.0, 1.0)
    return ready


def channels_last(frame: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) frame entering a buffer, in channels-last memory (a no-op for one that is: a convolution's
    output from channels-last input). The buffers are state; ExecuTorch takes them channels-last
    (``exporters/executorch.py``), and a frame that entered NCHW (the network's input frame, reshaped from the flat
    input) would leave the program NCHW and need converting back on every call."""
    return frame.to(memory_format=torch.channels_last) if frame.dim() == 4 else frame


def dilated_frames(window: torch.Tensor, d: int) -> torch.Tensor:
    """Every d-th frame of a window (B, C, (K - 1) * d + 1, *spatial), oldest first: (B, C, K, *spatial). Written
    as a reshape and a contiguous slice rather than a strided one (``window[:, :, ::d]``), which XNNPACK does not
    delegate and which would split the ExecuTorch program into several partitions."""
    if d == 1:
        return window
    B, C, n, *sp = window.shape
    every = window[:, :, : n - 1].reshape(B, C, n // d, d, *sp)[:, :, :, :1].reshape(B, C, n // d, *sp)
    return torch.cat([every, window[:, :, n - 1 :]], dim=2)


class DelayLine(StreamLayer):
    """x delayed by ``delay`` frames (the skip path of a residual whose body has that delay)."""

    def __init__(self, frame: tuple[int, ...], delay: int):
        super().__init__()
        self.frame, self.delay = frame, delay

    def states(self):
        if not self.delay:
            return ()
        if len(self.frame) > 1:  # spatial frames: one state tensor per frame, shifted by renaming (see Window)
            return tuple(StateTensor(f"line{i}", self.frame) for i in range(self.delay))
        return (StateTensor("line", (self.frame[0], self.delay, *self.frame[1:])),)

    def step(self, x, state, t):
        if not self.delay:
            return x, ()
        if len(self.frame) > 1:
            return state[0], (*state[1:], channels_last(x))
        line = torch.cat([state[0], x.reshape(x.shape[0], x.shape[1], 1, *x.shape[2:])], dim=2)
        return line[:, :, :1].reshape(x.shape), (line[:, :, 1:],)  # reshapes and slices: delegate-friendly


class Chain(StreamLayer):
    """Layers one after another; delays and spans add up."""

    def __init__(self, layers: list[StreamLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.delay = sum(layer.delay for layer in layers)
        self.span = sum(layer.span for layer in layers)
        self.length_change = sum(layer.length_change for layer in layers)
        outs = [layer.shape_out for layer in layers if layer.shape_out is not None]
        self.shape_out = outs[-1] if outs else None

    def states(self):
        return tuple(t for i, layer in enumerate(self.layers) for t in prefixed(str(i), layer.states()))

    def step(self, x, state, t):
        new, pos = [], 0
        for layer in self.layers:
            n = len(layer.states())
            x, s = layer.step(x, state[pos : pos + n], t)
            new += list(s)
            pos += n
        return x, tuple(new)


class BranchesStep(StreamLayer):
    """Parallel branches, each a Chain followed by the DelayLine that aligns it with the slowest, then summed or
    concatenated. A branch with delay d and length change c (the shortest branch's: c_min) gives the combined
    output m at frame m + d + c - c_min; the combined delay is the largest of those."""

    def __init__(self, names: list[str], branches: list[Chain], reduce: str, frame_in: tuple[int, ...]):
        super().__init__()
        shortest = min(b.length_change for b in branches)
        lateness = [b.delay + b.length_change - shortest for b in branches]
        self.delay, self.length_change = max(lateness), shortest
        self.span = max(b.span for b in branches)
        self.names, self.reduce = names, reduce
        self.branches = nn.ModuleList(branches)
        outs = [b.shape_out or frame_in for b in branches]
        self.lines = nn.ModuleList(DelayLine(o, self.delay - late) for o, late in zip(outs, lateness))
        self.shape_out = outs[0] if reduce == "sum" else (sum(o[0] for o in outs), *outs[0][1:])

    def states(self):
        # a branch's chain states are named by index ("body.0.buf"), its alignment line "line" ("skip.line")
        return tuple(t for name, b, line in zip(self.names, self.branches, self.lines)
                     for t in prefixed(name, b.states() + line.states()))

    def step(self, x, state, t):
        new, pos, ys = [], 0, []
        for b, line in zip(self.branches, self.lines):
            nb, nl = len(b.states()), len(line.states())
            y, sb = b.step(x, state[pos : pos + nb], t)
            y, sl = line.step(y, state[pos + nb : pos + nb + nl], t)
            ys.append(y)
            new += list(sb) + list(sl)
            pos += nb + nl
        if self.reduce == "cat":
            return torch.cat(ys, dim=1), tuple(new)
        out = ys[0]
        for y in ys[1:]:
            out = out + y
        return out, tuple(new)

"""Continual step form: offline temporal layers -> one-frame steps with ring-buffer state and delay bookkeeping.

A converted layer (:class:`StreamLayer`) maps one input frame (B, C, *spatial) to one output frame and carries
its own state. Per temporal layer, with span = (K_t - 1) * dilation_t and left padding l (its own plus a
preceding ``nn.ConstantPad1d``): the ring buffer holds ``span`` frames, initially the padding value, and the
delay is ``span - l``. Right padding only adds outputs at the end of an offline sequence, which a stream never
reaches. Spatial kernels, strides and padding of a 3D layer act inside each frame.

Supported (``LAYERS``, keyed by module type; :func:`register_layer` adds more): ``nn.Conv1d`` / ``nn.Conv3d``
(temporal stride 1; any spatial stride, dilation and groups; zero padding incl. ``"same"``), ``nn.AvgPool1d/3d``
/ ``nn.MaxPool1d/3d`` (temporal stride 1), ``nn.AdaptiveAvgPool1d/3d`` / ``nn.AdaptiveMaxPool1d/3d`` (spatial
per frame; a temporal output of 1 is the global pool of a clip model), ``nn.ConstantPad1d`` (merged into the
next temporal layer), ``nn.BatchNorm1d/2d/3d`` (eval), activations, ``Dropout``, ``Identity``, ``Flatten`` and
``Linear`` / ``LayerNorm`` where they act on features, ``nn.TransformerEncoderLayer`` (single-output attention
over the window, Continual Transformers), nested ``nn.Sequential`` and
:class:`~edgeseq.models.continual.Residual` / :class:`~edgeseq.models.continual.Branches` (each branch delayed to
match the slowest). Anything else is refused
by name, with how to register it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.continual import Branches, OfflineModel, Residual, TemporalCNN
from edgeseq.registry import Registry
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

LOWEST = -3.4028234663852886e38  # float32's lowest finite value: stands in for -inf padding in a buffer


def _prefixed(prefix: str, tensors: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
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
        ready = ready * torch.clamp(1.0 - torch.remainder(t - float(first), float(rate)), 0.0, 1.0)
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


class Window(Buffered):
    """Ring buffer of the last ``span`` frames, oldest first; ``reduce`` maps the window to one output frame.

    1D frames (C,): one state tensor (B, C, span); the window (B, C, span + 1) is the buffer and the new frame
    concatenated. Spatial frames (C, H, W) (``per_frame``): one state tensor per buffered frame (``buf0`` oldest),
    and ``reduce_frames`` gets the span + 1 frames as a list. Then nothing is concatenated or sliced: the new
    state is the old one shifted by one (a renaming, no copy in the graph), a dilated kernel's taps are every
    d-th list entry, and a depthwise kernel reads its frames where they lie. A 3D clip model's state is MBs per
    stream: the (B, C, span, H, W) form's concatenation, slicing and warm-up masking copied it several times per
    frame (on the X3D-like step 36% of the kernel time went to copies, slices and transposes)."""

    def __init__(self, ctx: Ctx, span: int, left: int, fill: float, stride: int = 1):
        super().__init__()
        self.stride = stride
        if left > span:
            raise ConfigError(
                f"{ctx.what}: left padding {left} exceeds its receptive span {span}: its first outputs would come before "
                "any input frame, which a stream cannot produce"
            )
        self.frame, self.span, self.delay, self.fill = ctx.shape, span, span - left, max(fill, LOWEST)
        self.per_frame = len(self.frame) > 1

    def states(self):
        if not self.span:
            return ()
        if self.per_frame:
            return tuple(StateTensor(f"buf{i}", self.frame, fill=self.fill) for i in range(self.span))
        return (StateTensor("buf", (self.frame[0], self.span, *self.frame[1:]), fill=self.fill),)

    def step(self, x, state, t):
        if self.per_frame:
            frames = [*state, channels_last(self.enter(x))]
            return self.reduce_frames(frames), self.keep_frames(frames[1:], state, t)
        frame = x.reshape(x.shape[0], x.shape[1], 1, *x.shape[2:])  # (B, C, 1, ...): a reshape, not unsqueeze
        if not self.span:
            return self.reduce(frame), ()
        window = torch.cat([state[0], frame], dim=2)
        return self.reduce(window), (self.keep_ready(window[:, :, 1:], state[0], t),)

    def keep_frames(self, new: list[torch.Tensor], old: State, t: torch.Tensor | None) -> State:
        """The per-frame buffer after this step: ``new`` (the old frames shifted, the entering one last), held
        while the input is not fresh (see :class:`Buffered`)."""
        if not self.span:
            return ()
        if (not self.upstream and self.rate == 1) or t is None:
            return tuple(new)
        fresh = fresh_mask(t, self.upstream, self.rate).reshape(-1, *(1,) * len(self.frame))
        if self.rate == 1:
            # before its first fresh frame the buffer holds only the fill (it starts so), and shifting the fill in
            # keeps it so; from then on every frame is fresh. So only the entering frame needs the mask.
            newest = new[-1] * fresh
            if self.fill:
                newest = newest + self.fill * (1.0 - fresh)
            return (*new[:-1], newest)
        return tuple(n * fresh + o * (1.0 - fresh) for n, o in zip(new, old))

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """What of a spatial frame enters the buffer (the frame itself; a pool pools it spatially first)."""
        return x

    def reduce(self, window: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduce_frames(self, frames: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def finish(self) -> "Window":
        """Set the output frame shape by running the layer once on zeros."""
        with torch.no_grad():
            if self.per_frame:
                frame = torch.zeros(1, *self.frame)
                self.shape_out = tuple(self.reduce_frames([frame] * (self.span + 1)).shape[1:])
            else:
                self.shape_out = tuple(self.reduce(torch.zeros(1, self.frame[0], self.span + 1, *self.frame[1:])).shape[1:])
        return self


class ConvStep(Window):
    """Conv1d / Conv3d: the temporal kernel over the buffer, the spatial part inside the frame."""

    def __init__(self, conv: nn.Conv1d | nn.Conv3d, ctx: Ctx, left: int, fill: float):
        dt, kt = conv.dilation[0], conv.kernel_size[0]
        super().__init__(ctx, (kt - 1) * dt, left, fill)
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.dilation, self.groups = tuple(conv.dilation), conv.groups
        self.linear: nn.Linear | None = None  # set by use_linear()
        if len(conv.kernel_size) == 3:
            # one 2D convolution per frame of the kernel, summed: runtimes (XNNPACK, the ExecuTorch portable
            # kernels) run 2D convolutions but not always 3D ones, and each frame is read where it lies in the
            # per-frame buffer. (Folding the kt frames into the channels instead needs them stacked, a copy, and a
            # reshape that XNNPACK runs in NCHW, transposing around it; a folded depthwise kernel also ran as a
            # grouped convolution, 2.1x slower than kt depthwise ones: 567 vs 273 us, 54 channels at 16x16.)
            kt = conv.weight.shape[2]
            self.sp_stride, self.sp_padding = tuple(conv.stride[1:]), tuple(conv.padding[1:])  # inside the frame
            self.frame_weights = nn.ParameterList(
                [nn.Parameter(conv.weight.detach()[:, :, t].clone(), requires_grad=False) for t in range(kt)])
            self.weight = None
        self.channels_out = conv.out_channels
        self.finish()

    def absorb(self, affine: "Affine") -> None:
        """Fold the per-channel scale and shift of the (BatchNorm) :class:`Affine` that follows into this
        convolution's weights and bias. For spatial frames only: there the separate scale-and-shift cost a
        multiply and an add per frame, and XNNPACK ran them in NCHW (its channels-last pass will not convert a
        (C, 1, 1) constant), transposing the convolution's NHWC output back and forth around them."""
        scale, shift = affine.scale.reshape(-1), affine.shift.reshape(-1)
        with torch.no_grad():
            for w in self.frame_weights:
                w.mul_(scale.reshape(-1, 1, 1, 1))
            bias = shift.clone() if self.bias is None else self.bias * scale + shift
        self.bias = nn.Parameter(bias, requires_grad=False)

    def use_linear(self) -> bool:
        """Rewrite a dense 1D convolution (groups 1) as the ``nn.Linear`` it is at one output frame: weight
        (C_out, C_in, K) -> (C_out, C_in * K) against the kernel's taps (C_in, K) flattened the same way. The
        int8, weight-only and fp16 schemes call it (``quant.qlinear.use_linear_forms``), so that a temporal
        convolution quantizes like any linear layer (per output channel = per filter). The float step keeps the
        convolution: one Conv op is cheaper in onnxruntime than the taps' slices and a MatMul (measured: 88 vs 98 us
        on a 3x64 TCN step; ExecuTorch the same either way). Returns whether it rewrote."""
        if self.linear is not None or self.weight is None or self.weight.dim() != 3 or self.groups != 1:
            return self.linear is not None
        co, ci, k = self.weight.shape
        self.linear = nn.Linear(ci * k, co, bias=self.bias is not None).requires_grad_(False)
        with torch.no_grad():
            self.linear.weight.copy_(self.weight.reshape(co, ci * k))
            if self.bias is not None:
                self.linear.bias.copy_(self.bias)
        self.weight = self.bias = None
        return True

    def taps(self, window: torch.Tensor) -> torch.Tensor:
        """The K frames the kernel reads, (B, C, K, *spatial), from the window (B, C, (K - 1) * d + 1, *spatial)."""
        return dilated_frames(window, self.dilation[0])

    def reduce(self, window):
        if self.linear is not None:
            return self.linear(self.taps(window).reshape(window.shape[0], -1))
        if window.dim() == 3:
            y = nn.functional.conv1d(window, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
            return y.reshape(y.shape[0], y.shape[1])
        raise AssertionError("spatial frames are reduced by reduce_frames")

    def reduce_frames(self, frames):
        taps = frames[:: self.dilation[0]]  # the kt frames the kernel reads, oldest first
        y = None
        for t, (f, w) in enumerate(zip(taps, self.frame_weights)):  # one conv2d per frame of the kernel, summed
            z = nn.functional.conv2d(f, w, self.bias if t == 0 else None, self.sp_stride, self.sp_padding, self.dilation[1:], self.groups)
            y = z if y is None else y + z
        return y


class PoolStep(Window):
    """Temporal avg / max over the window (kernel k, dilation d) and an optional spatial pooling per frame (of the
    same kind; with spatial frames it runs first, as each frame enters the buffer)."""

    def __init__(self, kind: str, ctx: Ctx, k: int, dilation: int, left: int, fill: float, spatial: nn.Module | None):
        super().__init__(ctx, (k - 1) * dilation, left, fill)
        self.kind, self.k, self.dil = kind, k, dilation
        self.spatial = spatial
        self.register_buffer("mean_col", torch.full((k, 1), 1.0 / k))
        if self.per_frame and spatial is not None:
            # the spatial pooling is of the same kind (avg/max) as the temporal one, so it commutes with it: each
            # frame is pooled as it enters, and the buffer holds pooled frames (a clip model's global pool: C x 1 x 1)
            with torch.no_grad():
                self.pooled = tuple(spatial(torch.zeros(1, *self.frame)).shape[1:])
            # a global spatial pool's (C, 1, 1) frames are buffered as (C,): a (B, C, 1, 1) tensor has no one memory
            # layout, and from a channels-last frame ExecuTorch fixed its strides with a copy outside the delegate
            self.frame = self.pooled if math.prod(self.pooled[1:]) > 1 else self.pooled[:1]
            hw = math.prod(ctx.shape[1:])
            self.register_buffer("spatial_mean", torch.full((hw, 1), 1.0 / hw))
        self.finish()

    def enter(self, x):
        if self.spatial is None:
            return x
        if isinstance(self.spatial, nn.AdaptiveAvgPool2d) and len(self.frame) == 1:
            # global: a product with a 1/(H W) column straight to (B, C) (XNNPACK delegates it; a mean over H, W
            # without keepdim it left outside, with keepdim the (B, C, 1, 1) layout problem above came back)
            B, C, H, W = x.shape
            return torch.mm(x.reshape(B * C, H * W), self.spatial_mean).reshape(B, C)
        y = self.spatial(x)
        return y.reshape(y.shape[0], *self.frame)

    def reduce_frames(self, frames):
        taps = frames[:: self.dil]
        y = taps[0]
        for f in taps[1:]:  # elementwise sums / maxima over the k frames: XNNPACK delegates them
            y = y + f if self.kind == "avg" else torch.maximum(y, f)
        y = y * (1.0 / self.k) if self.kind == "avg" else y
        return y.reshape(y.shape[0], *self.pooled) if self.spatial is not None else y

    def reduce(self, window):
        B, C, k, *spatial = window.shape
        if self.kind == "avg":  # a 2D matmul with a mean column: delegate-friendly
            rows = window.movedim(2, -1).reshape(-1, k)
            y = torch.mm(rows, self.mean_col).reshape(B, C, *spatial)
        else:
            y = nn.functional.max_pool1d(dilated_frames(window, self.dil), self.k).reshape(B, C)
        return y


class AttentionStep(Buffered):
    """``nn.TransformerEncoderLayer`` (batch_first) as single-output attention over the last ``window`` frames
    (Continual Transformers, Hedegaard et al.): the newest frame's query against a ring buffer of the window's
    keys and values, then the layer's feed-forward part on that one frame."""

    def __init__(self, layer: nn.TransformerEncoderLayer, ctx: Ctx, window: int):
        super().__init__()
        attn = layer.self_attn
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise ConfigError(f"{ctx.what}: attention with separate kdim/vdim, bias_k/bias_v or add_zero_attn is not supported")
        self.d, self.heads = attn.embed_dim, attn.num_heads
        self.span = self.delay = window - 1
        layer = copy.deepcopy(layer).eval()
        w, b = layer.self_attn.in_proj_weight.detach(), layer.self_attn.in_proj_bias
        # one linear per projection (no split op), the query pre-scaled by 1 / sqrt(head dim)
        scale = (self.d // self.heads) ** -0.5
        self.q, self.k, self.v = (nn.Linear(self.d, self.d, bias=b is not None) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(w[i * self.d : (i + 1) * self.d] * (scale if i == 0 else 1.0))
                if b is not None:
                    lin.bias.copy_(b[i * self.d : (i + 1) * self.d] * (scale if i == 0 else 1.0))
        self.out_proj = layer.self_attn.out_proj
        self.norm1, self.norm2 = FrameLayerNorm(layer.norm1), FrameLayerNorm(layer.norm2)
        self.linear1, self.linear2, self.activation = layer.linear1, layer.linear2, layer.activation
        self.norm_first = layer.norm_first

    def states(self):
        if not self.span:
            return ()
        return (StateTensor("k", (self.d, self.span)), StateTensor("v", (self.d, self.span)))

    def _attend(self, h, state, t):
        B, H = h.shape[0], self.heads
        dh = self.d // H
        q = self.q(h)
        keys, vals = self.k(h).reshape(B, self.d, 1), self.v(h).reshape(B, self.d, 1)
        if self.span:
            keys, vals = torch.cat([state[0], keys], dim=-1), torch.cat([state[1], vals], dim=-1)  # (B, D, W)
        w = keys.shape[-1]
        # 3D batched products over (batch x heads): no broadcasting, so no expand ops in the exported graph
        scores = torch.bmm(q.reshape(B * H, 1, dh), keys.reshape(B * H, dh, w))  # (B*H, 1, W)
        o = torch.bmm(torch.softmax(scores, dim=-1), vals.reshape(B * H, dh, w).transpose(1, 2))
        new = () if not self.span else (self.keep_ready(keys[..., 1:], state[0], t), self.keep_ready(vals[..., 1:], state[1], t))
        return self.out_proj(o.reshape(B, self.d)), new

    def step(self, x, state, t):
        ff = lambda y: self.linear2(self.activation(self.linear1(y)))  # noqa: E731
        if self.norm_first:
            sa, new = self._attend(self.norm1(x), state, t)
            y = x + sa
            return y + ff(self.norm2(y)), new
        sa, new = self._attend(x, state, t)
        y = self.norm1(x + sa)
        return self.norm2(y + ff(y)), new


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
        return tuple(t for i, layer in enumerate(self.layers) for t in _prefixed(str(i), layer.states()))

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
                     for t in _prefixed(name, b.states() + line.states()))

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


# ------------------------------------------------------------------------------------------- the converter
@dataclass(frozen=True)
class LayerConverter:
    module_type: type
    # convert(module, ctx) -> StreamLayer, with its delay, span, length_change and shape_out set
    convert: Callable[[nn.Module, Ctx], StreamLayer]


LAYERS: Registry[LayerConverter] = Registry("continual layer")

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardswish,
               nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout3d)


def register_layer(module_type: type, convert: Callable[[nn.Module, Ctx], StreamLayer]) -> LayerConverter:
    """Teach the continual converter a layer: ``convert(module, ctx) -> StreamLayer`` (see :class:`Ctx`)."""
    return LAYERS.register(module_type, LayerConverter(module_type, convert))


def _pad_fill(ctx: Ctx, own_left: int, own_right: int, own_value: float) -> tuple[int, int, float]:
    """Merge a preceding ConstantPad1d with the layer's own temporal padding -> (left, right, value)."""
    pending = ctx.pending
    padded_before = bool(pending.left or pending.right)
    if padded_before and (own_left or own_right) and pending.value != own_value:
        raise ConfigError(f"{ctx.what}: padding values {pending.value} and {own_value} meet in one layer; it cannot stream")
    value = pending.value if padded_before else own_value
    left, right = pending.left + own_left, pending.right + own_right
    if ctx.length is not None and (left or right) and not ctx.stream_padding:
        raise ConfigError(
            f"{ctx.what}: temporal padding inside a clip / window model pads every window at its edges, where a stream "
            "has real frames; its outputs would differ from the model's. Use temporal padding 0 inside the clip model, "
            "or OfflineModel(..., padding='stream') to take the padding frames from the stream (Continual 3D CNNs)"
        )
    return left, right, value


def _temporal_stride(ctx: Ctx, stride: int) -> int:
    """A temporal stride s: the layer gives one output every s input frames (the step marks the others not
    ready). Supported in whole-sequence stacks; not inside parallel branches or clip / window models."""
    if stride != 1 and ctx.in_branch:
        raise ConfigError(f"{ctx.what}: temporal stride {stride} inside {ctx.in_branch} is not supported (branches run "
                          "at one rate; put the strided layer before or after them)")
    if stride != 1 and ctx.length is not None:
        raise ConfigError(f"{ctx.what}: temporal stride {stride} inside a clip / window model is not supported (the "
                          "clip model's sampling phase would follow each window's start); use stride 1 in time")
    return stride


def _rank_check(module: nn.Module, ctx: Ctx, rank: int) -> None:
    if ctx.layout != "bct" or not ctx.timed:
        raise ConfigError(f"{ctx.what}: a temporal layer needs (batch, channels, time, ...) input here")
    if len(ctx.shape) != rank:
        raise ConfigError(f"{ctx.what}: expects {rank - 1} spatial dims per frame, the frames here are {ctx.shape}")


def _conv(conv: nn.Conv1d | nn.Conv3d, ctx: Ctx) -> StreamLayer:
    rank = len(conv.kernel_size)
    _rank_check(conv, ctx, rank)
    stride = _temporal_stride(ctx, conv.stride[0])
    if conv.padding_mode != "zeros":
        raise ConfigError(
            f"{ctx.what}: padding_mode={conv.padding_mode!r} reads frames from the end or mirrors the future at the start "
            "of a sequence; a stream cannot do that (use zero padding)"
        )
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    if conv.padding == "same":
        if rank > 1:
            raise ConfigError(f"{ctx.what}: padding='same' on a 3D convolution: give the padding as numbers")
        own = (span // 2, span - span // 2)
    elif conv.padding == "valid":
        own = (0, 0)
    else:
        own = (conv.padding[0], conv.padding[0])
    left, right, value = _pad_fill(ctx, *own, 0.0)
    layer = ConvStep(conv, ctx, left, value)
    layer.length_change, layer.stride = left + right - span, stride
    return layer


def _ints(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _pool(pool: nn.Module, ctx: Ctx) -> StreamLayer:
    rank = 3 if isinstance(pool, (nn.AvgPool3d, nn.MaxPool3d)) else 1
    _rank_check(pool, ctx, rank)
    is_avg = isinstance(pool, (nn.AvgPool1d, nn.AvgPool3d))
    k, s, p = (_ints(v, rank) for v in (pool.kernel_size, pool.stride, pool.padding))
    d = _ints(getattr(pool, "dilation", 1), rank)
    stride = _temporal_stride(ctx, s[0])
    if pool.ceil_mode or getattr(pool, "return_indices", False):
        raise ConfigError(f"{ctx.what}: ceil_mode / return_indices cannot stream")
    if is_avg and getattr(pool, "divisor_override", None):
        raise ConfigError(f"{ctx.what}: divisor_override is not supported")
    left, right, value = _pad_fill(ctx, p[0], p[0], 0.0 if is_avg else float("-inf"))
    if is_avg and left + right and not pool.count_include_pad:
        raise ConfigError(f"{ctx.what}: count_include_pad=False changes the divisor at the sequence ends; it cannot stream")
    spatial = None
    if rank == 3 and (k[1:] != (1, 1) or s[1:] != (1, 1) or p[1:] != (0, 0)):
        spatial = (nn.AvgPool2d(k[1:], s[1:], p[1:], count_include_pad=pool.count_include_pad) if is_avg
                   else nn.MaxPool2d(k[1:], s[1:], p[1:], dilation=d[1:]))
    layer = PoolStep("avg" if is_avg else "max", ctx, k[0], d[0], left, value, spatial)
    layer.length_change, layer.stride = left + right - (k[0] - 1) * d[0], stride
    return layer


def _adaptive(pool: nn.Module, ctx: Ctx) -> StreamLayer:
    rank = 3 if isinstance(pool, (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)) else 1
    _rank_check(pool, ctx, rank)
    is_avg = isinstance(pool, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d))
    out = _ints(pool.output_size, rank)
    spatial = None
    if rank == 3 and out[1:] != (None, None):
        spatial = (nn.AdaptiveAvgPool2d if is_avg else nn.AdaptiveMaxPool2d)(out[1:])
    if out[0] is None:
        return _finish(Pointwise(spatial or nn.Identity()), ctx)
    if out[0] != 1:
        raise ConfigError(f"{ctx.what}: a temporal output size of {out[0]} cannot stream (1, the global pool of a clip, or None)")
    if ctx.length is None:
        raise ConfigError(
            f"{ctx.what}: a global temporal pool over a whole sequence cannot stream; if this is a clip model, convert "
            "edgeseq.models.continual.OfflineModel(net, frame_shape, window=CLIP_FRAMES)"
        )
    layer = PoolStep("avg" if is_avg else "max", ctx, ctx.length, 1, 0, 0.0, spatial)
    layer.length_change = 1 - ctx.length
    return layer


def _finish(layer: StreamLayer, ctx: Ctx) -> StreamLayer:
    """Shape of a frame-wise layer's output, found by running it on zeros."""
    with torch.no_grad():
        layer.shape_out = tuple(layer.step(torch.zeros(1, *ctx.shape), (), None)[0].shape[1:])
    return layer


def _batchnorm(bn: nn.modules.batchnorm._BatchNorm, ctx: Ctx) -> StreamLayer:
    if not bn.track_running_stats or bn.running_mean is None:
        raise ConfigError(f"{ctx.what}: BatchNorm without running statistics normalises over the whole sequence; it cannot stream")
    if ctx.layout != "bct" and ctx.timed:
        raise ConfigError(f"{ctx.what}: BatchNorm normalises dim 1, which is time in a (batch, time, features) stack")
    return Affine(bn, len(ctx.shape) - 1)


def _activation(module: nn.Module, ctx: Ctx) -> StreamLayer:
    return Pointwise(module)


def _features(module: nn.Module, ctx: Ctx) -> StreamLayer:
    """Linear / LayerNorm act on the last axis: per frame in a (batch, time, features) stack or after the clip's pool."""
    if ctx.layout == "bct" and ctx.timed:
        raise ConfigError(
            f"{ctx.what}: {type(module).__name__} acts on the last axis, which is time (or space) in a (batch, channels, "
            "time, ...) stack; use a 1x1 convolution, or put it after the pooling and Flatten of a clip model"
        )
    if isinstance(module, nn.LayerNorm):
        module = FrameLayerNorm(module)
    return _finish(Pointwise(module), ctx)


def _flatten(module: nn.Flatten, ctx: Ctx) -> StreamLayer:
    if module.start_dim != 1 or module.end_dim != -1:
        raise ConfigError(f"{ctx.what}: only Flatten(start_dim=1) is supported")
    if ctx.timed and ctx.length != 1:
        raise ConfigError(f"{ctx.what}: Flatten would merge the time axis into the features; pool time away first")
    layer = _finish(Pointwise(module), ctx)
    return layer


def _transformer(layer: nn.TransformerEncoderLayer, ctx: Ctx) -> StreamLayer:
    if ctx.layout != "btc" or not layer.self_attn.batch_first:
        raise ConfigError(f"{ctx.what}: a TransformerEncoderLayer converts with batch_first=True inside "
                          "OfflineModel(..., layout='btc')")
    if ctx.length is None:
        raise ConfigError(
            f"{ctx.what}: attention over a whole sequence has no constant-memory step; convert it as a window model: "
            "edgeseq.models.continual.OfflineModel(net, frame_shape, window=W, layout='btc')"
        )
    if ctx.shape != (layer.self_attn.embed_dim,):
        raise ConfigError(f"{ctx.what}: expects {layer.self_attn.embed_dim} features per frame, gets {ctx.shape}")
    return AttentionStep(layer, ctx, ctx.length)


def _encoder(enc: nn.TransformerEncoder, ctx: Ctx) -> StreamLayer:
    if len(enc.layers) != 1:
        raise ConfigError(
            f"{ctx.what}: {len(enc.layers)} encoder layers: a single-output continual attention layer computes only the "
            "newest frame, so only one attention layer (the last time-mixing layer of the model) converts exactly"
        )
    inner = replace(ctx, what=f"{ctx.what}.layers.0")
    layers = [_transformer(enc.layers[0], inner)]
    if enc.norm is not None:
        layers.append(Pointwise(enc.norm))
    return Chain(layers)


register_layer(nn.Conv1d, _conv)
register_layer(nn.Conv3d, _conv)
for _t in (nn.AvgPool1d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool3d):
    register_layer(_t, _pool)
for _t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool3d):
    register_layer(_t, _adaptive)
for _t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_layer(_t, _batchnorm)
for _t in ACTIVATIONS:
    register_layer(_t, _activation)
for _t in (nn.Linear, nn.LayerNorm):
    register_layer(_t, _features)
register_layer(nn.Flatten, _flatten)
register_layer(nn.TransformerEncoderLayer, _transformer)
register_layer(nn.TransformerEncoder, _encoder)


def _find_layer(module: nn.Module) -> LayerConverter | None:
    for cls in type(module).__mro__:
        if cls in LAYERS:
            return LAYERS.get(cls)
    return None


def convert_stack(module: nn.Module, ctx: Ctx) -> tuple[Chain, Ctx]:
    """Convert ``module`` (a layer or a nested container) -> (Chain, the context after it)."""
    items = list(module) if isinstance(module, nn.Sequential) else [module]
    where = ctx.what if ctx.what != "module" else ""
    layers: list[StreamLayer] = []
    ctx = replace(ctx, pending=Pending())
    for i, layer in enumerate(items):
        label = f"{where}{i}" if isinstance(module, nn.Sequential) else (where or "module")
        ctx.what = f"{label} ({type(layer).__name__})"
        pending = ctx.pending
        if isinstance(layer, nn.ConstantPad1d):
            left, right = layer.padding
            if pending.value is not None and (pending.left or pending.right) and layer.value != pending.value:
                raise ConfigError(f"{ctx.what}: two paddings with different values in a row cannot stream")
            ctx.pending = Pending(pending.left + left, pending.right + right, float(layer.value))
            continue
        if isinstance(layer, (nn.Sequential, Residual, Branches)) and (pending.left or pending.right):
            raise ConfigError(f"{ctx.what}: padding must come right before the layer that consumes it")
        if isinstance(layer, nn.Sequential):
            chain, ctx = convert_stack(layer, replace(ctx, what=f"{label}."))
            layers.append(chain)
            continue
        if isinstance(layer, (Residual, Branches)):
            layers.append(_branches(layer, ctx, label))
            ctx = replace(ctx, shape=layers[-1].shape_out,
                          length=None if ctx.length is None else ctx.length + layers[-1].length_change, pending=Pending())
            continue
        if ctx.single and (_find_layer(layer) is not None and layer_mixes_time(layer)):
            raise ConfigError(
                f"{ctx.what}: comes after the single-output attention layer {ctx.single}, which computes only the newest "
                "frame; a time-mixing layer after it would need the others (retroactive attention is not supported)"
            )
        conv = _find_layer(layer)
        if conv is None:
            raise UnsupportedModuleError(
                f"{ctx.what}: no continual converter for {type(layer).__module__}.{type(layer).__qualname__}; supported: "
                f"{', '.join(sorted(t.__name__ for t in LAYERS.keys()))}, ConstantPad1d, Sequential, Residual, Branches. "
                "Register one with edgeseq.models.continual_step.register_layer(YourModule, convert)"
            )
        step = conv.convert(layer, ctx)
        if (pending.left or pending.right) and not isinstance(step, Window):
            raise ConfigError(f"{ctx.what}: padding must come right before the temporal layer that consumes it")
        if isinstance(step, Affine) and layers and isinstance(layers[-1], ConvStep) and layers[-1].per_frame:
            layers[-1].absorb(step)  # a BatchNorm right after a 3D convolution: folded into its weights
            step = Folded()  # keeps the layer indices (and so the state names) those of the offline stack
        layers.append(step)
        ctx = _advance(ctx, layer, step)
    if ctx.pending.left or ctx.pending.right:
        raise ConfigError(f"{where or 'module'}: padding at the end of a stack has no layer to consume it")
    return Chain(layers), ctx


def _branches(layer: Residual | Branches, ctx: Ctx, label: str) -> BranchesStep:
    """A residual (skip + body, the skip's state named after it) or parallel branches -> BranchesStep."""
    if isinstance(layer, Residual):
        names, modules, reduce = ["body", "skip"], [layer.body, nn.Sequential()], "sum"
    else:
        names, modules, reduce = [f"b{i}" for i in range(len(layer.branches))], list(layer.branches), layer.reduce
    kind = type(layer).__name__
    chains, afters = [], []
    for name, module in zip(names, modules):
        chain, after = convert_stack(module, replace(ctx, what=f"{label}.{name}.", in_branch=f"{kind} {label}"))
        chains.append(chain)
        afters.append(after)
    if isinstance(layer, Residual) and (afters[0].shape != ctx.shape or afters[0].timed != ctx.timed):
        raise ConfigError(f"{ctx.what}: a residual body must keep the frame shape ({ctx.shape} -> {afters[0].shape})")
    shapes = [a.shape for a in afters]
    if reduce == "sum" and len(set(shapes)) > 1 or reduce == "cat" and len({s[1:] for s in shapes}) > 1:
        raise ConfigError(f"{ctx.what}: {kind} branches give frames of shapes {shapes}, which {reduce} cannot combine")
    if any(a.single for a in afters):
        raise ConfigError(f"{ctx.what}: a single-output attention layer inside {kind} is not supported")
    return BranchesStep(names, chains, reduce, ctx.shape)


def layer_mixes_time(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.Conv1d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool3d,
                              nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.TransformerEncoderLayer, nn.TransformerEncoder)) or (
        isinstance(layer, (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)) and _ints(layer.output_size, 3)[0] is not None)


def _advance(ctx: Ctx, layer: nn.Module, step: StreamLayer) -> Ctx:
    """The context after ``step``: frame shape, window length, time axis."""
    length = ctx.length
    if length is not None:
        length += step.length_change
        if length < 1:
            raise ConfigError(f"{ctx.what}: the window is too short for the model: no frames are left after this layer")
    single = ctx.single
    if isinstance(step, AttentionStep) or (isinstance(step, Chain) and any(isinstance(m, AttentionStep) for m in step.modules())):
        single = ctx.what
    timed = ctx.timed and not isinstance(layer, nn.Flatten)
    return replace(ctx, shape=step.shape_out or ctx.shape, length=length, timed=timed, single=single, pending=Pending())


class ContinualStep(StepModule):
    """A converted temporal stack: one frame in, one frame out; ``state_spec.delay`` frames late.
    ``offline_cost``: FLOPs of recomputing the offline model for one output (see :mod:`edgeseq.flops`)."""

    offline_cost: dict | None = None

    def __init__(self, net: nn.Module, frame_shape: tuple[int, ...], info: StepInfo, layout: str = "bct",
                 window: int | None = None, stream_padding: bool = False):
        super().__init__()
        chain, after = convert_stack(net, Ctx(tuple(frame_shape), layout, window, stream_padding=stream_padding))
        self.chain = chain
        self.frame_shape = tuple(frame_shape)
        self.d_in, self.d_out = math.prod(frame_shape), math.prod(after.shape)
        timing = _assign_upstream(chain, Timing())
        # the frame counter: counts up to the last output's first frame, then wraps within one output period,
        # so that (t - first) mod rate stays right for every layer (their rates divide the last one's)
        self.first, self.period = timing.first, timing.rate
        self.counted = any(isinstance(m, Buffered) and m.span and (m.upstream or m.rate > 1) for m in chain.modules())
        tensors = chain.states() + ((StateTensor("frames", (1,)),) if self.counted else ())
        # a window model's output m is the window of frames m .. m + W - 1: ready W - 1 frames late
        exact_windows = window is not None and not stream_padding
        delay = window - 1 if exact_windows else timing.first
        receptive = window if exact_windows else timing.span + 1
        self.state_spec = StateSpec(tensors, delay=delay, receptive_field=receptive, output_stride=timing.rate)
        self.info = info

    def image_states(self) -> tuple[str, ...]:
        # the per-frame buffers and delay lines of spatial frames; (C, 1, 1) ones are the same bytes in either layout
        return tuple(t.name for t in self.state_spec.tensors if len(t.shape) == 3 and t.shape[1] * t.shape[2] > 1)

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = x.reshape(x.shape[0], *self.frame_shape)
        if not self.counted:
            y, new = self.chain.step(x, tuple(state), None)
            return y.reshape(y.shape[0], -1), new
        t = state[-1]
        y, new = self.chain.step(x, tuple(state[:-1]), t)
        wrap = torch.clamp(t + 2.0 - float(self.first + self.period), 0.0, 1.0)  # 1 once t + 1 reaches first + period
        return y.reshape(y.shape[0], -1), (*new, t + 1.0 - float(self.period) * wrap)


@dataclass(frozen=True)
class Timing:
    """Where a point of the stack stands in input frames: its first valid frame, frames between valid frames,
    and the input frames one of its values depends on, minus one."""

    first: int = 0
    rate: int = 1
    span: int = 0


def _assign_upstream(layer: StreamLayer, at: Timing) -> Timing:
    """Tell every buffered layer when its input is fresh; returns the timing after ``layer``."""
    if isinstance(layer, Chain):
        for sub in layer.layers:
            at = _assign_upstream(sub, at)
        return at
    if isinstance(layer, BranchesStep):
        for b in layer.branches:
            _assign_upstream(b, at)
    if isinstance(layer, Buffered):
        layer.upstream, layer.rate = at.first, at.rate
    return Timing(at.first + layer.delay * at.rate, at.rate * layer.stride, at.span + layer.span * at.rate)


def _first_frame(net: nn.Module) -> tuple[int, ...]:
    for m in net.modules():
        if isinstance(m, nn.Conv1d):
            return (m.in_channels,)
        if isinstance(m, (nn.Conv3d, nn.TransformerEncoderLayer, nn.Linear)):
            break
    raise UnsupportedModuleError(
        f"{type(net).__name__}: the frame shape is not known from a leading nn.Conv1d; convert "
        "edgeseq.models.continual.OfflineModel(net, frame_shape=..., window=..., layout=...) instead"
    )


def with_offline_cost(step: ContinualStep, reference: Callable[[torch.Tensor], torch.Tensor],
                      frames: int | None = None) -> ContinualStep:
    """Record what recomputing the offline model costs per output: ``reference`` on the frames one output needs
    (default: the receptive field; one window of a clip / window model), counted from the graph."""
    from edgeseq.flops import count_flops

    frames = frames or step.state_spec.receptive_field
    flops = count_flops(reference, torch.zeros(1, frames, step.d_in))
    step.offline_cost = {"offline_flops_per_output": flops, "offline_frames": frames}
    return step


def convert_temporal_cnn(model: TemporalCNN) -> ContinualStep:
    from edgeseq.config import config_to_dict

    c = model.config
    info = StepInfo("continual", config_to_dict(c), c.task, getattr(model, "train_length", None))
    return with_offline_cost(ContinualStep(model.net, (c.d_in,), info), model.forward_steps)


def _layers(net: nn.Module) -> list[str]:
    return [type(m).__name__ for m in (net if isinstance(net, nn.Sequential) else [net])]


def convert_module(net: nn.Module) -> ContinualStep:
    """A plain temporal stack (``nn.Sequential`` of supported layers, or one ``nn.Conv1d``) on (B, C, T)."""
    info = StepInfo("continual", {"source": type(net).__name__, "layers": _layers(net), "repr": repr(net)}, "sequence", None)
    step = ContinualStep(net, _first_frame(net), info)
    return with_offline_cost(step, lambda x: reference_channels_first(net, x))


def convert_offline(model: OfflineModel) -> ContinualStep:
    cfg = {"source": type(model.net).__name__, "layers": _layers(model.net), "frame_shape": list(model.frame_shape),
           "window": model.window, "layout": model.layout, "padding": model.padding, "repr": repr(model.net)}
    info = StepInfo("continual", cfg, "sequence", None)
    step = ContinualStep(model.net, model.frame_shape, info, model.layout, model.window, model.padding == "stream")
    if model.window is None:
        return with_offline_cost(step, model.forward_steps)
    # a clip deployment runs the clip model on the last W frames for every new output
    return with_offline_cost(step, lambda x: model.net(model._to_net(x)), model.window)


def reference_channels_first(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A plain stack runs on (B, C, T); edgeseq's convention is (B, T, C)."""
    return net(x.transpose(1, 2)).transpose(1, 2)


register_converter(TemporalCNN, convert_temporal_cnn, lambda m, x: m.forward_steps(x))
register_converter(OfflineModel, convert_offline, lambda m, x: m.forward_steps(x))
register_converter(nn.Sequential, convert_module, reference_channels_first)
register_converter(nn.Conv1d, convert_module, reference_channels_first)

"""Ring-buffer layers: the last frames of a stream, oldest first, reduced to one output frame per step.

:class:`Window` keeps the buffer (one tensor for 1D frames, one per frame for spatial ones) and the warm-up
masking; :class:`ConvStep` (a convolution's temporal kernel over the buffer, its spatial part inside the frame)
and :class:`PoolStep` (temporal average / max) reduce it. The continual family's converter
(:mod:`edgeseq.models.continual_step`) and the graph converter (:mod:`edgeseq.graph.ops`) both emit them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.step import State, StateTensor
from edgeseq.stream.base import LOWEST, Affine, Buffered, Ctx, channels_last, dilated_frames, fresh_mask

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
            y = self.conv1d(window)
            return y.reshape(y.shape[0], y.shape[1])
        raise AssertionError("spatial frames are reduced by reduce_frames")

    def conv1d(self, window: torch.Tensor) -> torch.Tensor:
        """The kernel at one output frame, (B, C, span + 1) -> (B, C_out, 1). Traced for export it is one Conv op
        (see :meth:`use_linear` for why); run eagerly (the proof at conversion, the eager session) a dense or
        depthwise kernel is a product with its taps instead: torch's conv1d on a one-frame window cost 210 us a
        call here, the product a few, and the proof of a 20-layer model rolls out 256 frames."""
        depthwise = self.groups == self.weight.shape[0] == window.shape[1]
        if torch.compiler.is_compiling() or not (self.groups == 1 or depthwise):
            return nn.functional.conv1d(window, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
        taps = window[:, :, :: self.dilation[0]]  # (B, C_in, K): a strided slice is one op here, not exported
        if self.groups == 1:
            y = nn.functional.linear(taps.reshape(taps.shape[0], -1), self.weight.reshape(self.weight.shape[0], -1), self.bias)
        else:  # depthwise: each channel against its own K taps
            y = (taps * self.weight[:, 0]).sum(-1)
            y = y if self.bias is None else y + self.bias
        return y.unsqueeze(-1)

    def step_timed(self, x: torch.Tensor, state: State, t: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """:meth:`step` for a 1D frame that keeps its length-1 time axis, (B, C, 1) -> (B, C_out, 1): the layout
        a traced (B, C, T) model holds between its convolutions, so the graph converter's step needs no reshape
        around each one (4 view ops per convolution fewer in the exported program)."""
        window = torch.cat([state[0], x], dim=2) if self.span else x
        if self.linear is not None:
            y = self.linear(self.taps(window).reshape(window.shape[0], -1)).reshape(x.shape[0], -1, 1)
        else:
            y = self.conv1d(window)
        return y, ((self.keep_ready(window[:, :, 1:], state[0], t),) if self.span else ())

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
        else:  # elementwise maxima over the k taps (XNNPACK delegates them; max_pool1d left 3 ops outside)
            taps = dilated_frames(window, self.dil)
            y = taps[:, :, :1]  # slices, not selects (XNNPACK leaves select_copy outside)
            for i in range(1, self.k):
                y = torch.maximum(y, taps[:, :, i:i + 1])
            y = y.reshape(B, C, *spatial)
        return y

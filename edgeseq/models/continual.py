"""Family ``continual``: temporal CNNs trained offline, streamed one frame at a time (Continual Inference
Networks, Hedegaard & Iosifidis; Continual 3D CNNs, arXiv:2106.00050).

An offline temporal convolution recomputes every output of a window; its continual form keeps the last
``(K - 1) * dilation`` input frames in a ring buffer and computes only the newest output, with the work of
one frame. Zero padding on the left is the buffer's initial zeros; padding on the right (a non-causal,
"same"-padded layer) becomes a *delay*: the step's output at frame n is the offline output at frame
n - delay, and the first ``delay`` outputs are not ready. Delays add up through a stack, and a residual
connection delays its skip path to match its body.

Module tree of the parallel form (:class:`TemporalCNN`, input (B, T, d_in), output (B, T_out, d_out))::

    TemporalCNN
      net   nn.Sequential on (B, C, T):
              per level i: Residual(Conv1d(c, c, K, dilation g^i) -> ReLU)   (Conv1d + ReLU when c changes)
              optional AvgPool1d / MaxPool1d(k, stride 1)
              Conv1d(c, d_out, 1)                                            per-frame head

``padding="causal"`` pads only the left (``nn.ConstantPad1d``; delay 0), ``"same"`` pads both sides
(delay (K - 1) * dilation / 2 per layer). Plain ``nn.Sequential`` stacks of the supported layers convert
too (see :mod:`edgeseq.models.continual_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.config import check_fields
from edgeseq.errors import ConfigError
from edgeseq.families import Family, register_family
from edgeseq.models.heads import task_output

TASKS = ("sequence", "classify")
PADDINGS = ("causal", "same")
POOLS = ("none", "avg", "max")


@dataclass(frozen=True)
class ContinualConfig:
    d_in: int  # input channels per frame
    d_out: int  # outputs per frame (classes for task="classify")
    channels: tuple[int, ...] = (32, 32, 32)  # channels of each temporal convolution level
    kernel_size: int = 3  # temporal kernel K of every level
    dilation_growth: int = 2  # level i has dilation growth**i
    padding: str = "causal"  # causal (delay 0) or same (delay (K-1)*dilation/2 per level)
    pool: str = "none"  # none, avg or max: a temporal pooling (stride 1) before the head
    pool_kernel: int = 3  # kernel of that pooling
    residual: bool = True  # residual connections around levels whose channels do not change
    task: str = "sequence"  # sequence: an output every frame; classify: the output at the last frame

    def __post_init__(self):
        def bad(msg):
            raise ConfigError(f"continual config: {msg}")

        check_fields(self, "continual", choices={"task": TASKS, "padding": PADDINGS, "pool": POOLS},
                     positive=("d_in", "d_out", "kernel_size", "dilation_growth", "pool_kernel"))
        if not self.channels or any(int(c) < 1 for c in self.channels):
            bad(f"channels must be a non-empty list of positive sizes, got {list(self.channels)}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.padding == "same" and self.kernel_size % 2 == 0:
            bad(f"padding='same' needs an odd kernel_size, got {self.kernel_size}")


class Residual(nn.Module):
    """x + body(x) on (B, C, T, ...). A body that shortens the sequence (unpadded temporal kernels, as in a clip
    model) is added to the *latest* frames of x: the skip is cropped at the start to the body's length."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x[:, :, x.shape[2] - y.shape[2]:] + y


class Branches(nn.Module):
    """Parallel branches on the same (B, C, T, ...) input, combined by ``reduce="sum"`` or ``"cat"`` (channels).
    Branches that shorten the sequence by different amounts are aligned at their latest frames: each is cropped
    at the start to the shortest. ``Residual(body)`` is ``Branches(nn.Identity(), body)``."""

    REDUCES = ("sum", "cat")

    def __init__(self, *branches: nn.Module, reduce: str = "sum"):
        super().__init__()
        if len(branches) < 2:
            raise ConfigError(f"Branches: needs at least two branches, got {len(branches)}")
        if reduce not in self.REDUCES:
            raise ConfigError(f"Branches: reduce must be one of {', '.join(self.REDUCES)}, got {reduce!r}")
        self.branches = nn.ModuleList(branches)
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [b(x) for b in self.branches]
        n = min(y.shape[2] for y in ys)
        ys = [y[:, :, y.shape[2] - n:] for y in ys]
        if self.reduce == "cat":
            return torch.cat(ys, dim=1)
        out = ys[0]
        for y in ys[1:]:
            out = out + y
        return out


LAYOUTS = ("bct", "btc")
CLIP_PADDINGS = ("clip", "stream")


class OfflineModel(nn.Module):
    """How a plain offline network meets a stream: its frame shape, its layout and (for clip / window models)
    the window it was trained on. Its ``forward_steps`` is the oracle the continual step is checked against.

    - ``net`` takes ``layout="bct"`` tensors (batch, channels, time, *spatial), the convolution convention, or
      ``"btc"`` (batch, time, features), the ``batch_first`` Transformer convention.
    - ``frame_shape``: one frame, (C,) or (C, H, W) for a 3D CNN on video frames; the stream carries it
      flattened, ``d_in = C * H * W``.
    - ``window=None``: ``net`` runs on the whole sequence (a TCN); its output at frame n is the step's at n + delay.
    - ``window=W``: a clip / window model (an X3D-like clip classifier, a Transformer encoder over W frames).
      With ``padding="clip"`` (the default) it is evaluated on every sliding window of W frames; each window's
      output is the clip's (B, d) output or, for a per-frame output (B, C, T', ...), its last frame. Output m is
      the window of frames m .. m + W - 1; the step gives it at frame m + W - 1 (a delay of W - 1 frames). Exact
      only without temporal padding inside the clip model (a clip is zero-padded at its edges, a stream is not).
    - ``window=W, padding="stream"``: the Continual 3D CNN reading of a clip model that pads time (X3D does):
      the padding frames come from the stream instead of zeros at every clip edge, and the clip's global temporal
      pool becomes a sliding pool over the frames it averages within a clip. The oracle is the network run once
      over the whole sequence that way (zero padding only at the start); its outputs differ from evaluating the
      clip model on each window (CoX3D, arXiv:2106.00050, measures the accuracy effect; retrain or fine-tune if
      it matters). Output m is ready at frame m + delay, the delay coming from the padding as for a TCN.
    """

    def __init__(self, net: nn.Module, frame_shape: tuple[int, ...] | int, window: int | None = None, layout: str = "bct",
                 padding: str = "clip", chunk: int = 256):
        super().__init__()
        frame_shape = (frame_shape,) if isinstance(frame_shape, int) else tuple(int(s) for s in frame_shape)
        if not frame_shape or any(s < 1 for s in frame_shape):
            raise ConfigError(f"OfflineModel: frame_shape must be positive sizes, got {frame_shape}")
        if layout not in LAYOUTS:
            raise ConfigError(f"OfflineModel: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "btc" and len(frame_shape) != 1:
            raise ConfigError(f"OfflineModel: layout 'btc' takes vector frames, got frame_shape {frame_shape}")
        if window is not None and int(window) < 1:
            raise ConfigError(f"OfflineModel: window must be >= 1 frames, got {window}")
        if padding not in CLIP_PADDINGS:
            raise ConfigError(f"OfflineModel: padding must be one of {', '.join(CLIP_PADDINGS)}, got {padding!r}")
        if padding == "stream" and (window is None or layout != "bct"):
            raise ConfigError("OfflineModel: padding='stream' is for clip models on (batch, channels, time, ...) with a window")
        self.padding = padding
        self.net, self.frame_shape, self.layout = net, frame_shape, layout
        self.window = None if window is None else int(window)
        self.chunk = chunk  # windows per batch of the sliding-window oracle
        self.d_in = math.prod(frame_shape)
        self.training = net.training  # wrapping does not switch a trained net (eval) back to training mode

    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> the net's layout."""
        x = x.reshape(*x.shape[:2], *self.frame_shape)
        return x if self.layout == "btc" else x.movedim(1, 2)

    def _from_net(self, y: torch.Tensor, last: bool) -> torch.Tensor:
        """The net's output -> (B, T', d_out); with ``last``, one output per input sequence (B, 1, d_out)."""
        if y.dim() == 2:  # the clip's output: the time axis was pooled away
            return y.unsqueeze(1)
        y = y if self.layout == "btc" else y.movedim(2, 1)  # (B, T', C, ...)
        if last:
            y = y[:, -1:]
        return y.flatten(2)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_in) -> (B, T_out, d_out): the whole sequence, or every sliding window of ``window`` frames."""
        if self.window is None:
            return self._from_net(self.net(self._to_net(x)), last=False)
        if self.padding == "stream":
            return self._stream_forward(x)
        B, T, _ = x.shape
        if T < self.window:
            return x.new_zeros(B, 0, 0)
        wins = x.unfold(1, self.window, 1).movedim(-1, 2)  # (B, N, W, d_in)
        flat = wins.reshape(-1, self.window, self.d_in)
        outs = [self._from_net(self.net(self._to_net(flat[i : i + self.chunk])), last=True)
                for i in range(0, flat.shape[0], self.chunk)]
        return torch.cat(outs).reshape(B, wins.shape[1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x)

    def clip_pool_frames(self) -> dict[int, int]:
        """Frames that each global temporal pool averages within one clip of ``window`` frames (by module id)."""
        seen: dict[int, int] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out: seen.update({id(mod): inp[0].shape[2]}))
                 for m in self.net.modules() if _global_temporal_pool(m)]
        try:
            with torch.no_grad():
                self.net(self._to_net(torch.zeros(1, self.window, self.d_in)))
        finally:
            for h in hooks:
                h.remove()
        return seen

    def _stream_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``padding="stream"``: the net over the whole sequence, each global temporal pool sliding over the frames
        it averages in a clip, the layers after it (Flatten, Linear, ...) applied frame by frame."""
        frames = self.clip_pool_frames()

        def run(module: nn.Module, h: torch.Tensor, timed: bool) -> tuple[torch.Tensor, bool]:
            if isinstance(module, nn.Sequential):
                for m in module:
                    h, timed = run(m, h, timed)
                return h, timed
            if isinstance(module, Residual):
                y, _ = run(module.body, h, timed)
                return h[:, :, h.shape[2] - y.shape[2]:] + y, timed
            if not timed:  # (B, T', F): frame by frame, time folded into the batch
                B, T = h.shape[:2]
                y = module(h.reshape(B * T, *h.shape[2:]))
                return y.reshape(B, T, *y.shape[1:]), False
            if _global_temporal_pool(module):
                k = frames[id(module)]
                avg = isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d))
                pooled = h.unfold(2, k, 1)  # (B, C, T - k + 1, ..., k)
                h = pooled.mean(-1) if avg else pooled.amax(-1)
                if h.dim() == 5:
                    h = (nn.functional.adaptive_avg_pool3d if avg else nn.functional.adaptive_max_pool3d)(
                        h, (None, *module.output_size[1:]) if isinstance(module.output_size, tuple) else (None, 1, 1))
                return h, True
            if isinstance(module, nn.Flatten):  # (B, C, T', 1, 1) -> (B, T', C)
                return h.movedim(2, 1).flatten(2), False
            return module(h), True

        y, timed = run(self.net, self._to_net(x), True)
        return y if not timed else self._from_net(y, last=False)


def _global_temporal_pool(m: nn.Module) -> bool:
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)):
        return m.output_size in (1, (1,))
    if isinstance(m, (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)):
        out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 3
        return out[0] == 1
    return False


def _padded(conv: nn.Conv1d, padding: str) -> nn.Module:
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    pad = (span, 0) if padding == "causal" else (span // 2, span // 2)
    return nn.Sequential(nn.ConstantPad1d(pad, 0.0), conv)


class TemporalCNN(nn.Module):
    """Parallel (offline) form: (B, T, d_in) -> (B, T_out, d_out); T_out = T for every config of the family."""

    def __init__(self, config: ContinualConfig):
        super().__init__()
        self.config = config
        self.train_length: int | None = None
        c = config
        layers: list[nn.Module] = []
        width = c.d_in
        for i, ch in enumerate(c.channels):
            conv = nn.Conv1d(width, ch, c.kernel_size, dilation=c.dilation_growth**i)
            level = nn.Sequential(_padded(conv, c.padding), nn.ReLU())
            layers.append(Residual(level) if (c.residual and ch == width) else level)
            width = ch
        if c.pool != "none":
            k = c.pool_kernel
            pad = (k - 1, 0) if c.padding == "causal" else ((k - 1) // 2, k - 1 - (k - 1) // 2)
            fill = 0.0 if c.pool == "avg" else float("-inf")
            pool = nn.AvgPool1d(k, stride=1) if c.pool == "avg" else nn.MaxPool1d(k, stride=1)
            layers.append(nn.Sequential(nn.ConstantPad1d(pad, fill), pool))
        layers.append(nn.Conv1d(width, c.d_out, 1))
        self.net = nn.Sequential(*layers)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return task_output(self.forward_steps(x), self.config.task, lengths)


register_family(Family(
    "continual", ContinualConfig, TemporalCNN, "temporal CNN streamed frame by frame (continual inference)",
    tiny=(("channels", (8, 8)), ("kernel_size", 3), ("padding", "same"), ("pool", "max")),
))

from edgeseq.models import continual_step as _continual_step  # noqa: E402,F401 - registers the converters

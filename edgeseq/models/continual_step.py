"""Continual step form: offline temporal stacks (``nn.Sequential``, :class:`~edgeseq.models.continual.TemporalCNN`,
:class:`~edgeseq.models.continual.OfflineModel`) -> one-frame steps with ring-buffer state and delay bookkeeping.

The layers it emits are the stream vocabulary of :mod:`edgeseq.stream`, which the graph converter
(:mod:`edgeseq.graph`) emits too; this module only walks a stack layer by layer.

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

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.continual import Branches, OfflineModel, Residual, TemporalCNN
from edgeseq.registry import Registry
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule
from edgeseq.stream import (  # the stream layers this converter emits (re-exported: register_layer's users build them)
    Affine, BranchesStep, Buffered, Chain, ConvStep, Ctx, Folded, FrameLayerNorm, Pending, Pointwise, PoolStep,
    StreamLayer, Window,
)
from edgeseq.stream.attention import AttentionStep

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

"""Continual step form: offline temporal layers -> one-frame steps with ring-buffer state and delay bookkeeping.

A converted layer (:class:`StreamLayer`) maps one input frame (B, C) to one output frame and carries its own
state. Per layer, with span = (K - 1) * dilation and left padding l (its own plus a preceding
``nn.ConstantPad1d``): the ring buffer holds ``span`` frames, initially the padding value, and the delay is
``span - l``. Right padding only adds outputs at the end of an offline sequence, which a stream never reaches.

Supported (``LAYERS``, keyed by module type; :func:`register_layer` adds more): ``nn.Conv1d`` (stride 1, any
dilation and groups, zero padding incl. ``"same"``), ``nn.AvgPool1d`` / ``nn.MaxPool1d`` (stride 1),
``nn.ConstantPad1d`` (merged into the next temporal layer), pointwise layers (activations, ``BatchNorm1d`` in
eval mode, ``Dropout``, ``Identity``), nested ``nn.Sequential`` and :class:`~edgeseq.models.continual.Residual`
(its skip path delayed to match its body). Anything else is refused by name, with how to register it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.continual import Residual, TemporalCNN
from edgeseq.registry import Registry
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

LOWEST = -3.4028234663852886e38  # float32's lowest finite value: stands in for -inf padding in a buffer


def _prefixed(prefix: str, tensors: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
    """A sub-layer's state tensors, named ``<prefix>.<name>`` inside its container."""
    return tuple(StateTensor(f"{prefix}.{t.name}", t.shape, t.dtype, t.fill) for t in tensors)


class StreamLayer(nn.Module):
    """One converted layer: ``step(x (B, C_in), state) -> (y (B, C_out), new state)``."""

    delay: int = 0  # output at frame n = offline output at frame n - delay
    span: int = 0  # frames of history it reads besides the newest
    channels_out: int | None = None  # None: as many as come in

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


class Window(StreamLayer):
    """Ring buffer of the last ``span`` frames (oldest first), then ``reduce`` over (B, C, span + 1)."""

    def __init__(self, channels: int, span: int, left: int, fill: float, what: str):
        super().__init__()
        if left > span:
            raise ConfigError(
                f"{what}: left padding {left} exceeds its receptive span {span}: its first outputs would come before "
                "any input frame, which a stream cannot produce"
            )
        self.c_in, self.span, self.delay, self.fill = channels, span, span - left, max(fill, LOWEST)
        self.upstream = 0  # delay of the layers before: their first `upstream` outputs are not ready

    def states(self):
        return (StateTensor("buf", (self.c_in, self.span), fill=self.fill),) if self.span else ()

    def step(self, x, state, t):
        if not self.span:
            return self.reduce(x.unsqueeze(-1)), ()
        window = torch.cat([state[0], x.unsqueeze(-1)], dim=-1)
        new = window[:, :, 1:]
        if self.upstream:  # not-ready input frames stand where the offline model has padding: keep them out
            new = torch.where((t >= self.upstream).view(-1, 1, 1), new, state[0])
        return self.reduce(window), (new,)

    def reduce(self, window: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ConvStep(Window):
    def __init__(self, conv: nn.Conv1d, left: int, fill: float, what: str):
        d, K = conv.dilation[0], conv.kernel_size[0]
        super().__init__(conv.in_channels, (K - 1) * d, left, fill, what)
        self.dilation, self.groups = d, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.channels_out = conv.out_channels

    def reduce(self, window):
        y = nn.functional.conv1d(window, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
        return y.view(-1, self.channels_out)


class AvgStep(Window):
    def __init__(self, channels: int, k: int, left: int, fill: float, what: str):
        super().__init__(channels, k - 1, left, fill, what)
        self.register_buffer("mean_col", torch.full((k, 1), 1.0 / k))

    def reduce(self, window):
        return torch.matmul(window, self.mean_col).view(-1, self.c_in)


class MaxStep(Window):
    def __init__(self, channels: int, k: int, dilation: int, left: int, fill: float, what: str):
        super().__init__(channels, (k - 1) * dilation, left, fill, what)
        self.k, self.dilation = k, dilation

    def reduce(self, window):
        return nn.functional.max_pool1d(window, self.k, stride=1, dilation=self.dilation).view(-1, self.c_in)


class DelayLine(StreamLayer):
    """x delayed by ``delay`` frames (the skip path of a residual whose body has that delay)."""

    def __init__(self, channels: int, delay: int):
        super().__init__()
        self.c, self.delay = channels, delay

    def states(self):
        return (StateTensor("line", (self.c, self.delay)),) if self.delay else ()

    def step(self, x, state, t):
        if not self.delay:
            return x, ()
        line = torch.cat([state[0], x.unsqueeze(-1)], dim=-1)
        return line[:, :, 0], (line[:, :, 1:],)


class Chain(StreamLayer):
    """Layers one after another; delays and spans add up."""

    def __init__(self, layers: list[StreamLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.delay = sum(layer.delay for layer in layers)
        self.span = sum(layer.span for layer in layers)
        outs = [layer.channels_out for layer in layers if layer.channels_out is not None]
        self.channels_out = outs[-1] if outs else None

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


class ResidualStep(StreamLayer):
    def __init__(self, body: Chain, skip: DelayLine):
        super().__init__()
        self.body, self.skip = body, skip
        self.delay, self.span, self.channels_out = body.delay, body.span, body.channels_out

    def states(self):
        return _prefixed("body", self.body.states()) + _prefixed("skip", self.skip.states())

    def step(self, x, state, t):
        nb = len(self.body.states())
        y, sb = self.body.step(x, state[:nb], t)
        s, ss = self.skip.step(x, state[nb:], t)
        return y + s, tuple(sb) + tuple(ss)


# ------------------------------------------------------------------------------------------- the converter
@dataclass
class Pending:
    """Padding met before the temporal layer that consumes it: (left, right, value)."""

    left: int = 0
    right: int = 0
    value: float | None = None


@dataclass(frozen=True)
class LayerConverter:
    module_type: type
    # convert(module, channels_in, pending padding, where) -> (StreamLayer, length change of the offline sequence)
    convert: Callable[[nn.Module, int, Pending, str], tuple[StreamLayer, int]]


LAYERS: Registry[LayerConverter] = Registry("continual layer")

POINTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Identity,
             nn.Dropout, nn.BatchNorm1d)


def register_layer(module_type: type, convert: Callable) -> LayerConverter:
    """Teach the continual converter a layer: ``convert(module, channels_in, pending, where) -> (StreamLayer, dT)``."""
    return LAYERS.register(module_type, LayerConverter(module_type, convert))


def _pad_fill(pending: Pending, own_left: int, own_right: int, own_value: float, what: str) -> tuple[int, int, float]:
    """Merge a preceding ConstantPad1d with the layer's own padding -> (left, right, value of the padding)."""
    padded_before = bool(pending.left or pending.right)
    if padded_before and (own_left or own_right) and pending.value != own_value:
        raise ConfigError(f"{what}: padding values {pending.value} and {own_value} meet in one layer; it cannot stream")
    value = pending.value if padded_before else own_value
    return pending.left + own_left, pending.right + own_right, value


def _conv1d(conv: nn.Conv1d, c_in: int, pending: Pending, what: str):
    if conv.stride[0] != 1:
        raise ConfigError(f"{what}: stride {conv.stride[0]} is not supported by the continual converter yet (stride 1 only)")
    if conv.padding_mode != "zeros":
        raise ConfigError(
            f"{what}: padding_mode={conv.padding_mode!r} reads frames from the end or mirrors the future at the start "
            "of a sequence; a stream cannot do that (use zero padding)"
        )
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    if conv.padding == "same":
        own = (span // 2, span - span // 2)
    elif conv.padding == "valid":
        own = (0, 0)
    else:
        own = (conv.padding[0], conv.padding[0])
    left, right, value = _pad_fill(pending, *own, 0.0, what)
    return ConvStep(conv, left, value, what), left + right - span


def _avgpool(pool: nn.AvgPool1d, c_in: int, pending: Pending, what: str):
    k, s, p = pool.kernel_size[0], pool.stride[0], pool.padding[0]
    if s != 1:
        raise ConfigError(f"{what}: stride {s} is not supported by the continual converter yet (stride 1 only; "
                          "AvgPool1d's default stride is its kernel size)")
    if pool.ceil_mode or (p and not pool.count_include_pad):
        raise ConfigError(f"{what}: ceil_mode / count_include_pad=False change the divisor at the sequence ends; it cannot stream")
    left, right, value = _pad_fill(pending, p, p, 0.0, what)
    return AvgStep(c_in, k, left, value, what), left + right - (k - 1)


def _maxpool(pool: nn.MaxPool1d, c_in: int, pending: Pending, what: str):
    k, s, p, d = (v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
    if s != 1:
        raise ConfigError(f"{what}: stride {s} is not supported by the continual converter yet (stride 1 only; "
                          "MaxPool1d's default stride is its kernel size)")
    if pool.ceil_mode or pool.return_indices:
        raise ConfigError(f"{what}: ceil_mode / return_indices cannot stream")
    left, right, value = _pad_fill(pending, p, p, float("-inf"), what)
    return MaxStep(c_in, k, d, left, value, what), left + right - (k - 1) * d


def _pointwise(module: nn.Module, c_in: int, pending: Pending, what: str):
    if isinstance(module, nn.BatchNorm1d) and not module.track_running_stats:
        raise ConfigError(f"{what}: BatchNorm1d without running statistics normalises over the whole sequence; it cannot stream")
    return Pointwise(module), 0


register_layer(nn.Conv1d, _conv1d)
register_layer(nn.AvgPool1d, _avgpool)
register_layer(nn.MaxPool1d, _maxpool)
for _t in POINTWISE:
    register_layer(_t, _pointwise)


def _find_layer(module: nn.Module) -> LayerConverter | None:
    for cls in type(module).__mro__:
        if cls in LAYERS:
            return LAYERS.get(cls)
    return None


def convert_stack(module: nn.Module, c_in: int, where: str = "") -> tuple[Chain, int, int]:
    """Convert ``module`` (a layer or a nested container) -> (Chain, output channels, offline length change)."""
    items = list(module) if isinstance(module, nn.Sequential) else [module]
    layers: list[StreamLayer] = []
    pending = Pending()
    dT = 0
    for i, layer in enumerate(items):
        label = f"{where}{i}" if isinstance(module, nn.Sequential) else (where or "module")
        what = f"{label} ({type(layer).__name__})"
        if isinstance(layer, nn.ConstantPad1d):
            left, right = layer.padding
            if pending.value is not None and (pending.left or pending.right) and layer.value != pending.value:
                raise ConfigError(f"{what}: two paddings with different values in a row cannot stream")
            pending = Pending(pending.left + left, pending.right + right, float(layer.value))
            continue
        if isinstance(layer, (nn.Sequential, Residual)) and (pending.left or pending.right):
            raise ConfigError(f"{what}: padding must come right before the layer that consumes it")
        if isinstance(layer, nn.Sequential):
            chain, c_in, d = convert_stack(layer, c_in, f"{label}.")
            layers.append(chain)
        elif isinstance(layer, Residual):
            body, c_out, d = convert_stack(layer.body, c_in, f"{label}.body.")
            if d != 0 or c_out != c_in:
                raise ConfigError(f"{what}: a residual body must keep the sequence length and channels (length change {d}, "
                                  f"channels {c_in} -> {c_out})")
            layers.append(ResidualStep(body, DelayLine(c_in, body.delay)))
            d = 0
        else:
            conv = _find_layer(layer)
            if conv is None:
                raise UnsupportedModuleError(
                    f"{what}: no continual converter for {type(layer).__module__}.{type(layer).__qualname__}; supported: "
                    f"{', '.join(sorted(t.__name__ for t in LAYERS.keys()))}, ConstantPad1d, Sequential, Residual. "
                    "Register one with edgeseq.models.continual_step.register_layer(YourModule, convert)"
                )
            step, d = conv.convert(layer, c_in, pending, what)
            if (pending.left or pending.right) and not isinstance(step, Window):
                raise ConfigError(f"{what}: padding must come right before the temporal layer that consumes it")
            pending = Pending()
            layers.append(step)
            c_in = step.channels_out or c_in
        dT += d
    if pending.left or pending.right:
        raise ConfigError(f"{where or 'module'}: padding at the end of a stack has no layer to consume it")
    return Chain(layers), c_in, dT


class ContinualStep(StepModule):
    """A converted temporal stack: one frame in, one frame out; ``state_spec.delay`` frames late."""

    def __init__(self, net: nn.Module, d_in: int, info: StepInfo):
        super().__init__()
        chain, d_out, _ = convert_stack(net, d_in)
        self.chain = chain
        self.d_in, self.d_out = d_in, d_out
        _assign_upstream(chain, 0)
        # a frame counter only where some buffer must keep not-ready frames out
        self.counted = any(isinstance(m, Window) and m.upstream and m.span for m in chain.modules())
        tensors = chain.states() + ((StateTensor("frames", (1,)),) if self.counted else ())
        self.state_spec = StateSpec(tensors, delay=chain.delay, receptive_field=chain.span + 1)
        self.info = info

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if not self.counted:
            return self.chain.step(x, tuple(state), None)
        t = state[-1]
        y, new = self.chain.step(x, tuple(state[:-1]), t)
        return y, (*new, torch.clamp(t + 1.0, max=float(self.chain.delay)))


def _assign_upstream(layer: StreamLayer, up: int) -> int:
    """Tell every window how late its input stream is; returns the delay after ``layer``."""
    if isinstance(layer, Chain):
        for sub in layer.layers:
            up = _assign_upstream(sub, up)
        return up
    if isinstance(layer, ResidualStep):
        return _assign_upstream(layer.body, up)
    if isinstance(layer, Window):
        layer.upstream = up
    return up + layer.delay


def _first_channels(net: nn.Module) -> int:
    for m in net.modules():
        if isinstance(m, nn.Conv1d):
            return m.in_channels
    raise UnsupportedModuleError(f"{type(net).__name__}: no nn.Conv1d inside, so its input channels are unknown")


def convert_temporal_cnn(model: TemporalCNN) -> ContinualStep:
    from edgeseq.config import config_to_dict

    c = model.config
    info = StepInfo("continual", config_to_dict(c), c.task, getattr(model, "train_length", None))
    return ContinualStep(model.net, c.d_in, info)


def convert_module(net: nn.Module) -> ContinualStep:
    """A plain temporal stack (``nn.Sequential`` of supported layers, or one ``nn.Conv1d``) on (B, C, T)."""
    layers = [f"{type(m).__name__}" for m in (net if isinstance(net, nn.Sequential) else [net])]
    info = StepInfo("continual", {"source": type(net).__name__, "layers": layers, "repr": repr(net)}, "sequence", None)
    return ContinualStep(net, _first_channels(net), info)


def reference_channels_first(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A plain stack runs on (B, C, T); edgeseq's convention is (B, T, C)."""
    return net(x.transpose(1, 2)).transpose(1, 2)


register_converter(TemporalCNN, convert_temporal_cnn, lambda m, x: m.forward_steps(x))
register_converter(nn.Sequential, convert_module, reference_channels_first)
register_converter(nn.Conv1d, convert_module, reference_channels_first)

"""``continual-inference`` models (``import continual as co``) -> edgeseq's continual step.

``from_continual(module, frame_shape)`` rewrites a ``co`` network as plain ``torch.nn`` layers that the continual
converter knows, wrapped in an :class:`~edgeseq.models.continual.OfflineModel`; ``edgeseq.convert(co_module)``
does the same in one call (for 1D networks, whose frame shape is the first convolution's input channels), and
``edgeseq.check_parity(co_module, step, x)`` compares the step with the library's own ``forward_steps``.

Translated: ``co.Sequential`` (and nested), ``co.Conv1d`` / ``co.Conv3d`` (zero temporal fill), ``co`` pooling
layers (subclasses of the ``nn`` ones), ``co.AdaptiveAvgPool3d`` / ``co.AdaptiveMaxPool3d`` with a temporal
``kernel_size`` (a sliding pool over that many frames, then the spatial pool per frame), ``co.Residual``
(``BroadcastReduce`` of a ``Delay``, ``Skip`` or identity and a body, summed; a body that shortens the clip
with ``residual_shrink="leading"``), other ``BroadcastReduce`` with sum or concat (parallel branches; co's
alignment ``Delay`` modules become identities, as edgeseq aligns branches itself), ``co.Linear`` over the channel dim (a 1x1
convolution), ``co.Lambda`` of a ``torch.nn`` layer, and plain ``torch.nn`` layers inside. Anything else, such
as ``co``'s Transformer layers (composed of ``BroadcastReduce`` blocks with custom reductions), is refused by
name; build those from ``nn.TransformerEncoderLayer`` and ``OfflineModel(..., layout="btc")``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeseq.convert import convert, register_named_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.continual import Branches, OfflineModel, Residual


# instance attributes continual-inference patches onto the plain torch.nn layers of a co network
_CO_PATCHES = ("forward", "forward_step", "forward_steps", "_forward_step", "build_from", "get_state", "set_state",
               "clean_state", "_state_shape", "_dynamic_state_inds", "call_mode", "delay", "receptive_field")


def _plain_layer(module: nn.Module) -> nn.Module:
    """A torch.nn layer taken out of a co network: a deep copy without co's patched-on methods and fields."""
    shallow = copy.copy(module)
    for name in _CO_PATCHES:
        shallow.__dict__.pop(name, None)
    return copy.deepcopy(shallow)


def _is_co(module: nn.Module, name: str) -> bool:
    return any(c.__module__.startswith("continual.") and c.__name__ == name for c in type(module).__mro__)


def _plain_conv(conv: nn.Module, what: str) -> nn.Module:
    fill = getattr(conv, "t_padding_mode", "zeros")
    if fill not in ("zeros", None):
        raise ConfigError(f"{what}: temporal fill {fill!r}: only zero temporal padding streams exactly")
    cls = nn.Conv1d if len(conv.kernel_size) == 1 else nn.Conv3d
    plain = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode)
    plain.load_state_dict(conv.state_dict())
    return plain


def _adaptive(pool: nn.Module, what: str) -> nn.Module:
    k = pool.kernel_size[0]
    out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 3
    if out[0] != 1:
        raise ConfigError(f"{what}: a temporal output size of {out[0]} cannot stream")
    avg = _is_co(pool, "AdaptiveAvgPool3d")
    temporal = nn.AvgPool3d((k, 1, 1), stride=1) if avg else nn.MaxPool3d((k, 1, 1), stride=1)
    spatial = (nn.AdaptiveAvgPool3d if avg else nn.AdaptiveMaxPool3d)((None, *out[1:]))
    return nn.Sequential(temporal, spatial)


def _lambda_fn(module: nn.Module, what: str) -> nn.Module:
    fn = module.fn
    if isinstance(fn, nn.Module) and not module.takes_time:
        return _plain_layer(fn)
    known = {torch.relu: nn.ReLU, nn.functional.relu: nn.ReLU, torch.sigmoid: nn.Sigmoid, torch.tanh: nn.Tanh,
             nn.functional.gelu: nn.GELU, nn.functional.silu: nn.SiLU}
    if fn in known:
        return known[fn]()
    raise UnsupportedModuleError(f"{what}: co.Lambda({getattr(fn, '__name__', fn)!r}) is not a known frame-wise function")


def _translate(module: nn.Module, rank: int, what: str) -> nn.Module:
    name = type(module).__name__
    if not type(module).__module__.startswith("continual."):
        return _plain_layer(module)  # a torch.nn layer inside a co network
    if _is_co(module, "BroadcastReduce"):
        return _broadcast_reduce(module, rank, what)
    if _is_co(module, "Delay") or _is_co(module, "Skip"):
        # co's alignment delays (inserted into parallel branches): identity offline; edgeseq aligns branches itself
        if getattr(module, "auto_shrink", False) not in (False, None):
            raise ConfigError(f"{what}: co.Delay(auto_shrink={module.auto_shrink!r}) crops the offline sequence; not supported")
        return nn.Identity()
    if _is_co(module, "Sequential"):
        return nn.Sequential(*(_translate(m, rank, f"{what}.{i}") for i, m in enumerate(module)))
    if _is_co(module, "_ConvCoNd"):
        return _plain_conv(module, what)
    if _is_co(module, "AdaptiveAvgPool3d") or _is_co(module, "AdaptiveMaxPool3d"):
        return _adaptive(module, what)
    if _is_co(module, "Linear"):
        if module.channel_dim != 1:
            raise ConfigError(f"{what}: co.Linear over dim {module.channel_dim}; only the channel dim (1) is frame-wise here")
        conv = (nn.Conv1d if rank == 1 else nn.Conv3d)(module.in_features, module.out_features, 1, bias=module.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(module.weight.reshape(conv.weight.shape))
            if module.bias is not None:
                conv.bias.copy_(module.bias)
        return conv
    if _is_co(module, "Lambda"):
        return _lambda_fn(module, what)
    for base in type(module).__mro__[1:]:  # co pooling layers subclass the nn ones: keep their numbers
        if base.__module__.startswith("torch.nn") and base is not nn.Module:
            if isinstance(module, (nn.AvgPool1d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool3d)):
                return _plain_pool(module, base)
            break
    raise UnsupportedModuleError(
        f"{what}: no translation for continual-inference's co.{name}; supported: Sequential, Conv1d, Conv3d, pooling, "
        "AdaptiveAvg/MaxPool3d, Residual and BroadcastReduce (sum, concat), Delay, Linear(channel_dim=1), Lambda of an nn layer, plain nn layers"
    )


_REDUCES = {"reduce_sum": "sum", "reduce_concat": "cat"}


def _broadcast_reduce(module: nn.Module, rank: int, what: str) -> nn.Module:
    """co.Residual (a skip plus a body, summed) -> Residual; other BroadcastReduce sum / concat -> Branches."""
    branches = list(module)
    reduce = _REDUCES.get(getattr(getattr(module, "reduce", None), "__name__", ""))
    if reduce is None:
        raise UnsupportedModuleError(
            f"{what}: co.BroadcastReduce with reduce {getattr(module.reduce, '__name__', module.reduce)}: sum and concat "
            "convert; for co's Transformer layers use nn.TransformerEncoderLayer in OfflineModel(..., window=W, layout='btc')")
    skips = [b for b in branches if _is_co(b, "Delay") or _is_co(b, "Skip") or isinstance(b, nn.Identity)]
    if len(branches) == 2 and len(skips) == 1 and reduce == "sum":
        shrink = getattr(skips[0], "auto_shrink", False)
        if shrink not in (False, None):
            # edgeseq's Residual adds a shortened body to the latest frames of x: co's residual_shrink="leading"
            raise ConfigError(f"{what}: co.Residual(residual_shrink={shrink!r}) aligns the skip differently from edgeseq's "
                              "Residual; residual_shrink='leading' (or a padded body, no shrink) converts")
        body = branches[1] if branches[0] is skips[0] else branches[0]
        return Residual(_translate(body, rank, f"{what}.body"))
    return Branches(*(_translate(b, rank, f"{what}.{i}") for i, b in enumerate(branches)), reduce=reduce)


def _plain_pool(pool: nn.Module, base: type) -> nn.Module:
    kw = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode)
    if base in (nn.AvgPool1d, nn.AvgPool3d):
        kw["count_include_pad"] = pool.count_include_pad
    else:
        kw["dilation"] = pool.dilation
    return base(**kw)


def _rank(module: nn.Module) -> int:
    for m in module.modules():
        if _is_co(m, "_ConvCoNd") or isinstance(m, (nn.Conv1d, nn.Conv3d)):
            return len(m.kernel_size)
    raise UnsupportedModuleError(f"{type(module).__name__}: no convolution inside, so the frame rank is unknown")


def from_continual(module: nn.Module, frame_shape: tuple[int, ...] | int | None = None) -> OfflineModel:
    """A continual-inference network as an :class:`OfflineModel` of plain ``torch.nn`` layers (weights copied).

    ``frame_shape``: (C,) for 1D networks (default: the first convolution's input channels), (C, H, W) for 3D."""
    rank = _rank(module)
    if frame_shape is None:
        if rank != 1:
            raise ConfigError(f"{type(module).__name__}: a 3D network needs frame_shape=(C, H, W)")
        frame_shape = next(m.in_channels for m in module.modules() if hasattr(m, "in_channels"))
    net = _translate(module, rank, "module")
    return OfflineModel(net.eval(), frame_shape)


def to_co_single_output_layer(layer: nn.TransformerEncoderLayer, window: int) -> nn.Module:
    """The other direction, for comparisons: continual-inference's ``SingleOutputTransformerEncoderLayer`` with the
    weights of a post-norm ``nn.TransformerEncoderLayer`` (the only variant co builds), attending over ``window``."""
    import continual as co

    if layer.norm_first:
        raise ConfigError("co.SingleOutputTransformerEncoderLayer is post-norm; this layer has norm_first=True")
    attn = layer.self_attn
    theirs = co.SingleOutputTransformerEncoderLayer(attn.embed_dim, attn.num_heads, layer.linear1.out_features,
                                                    dropout=0.0, activation=layer.activation, layer_norm_eps=layer.norm1.eps,
                                                    sequence_len=window)
    with torch.no_grad():
        theirs[0].self_attn.in_proj_weight.copy_(attn.in_proj_weight)
        theirs[0].self_attn.in_proj_bias.copy_(attn.in_proj_bias)
        theirs[0].self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        theirs[1].norm1.fn.load_state_dict(layer.norm1.state_dict())
        theirs[1].norm2.fn.load_state_dict(layer.norm2.state_dict())
        theirs[1]._ff_block[1].linear1.load_state_dict(layer.linear1.state_dict())
        theirs[1]._ff_block[1].linear2.load_state_dict(layer.linear2.state_dict())
    return theirs.eval()


def _co_reference(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """continual-inference's own streaming: ``forward_steps`` over (B, C, T) -> (B, T - delay, d_out)."""
    module.clean_state()
    xs = x.movedim(1, 2)  # (B, d_in, T): 1D networks
    y = module.forward_steps(xs, pad_end=False)
    module.clean_state()
    return y.movedim(2, 1).reshape(y.shape[0], y.shape[2], -1)


register_named_converter("continual.container.Sequential", lambda m: convert(from_continual(m)), _co_reference)
register_named_converter("continual.conv.Conv1d", lambda m: convert(from_continual(m)), _co_reference)

"""Per-frame operations rewritten into forms the runtimes' delegates run, with the same result.

The graph converter runs an operation that acts within one frame as the model wrote it. A few of those stay outside
ExecuTorch's XNNPACK partition as written (ExecuTorch 1.5): ``nn.LayerNorm`` (``native_layer_norm``), a mean
over a frame's last axis (``mean``), an eval ``BatchNorm`` (``_native_batch_norm_legit_no_training``) and reflect / replicate / circular padding inside the frame (decomposed into
``arange``, ``index``, ``abs``, ``sub``), each splitting the program into more partitions with copies between
them. They are rewritten here as products with constant matrices and elementwise ops, which it delegates; the
continual family does the same (:class:`~edgeseq.stream.FrameLayerNorm`, the pools' mean columns). A padding
matrix holds zeros and ones, so the padded frame is exact; a long frame's padding is a gather instead
(:class:`FramePad`).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from edgeseq.graph.ops import GraphOp
from edgeseq.stream import FrameLayerNorm


class FrameModule(GraphOp):
    """A per-frame module replaced by an equivalent one."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def step(self, args, kwargs, state, t):
        return self.module(*args, **kwargs), ()


class ChannelAffine(GraphOp):
    """An eval ``nn.BatchNorm1d/2d/3d`` as ``x * scale + shift`` per channel, folded from its running statistics
    (scale = weight / sqrt(running_var + eps), shift = bias - running_mean * scale). ExecuTorch's XNNPACK partition
    takes the two elementwise ops; a BatchNorm left as written either stays outside it
    (``_native_batch_norm_legit_no_training``) or brings its 0-dim int64 ``num_batches_tracked`` into the program."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, rank: int):
        super().__init__()
        var, mean = bn.running_var.detach().double(), bn.running_mean.detach().double()
        scale = 1.0 / torch.sqrt(var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.detach().double()
        shift = -mean * scale + (bn.bias.detach().double() if bn.affine else 0.0)
        shape = (-1,) + (1,) * (rank - 2)
        dtype = bn.running_var.dtype
        self.register_buffer("scale", scale.to(dtype).reshape(shape))
        self.register_buffer("shift", shift.to(dtype).reshape(shape))

    def step(self, args, kwargs, state, t):
        return args[0] * self.scale + self.shift, ()


def _batch_norm(module: nn.Module, node: fx.Node, env: dict) -> GraphOp | None:
    x = env[node.args[0]] if node.args and isinstance(node.args[0], fx.Node) else None
    if (module.training or not module.track_running_stats or module.running_mean is None or node.kwargs
            or not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != module.num_features):
        return None  # batch statistics (training mode, no running statistics): as written
    return ChannelAffine(module, x.dim())


class LastAxisMean(GraphOp):
    """``x.mean(-1)`` (``keepdim`` either way) as a product with a 1/n column."""

    def __init__(self, n: int, keepdim: bool):
        super().__init__()
        self.keepdim = keepdim
        self.register_buffer("col", torch.full((n, 1), 1.0 / n))

    def step(self, args, kwargs, state, t):
        y = torch.matmul(args[0], self.col)
        return y if self.keepdim else y.reshape(y.shape[:-1]), ()


class FramePad(GraphOp):
    """``F.pad(x, (left, right), mode)`` of a frame's last axis, each output sample one input sample: for a short
    frame as ``x @ P`` (P (n, n + left + right) is the padding applied to the identity, delegated with its
    neighbours), for a longer one as a gather of the input samples by a constant index (``index_select``: one
    small op outside the XNNPACK partition, where the product's n x (n + pad) multiply-adds would cost more than
    the split: Silero VAD's 576-sample window, 59 us against 131 us per step on ExecuTorch and 90 against 159 on
    onnxruntime, this machine). Exact either way."""

    MATRIX_MAX = 16384  # entries of P up to which the product is used (a 64-sample frame padded by 8: 4,608)

    def __init__(self, n: int, pad: tuple[int, int], mode: str):
        super().__init__()
        # the input sample each output sample copies: the padding applied to 0 .. n-1 (exact in float64)
        index = nn.functional.pad(torch.arange(n, dtype=torch.float64).reshape(1, 1, n), pad, mode=mode).reshape(-1)
        self.gather = n * index.numel() > self.MATRIX_MAX
        if self.gather:
            self.register_buffer("index", index.long())
        else:
            self.register_buffer("matrix", nn.functional.one_hot(index.long(), n).T.float().contiguous())

    def step(self, args, kwargs, state, t):
        if self.gather:
            return torch.index_select(args[0], -1, self.index), ()
        return torch.matmul(args[0], self.matrix), ()


def _pad(node: fx.Node, env: dict) -> GraphOp | None:
    x = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    if (not isinstance(x, torch.Tensor) or not x.is_floating_point() or mode not in ("reflect", "replicate", "circular")
            or not isinstance(pad, (tuple, list)) or len(pad) != 2 or any(isinstance(p, fx.Node) for p in pad)
            or x.shape[-1] > 1 << 24):
        return None
    return FramePad(x.shape[-1], (int(pad[0]), int(pad[1])), mode)


def _mean(node: fx.Node, env: dict) -> GraphOp | None:
    x = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if isinstance(dim, (list, tuple)) and len(dim) == 1:
        dim = dim[0]
    if (not isinstance(x, torch.Tensor) or not x.is_floating_point() or not isinstance(dim, int)
            or dim % x.dim() != x.dim() - 1 or node.kwargs.get("dtype") is not None or not isinstance(keepdim, bool)):
        return None
    return LastAxisMean(x.shape[-1], keepdim)


class Slices(GraphOp):
    """``x.chunk(n, dim)`` / ``x.split(size, dim)`` within a frame as slices (``narrow``): XNNPACK delegates slices,
    not the ``split_with_sizes`` a chunk lowers to (a fused q, k, v projection split in three: a second partition)."""

    def __init__(self, dim: int, bounds: list[tuple[int, int]]):
        super().__init__()
        self.dim, self.bounds = dim, bounds

    def step(self, args, kwargs, state, t):
        x = args[0]
        return tuple(x.narrow(self.dim, a, n) for a, n in self.bounds), ()


def _slices(node: fx.Node, env: dict) -> GraphOp | None:
    x = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
    if not isinstance(x, torch.Tensor) or len(node.args) < 2 or isinstance(node.args[1], fx.Node):
        return None
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if not isinstance(dim, int) or set(node.kwargs) - {"dim"} or not isinstance(node.args[1], int):
        return None
    dim %= x.dim()
    if dim == 0 or dim == node.args[0].meta.get("time"):
        return None
    n = x.shape[dim]
    chunking = node.target in ("chunk", torch.chunk, torch.ops.aten.chunk.default)
    size = -(-n // node.args[1]) if chunking else node.args[1]
    if size <= 0:
        return None
    bounds = [(a, min(size, n - a)) for a in range(0, n, size)]
    if not isinstance(env.get(node), (tuple, list)) or len(bounds) != len(env[node]):
        return None
    return Slices(dim, bounds)


class AsReshape(GraphOp):
    """``unsqueeze`` / ``squeeze`` / ``flatten`` of a frame as the reshape it is (to the frame's shape in the
    step, batch first): XNNPACK delegates a reshape (``view_copy``), and left ``unsqueeze_copy`` and
    ``squeeze_copy`` outside its partition."""

    def __init__(self, frame: tuple[int, ...]):
        super().__init__()
        self.frame = frame

    def step(self, args, kwargs, state, t):
        return args[0].reshape(args[0].shape[0], *self.frame), ()


RESHAPES = {"unsqueeze", "squeeze", "flatten", torch.unsqueeze, torch.squeeze, torch.flatten,
            torch.ops.aten.unsqueeze.default, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims}


def _reshape(node: fx.Node, env: dict) -> GraphOp | None:
    x, y, axis = env.get(node.args[0]) if node.args else None, env.get(node), node.meta.get("time")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or axis is None or axis == 0:
        return None
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or node.args[0].meta.get("time") in (None, 0):
        return None  # the batch axis itself moved or merged: as written
    dims = [d for d in list(node.args[1:]) + list(node.kwargs.values()) if isinstance(d, int)]
    flat = node.target in ("flatten", torch.flatten)
    if (flat and not dims) or any(d % (y.dim() if "unsqueeze" in str(node.target) else x.dim()) == 0 for d in dims[:1 if flat else None]):
        return None  # (un)squeezing or flattening from the batch axis (the example's batch is 1): as written
    return AsReshape(tuple(1 if i == axis else n for i, n in enumerate(y.shape))[1:])


class AxisSum(nn.Module):
    """``x.sum(dim)`` as a product with a ones column (the axis moved last first): XNNPACK delegates the product
    and the transpose, not ``sum`` (a liquid cell's sums over its synapses split the program into 8 partitions)."""

    def __init__(self, dim: int, n: int, keepdim: bool):
        super().__init__()
        self.dim, self.keepdim = dim, keepdim
        self.register_buffer("ones", torch.ones(1, n))

    def forward(self, x):
        y = nn.functional.linear(x.movedim(self.dim, -1), self.ones)  # (..., 1) with the summed axis gone
        y = y.reshape(y.shape[:-1])
        return y.unsqueeze(self.dim) if self.keepdim else y


class FirstArg(GraphOp):
    """A module applied to a node's first argument alone (its other arguments are what the module was made from)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def step(self, args, kwargs, state, t):
        return self.module(args[0]), ()


def _stack_sum(node: fx.Node, env: dict) -> GraphOp | None:
    """``torch.stack(xs, dim).sum(dim)`` (skip connections summed, as pytorch-tcn writes it) as a product with a
    ones column over the stacked axis: its size is the number of values stacked, fixed whatever the batch."""
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node) or src.op != "call_function" or src.target is not torch.stack or len(src.users) != 1:
        return None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    sdim = src.args[1] if len(src.args) > 1 else src.kwargs.get("dim", 0)
    x = env.get(src)
    if (not isinstance(dim, int) or not isinstance(sdim, int) or not isinstance(keepdim, bool) or set(node.kwargs) - {"dim", "keepdim"}
            or not isinstance(x, torch.Tensor) or not x.is_floating_point() or not isinstance(src.args[0], (list, tuple))):
        return None
    dim, sdim = dim % x.dim(), sdim % x.dim()
    if dim != sdim:
        return None
    return FirstArg(AxisSum(dim, len(src.args[0]), keepdim))


def frame_rewrite(gm: fx.GraphModule, node: fx.Node, env: dict) -> GraphOp | None:
    """A delegate-friendly op for the per-frame ``node``, or None to run it as written."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if type(module) is nn.LayerNorm and len(module.normalized_shape) == 1 and not node.kwargs:
            return FrameModule(FrameLayerNorm(module))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module).forward is nn.modules.batchnorm._BatchNorm.forward:
            return _batch_norm(module, node, env)
        return None
    if (node.op == "call_method" and node.target == "mean") or node.target in (torch.mean, torch.ops.aten.mean.dim):
        return _mean(node, env)
    if node.target in (nn.functional.pad, torch.ops.aten.pad.default):
        return _pad(node, env)
    if node.target in ("chunk", "split", torch.chunk, torch.split, torch.ops.aten.chunk.default,
                       torch.ops.aten.split.Tensor):
        return _slices(node, env)
    if node.target in ("sum", torch.sum):
        return _stack_sum(node, env)
    if node.op in ("call_method", "call_function") and node.target in RESHAPES:
        return _reshape(node, env)
    return None

"""Annotate a traced graph: which axis of every tensor carries time, and which operations read other frames.

Two passes over the graph (``torch.fx`` interpreters), written as small functions that each annotate
``node.meta``:

- :func:`time_axes` runs the graph on the example (batch 1) and on the same input one frame longer: the one axis of
  a value whose size grows by one is its time axis (``meta["time"]``, with its length in ``meta["length"]``); a
  value whose sizes do not change has none (weights, constants, a reduction over time). A graph with strides
  (convolutions, pools, ``x[:, ::k]``) is run P frames longer instead, P the product of its strides
  (:func:`stride_product`): a value behind strides k1, k2 grows by P / (k1 k2) frames, its ``meta["rate"]``.
- :func:`frame_local` asks of every operation on time-carrying values whether it reads other frames: it runs the
  operation again with every input frame but one replaced by noise and compares that one output frame
  (``meta["local"]``). Elementwise math, ``Linear``, norms over features, transposes, reshapes that fold time into
  the batch and anything inside a frame pass; a convolution or recurrence over time, a reduction, a flip or
  attention over time do not, and must be rewritten by a stream operation (:mod:`edgeseq.graph.ops`) or refused.
"""

from __future__ import annotations

import torch
from torch import fx

FRAMES_TESTED = 3  # first, middle and last frame


class _Recorder(fx.Interpreter):
    """Keeps every node's value as it was computed (a copy: an in-place op downstream, ``ReLU(inplace=True)``,
    would otherwise change what was recorded for the node before it)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        return out.clone() if isinstance(out, torch.Tensor) else out


def run_recording(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, object]:
    interp = _Recorder(gm)
    with torch.no_grad():
        interp.run(x)
    return dict(interp.env)


def longer(x: torch.Tensor, axis: int, frames: int = 1) -> torch.Tensor:
    """``x`` ``frames`` frames longer along ``axis`` (its last frame repeated)."""
    last = x.narrow(axis, x.shape[axis] - 1, 1)
    return torch.cat([x, last.expand(*[frames if i == axis else -1 for i in range(x.dim())])], dim=axis)


MAX_STRIDE_PRODUCT = 4096


def _ints(v) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) for i in v):
        return list(v)
    return []


def _strides(gm: fx.GraphModule, node: fx.Node) -> list[int]:
    """The strides ``node`` may take along some axis: a module's ``stride``, a call's ``stride`` argument (the
    functional convolutions and pools, ATen's), a slice's step."""
    if node.op == "call_module":
        return _ints(getattr(gm.get_submodule(node.target), "stride", None))
    if node.op not in ("call_function", "call_method"):
        return []
    const = lambda v: v if not isinstance(v, fx.Node) else None  # noqa: E731
    name = getattr(node.target, "__name__", str(node.target))
    found = _ints(const(node.kwargs.get("stride")))
    if "conv" in name and len(node.args) > 3:
        found += _ints(const(node.args[3]))
    if "pool" in name:
        stride = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
        found += _ints(const(stride if stride not in (None, []) else (node.args[1] if len(node.args) > 1 else node.kwargs.get("kernel_size"))))
    if name == "slice" and len(node.args) > 4:  # aten.slice.Tensor(x, dim, start, end, step)
        found += _ints(const(node.args[4]))
    if name == "getitem" and len(node.args) > 1:
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        found += [e.step for e in index if isinstance(e, slice) and isinstance(e.step, int)]
    return found


def stride_product(gm: fx.GraphModule) -> int:
    """How many frames longer the second run of :func:`time_axes` is: the product of every stride in the graph
    (1 when it has none), so that a value behind any of them grows by a whole number of frames."""
    p = 1
    for node in gm.graph.nodes:
        for s in _strides(gm, node):
            if s > 1:
                p *= s
    if p > MAX_STRIDE_PRODUCT:
        from edgeseq.graph.ops.base import StreamRefusal

        raise StreamRefusal(f"the model's strides multiply to {p}: the graph converter follows frame rates down to "
                            f"1 in {MAX_STRIDE_PRODUCT} input frames")
    return p


def _tensor_time(a, b, grow: int = 1) -> tuple[int | None, int | None, bool, int]:
    """(time axis, length, consistent, rate) of one value from the runs at lengths T and T + grow: a value that is
    ``grow / rate`` frames longer at the second has one frame per ``rate`` input frames."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return None, None, True, 1
    if a.dim() != b.dim():
        return None, None, False, 1
    diff = [i for i, (p, q) in enumerate(zip(a.shape, b.shape)) if p != q]
    if not diff:
        return None, None, True, 1
    g = b.shape[diff[0]] - a.shape[diff[0]]
    if len(diff) == 1 and g >= 1 and grow % g == 0:
        return diff[0], a.shape[diff[0]], True, grow // g
    return None, None, False, 1


def time_axes(gm: fx.GraphModule, x: torch.Tensor, axis: int) -> dict[fx.Node, object]:
    """Annotate ``meta["time"]``, ``meta["length"]`` (None: no time axis), ``meta["rate"]`` (input frames per
    frame) and ``meta["time_consistent"]`` (False where sizes change other than one axis by a whole fraction of
    the frames added: time folded, or upsampled, in a way the converter cannot follow); ``meta["int_of_length"]``
    marks Python ints that change with the length (sizes read from a time axis). Returns the values of the run at
    the example's length."""
    grow = stride_product(gm)
    env_a = run_recording(gm, x)
    env_b = run_recording(gm, longer(x, axis, grow))
    for node in gm.graph.nodes:
        a, b = env_a.get(node), env_b.get(node)
        t, n, ok, rate = _tensor_time(a, b, grow)
        node.meta["time"], node.meta["length"], node.meta["time_consistent"], node.meta["rate"] = t, n, ok, rate
        node.meta["growth"] = grow // rate  # frames it gains in the longer run
        node.meta["int_of_length"] = isinstance(a, int) and isinstance(b, int) and a != b
        node.meta["value_longer"] = b if not isinstance(b, torch.Tensor) else None  # slices' bounds, longer run
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):  # x.max(dim=-1)
            node.meta["elements"] = [_tensor_time(p, q, grow)[:3] for p, q in zip(a, b)]
    return env_a


def time_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if a.meta.get("time") is not None]


def _call(gm: fx.GraphModule, node: fx.Node, env: dict) -> object:
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    raise ValueError(node.op)


def _scramble(v: torch.Tensor, axis: int, keep: int, gen: torch.Generator) -> torch.Tensor:
    """``v`` with every frame along ``axis`` but ``keep`` replaced by noise (floats) or rolled (integers)."""
    other = (torch.randn(v.shape, generator=gen, dtype=v.dtype) * (v.abs().max() + 1) if v.is_floating_point()
             else torch.roll(v, 1, dims=axis))
    idx = torch.arange(v.shape[axis]).reshape([-1 if i == axis else 1 for i in range(v.dim())])
    return torch.where(idx == keep, v, other)


def reads_other_frames(gm: fx.GraphModule, node: fx.Node, env: dict) -> bool:
    """True when some output frame of ``node`` changes with input frames other than its own (see module doc).
    Needs the node's time inputs and its output (each element of a tuple output) to share one length."""
    ins = time_inputs(node)
    gen = torch.Generator().manual_seed(0)
    ref = env[node]
    n = node.meta["length"] if not isinstance(ref, (tuple, list)) else node.meta["elements"][0][1]
    for keep in sorted({0, n // 2, n - 1}):
        local = dict(env)
        for i in ins:
            local[i] = _scramble(env[i], i.meta["time"], keep, gen)
        with torch.no_grad():
            got = _call(gm, node, local)
        pairs = (zip(ref, got, [e[0] for e in node.meta["elements"]]) if isinstance(ref, (tuple, list))
                 else [(ref, got, node.meta["time"])])
        for r, g, axis in pairs:
            a, b = r.narrow(axis, keep, 1), g.narrow(axis, keep, 1)
            if a.is_floating_point():
                if not torch.allclose(a, b, rtol=1e-5, atol=1e-6 * (float(a.abs().max()) + 1.0), equal_nan=True):
                    return True
            elif not torch.equal(a, b):
                return True
    return False

"""Constant folding: tensors that a model computes in ``forward`` from its own weights alone, computed once.

Weight norm (``torch.nn.utils.parametrizations.weight_norm``) makes every read of ``conv.weight`` a computation
(``g * v / ||v||``); so do spectral norm, weights tied by a transpose, masks made from ``torch.ones`` and other
parametrizations. Traced, these are nodes that no input reaches. Each one whose value an input-dependent node
reads becomes a buffer of the traced module (``_folded_<node>``) holding its value, so that a convolution over
time sees constant weights it can stream (:mod:`edgeseq.graph.ops`), the step does not recompute them every
frame, and the exported graph carries plain weights. The user's model is not touched: the buffers live on the
traced :class:`torch.fx.GraphModule`.
"""

from __future__ import annotations

import torch
from torch import fx


def _depends_on_input(graph: fx.Graph) -> set[fx.Node]:
    live: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op == "placeholder" or any(a in live for a in n.all_input_nodes):
            live.add(n)
    return live


def _attr(root, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def fold_constants(gm: fx.GraphModule) -> int:
    """Replace computed constants read by input-dependent nodes with buffers (see the module doc); returns how many."""
    graph = gm.graph
    live = _depends_on_input(graph)
    values: dict[fx.Node, object] = {}
    folded = 0
    with torch.no_grad():
        for n in list(graph.nodes):
            if n in live or n.op == "output":
                continue
            try:
                values[n] = _run(gm, n, values)
            except Exception:  # not computable alone (an op with side effects, a missing attribute): left as it is
                values[n] = _UNKNOWN
                continue
            if n.op == "get_attr" or not any(u in live for u in n.users):
                continue
            value = values[n]
            if not isinstance(value, torch.Tensor) or value is _UNKNOWN:
                continue
            name = f"_folded_{n.name}"
            gm.register_buffer(name, value.detach().clone())
            with graph.inserting_before(n):
                const = graph.get_attr(name)
            const.meta = dict(n.meta)
            for u in [u for u in n.users if u in live]:
                u.replace_input_with(n, const)
            folded += 1
    if folded:
        graph.eliminate_dead_code()
        gm.recompile()
    return folded


class _Unknown:
    pass


_UNKNOWN = _Unknown()


def _run(gm: fx.GraphModule, n: fx.Node, values: dict):
    def val(a):
        v = values[a]
        if v is _UNKNOWN:
            raise ValueError("unknown input")
        return v

    args = fx.node.map_arg(n.args, val)
    kwargs = fx.node.map_arg(n.kwargs, val)
    if n.op == "get_attr":
        return _attr(gm, n.target)
    if n.op == "call_function":
        return n.target(*args, **kwargs)
    if n.op == "call_method":
        return getattr(args[0], n.target)(*args[1:], **kwargs)
    if n.op == "call_module":
        return gm.get_submodule(n.target)(*args, **kwargs)
    raise ValueError(n.op)

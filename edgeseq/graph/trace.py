"""Trace a user's model into a torch.fx graph, with temporal modules kept whole as leaves.

torch.fx rather than torch.export: an ``nn.GRU`` / ``nn.LSTM`` cannot be exported with a dynamic time dimension
(torch 2.13 specialises T to the example's length), while the converter needs each module as one unit (a
recurrent layer, a registered model inside the user's, a convolution) with its path for the state names, and a
graph it can run at several lengths to find the time axis. ``symbolic_trace`` keeps ``torch.nn`` modules and every
module with a registered converter as leaves, and records each node's source line for error messages.
"""

from __future__ import annotations

import inspect

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from edgeseq.errors import UnsupportedModuleError


def has_converter(module: nn.Module) -> bool:
    from edgeseq.converters import find_converter

    try:
        find_converter(module)
    except UnsupportedModuleError:
        return False
    return True


class LeafTracer(fx.Tracer):
    """torch.nn modules (fx's default) and modules with a registered converter are leaves."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False  # containers are traced through (their own converters expect the whole model's layout)
        if isinstance(m, nn.RNNBase) or (has_converter(m) and qualname):
            return True
        if parametrize.is_parametrized(m):
            # weight_norm / spectral_norm make a class ParametrizedX in torch.nn.utils.parametrize, which fx would
            # take for a torch.nn module: a leaf only if X itself is one, else X's own forward (its padding, its
            # chomp) is traced like any user code
            original = type(m).__bases__[0]
            return original.__module__.startswith(("torch.nn.", "torch.ao.nn.")) and not issubclass(
                original, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's forward as an fx graph; data-dependent control flow gets a one-line reason and a way out. A
    graph already traced (a ``.pt2`` program, :func:`edgeseq.graph.pt2.plain_module`) is kept as it is."""
    if isinstance(model, fx.GraphModule) and model.meta.get("edgeseq_traced"):
        return model
    tracer = LeafTracer()
    try:
        graph = tracer.trace(model, concrete_args=_defaults(model))
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError ... from the user's own code
        line = " ".join(str(exc).split())[:300]
        at = user_frame(exc.__traceback__)
        err = UnsupportedModuleError(
            f"cannot trace {type(model).__name__}.forward{' at ' + at if at else ''} ({type(exc).__name__}: {line}). "
            "The graph converter follows "
            "forward symbolically: Python control flow that depends on tensor values or shapes (if x.shape[1] > ..., "
            "loops over time, .item(), .tolist()) cannot be traced; write it with tensor ops, move it out of forward, "
            "or register a converter for the module that holds it (edgeseq.register_converter)"
        )
        err.source_line = at
        raise err from None
    _drop_specialised(graph)
    gm = fx.GraphModule(model, graph, type(model).__name__)
    from edgeseq.graph.fold import fold_constants

    fold_constants(gm)  # weights computed in forward (weight norm): computed once, here
    gm.graph.eliminate_dead_code()  # unused values (the h_n of `out, _ = self.gru(x)`) are not the stream's concern
    gm.recompile()
    return gm


def user_frame(tb) -> str:
    """The innermost frame of a traceback outside torch and edgeseq ("model.py:12 (if x.shape[1] > 16:)"), or ""."""
    import linecache
    import os

    found = ""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while tb is not None:
        code = tb.tb_frame.f_code
        path = code.co_filename
        if "/torch/" not in path and not path.startswith((here, "<eval_with_key", "<frozen")):
            text = linecache.getline(path, tb.tb_lineno).strip()
            found = f"{os.path.basename(path)}:{tb.tb_lineno}" + (f" ({text})" if text else "")
        tb = tb.tb_next
    return found


def _defaults(model: nn.Module) -> dict | None:
    """forward's optional parameters after the input, at their defaults (``inference=False``, ``state=None``): the
    model as it runs on ``model(x)``. fx would otherwise trace them as inputs, and a branch on one fails."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    found = {p.name: p.default for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty}
    return found or None


def _drop_specialised(graph: fx.Graph) -> None:
    """Remove the placeholders of parameters fixed at their defaults (see :func:`_defaults`) and fx's checks on them:
    the step takes the input alone."""
    import operator

    checks = {operator.eq, torch._assert, fx._symbolic_trace._assert_is_none}
    order = {n: i for i, n in enumerate(graph.nodes)}
    for ph in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        if not ph.args:  # an input without a default: kept
            continue
        doomed, todo = {ph}, list(ph.users)
        while todo:
            n = todo.pop()
            doomed.add(n)
            todo += [u for u in n.users if u not in doomed]
        if all(n is ph or n.target in checks for n in doomed):
            for n in sorted(doomed, key=order.__getitem__, reverse=True):
                graph.erase_node(n)


def where(node: fx.Node) -> str:
    """The user's source line that made ``node`` ("file.py:12: code"), or its graph name. fx records the stack from
    the user's frame inward; torch's own frames are skipped."""
    lines = (node.meta.get("stack_trace") or "").splitlines()
    for i, line in enumerate(lines):
        loc = line.strip()
        if not loc.startswith("File ") or "/torch/" in loc:
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File ") else ""
        try:
            fname = loc.split('"')[1].rsplit("/", 1)[-1]
            lineno = loc.split("line ")[1].split(",")[0]
        except IndexError:
            return loc
        return f"{fname}:{lineno} ({code})" if code else f"{fname}:{lineno}"
    src = next((a for a in node.all_input_nodes if a.op != "placeholder"), None)
    return where(src) if src is not None else f"graph node {node.name}"


def describe(node: fx.Node) -> str:
    """What a node does, in the user's words: ``self.gru`` (GRU), ``torch.flip``, ``.mean()``."""
    if node.op == "call_module":
        return f"self.{node.target} ({type(node.graph.owning_module.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        return f"aten.{node.target.__name__.split('.')[0]}"
    if node.op == "call_function":
        mod = getattr(node.target, "__module__", "") or ""
        name = getattr(node.target, "__name__", str(node.target))
        if mod.startswith("torch.nn.functional"):
            return f"F.{name}"
        if mod.startswith("_operator") or mod == "operator":
            return {"getitem": "indexing [...]", "add": "+", "sub": "-", "mul": "*", "truediv": "/"}.get(name, name)
        return f"torch.{name}"
    return node.name

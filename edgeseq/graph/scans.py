"""Scans written in log space, streamed as the recurrences they compute.

Heinsen's parallel form of ``h_t = a_t * h_(t-1) + b_t`` (arXiv:2311.06281; minGRU's appendix B, arXiv:2410.01201)
works on logs: ``a* = cumsum(log a)``, ``log h = a* + logcumsumexp(log b - a*)``. Streamed literally, as two
running totals, it loses float32 precision as ``a*`` grows without bound (``|a*|`` reaches 10^5 or 10^6 over a long
stream, where float32 keeps about 7 digits, and ``log h`` is the small difference of two large numbers). The
pattern is recognised here and replaced by :func:`log_linear_scan`, whose stream form is the recurrence itself in
log space, ``log h_t = logaddexp(log a_t + log h_(t-1), log b_t)``: its state is ``log h`` (bounded when the
recurrence is), so the step stays accurate over any number of frames. docs/own-models.md reports both forms' error
against a float64 reference at 10^4, 10^5 and 10^6 frames (benchmarks/log_scans.py).
"""

from __future__ import annotations

import operator
from dataclasses import replace

import torch
from torch import fx

from edgeseq.graph.ops import STREAM_OPS, Build, BuildCtx, GraphOp, _logaddexp, held, no_pending_pad
from edgeseq.step import StateTensor
from edgeseq.stream import LOWEST

aten = torch.ops.aten
_CUMSUM = {torch.cumsum, "cumsum", aten.cumsum.default}
_LCSE = {torch.logcumsumexp, "logcumsumexp", aten.logcumsumexp.default}
_ADD = {operator.add, torch.add, "add", aten.add.Tensor}
_SUB = {operator.sub, torch.sub, "sub", aten.sub.Tensor}


def log_linear_scan(log_a: torch.Tensor, log_b: torch.Tensor, dim: int) -> torch.Tensor:
    """``log h`` of ``h_t = a_t * h_(t-1) + b_t`` (h before the first frame 0) along ``dim``, from ``log a`` and
    ``log b``: Heinsen's parallel form, as the model wrote it (the stream runs the recurrence)."""
    a_star = torch.cumsum(log_a, dim)
    return a_star + torch.logcumsumexp(log_b - a_star, dim)


def _dim(node: fx.Node):
    if len(node.args) > 1:
        return node.args[1]
    return node.kwargs.get("dim")


def _plain(node: fx.Node, targets: set) -> bool:
    """``node`` is one of ``targets`` with no extra arguments (alpha=, dtype=, out=)."""
    if node.op not in ("call_function", "call_method") or node.target not in targets:
        return False
    return not (set(node.kwargs) - {"dim"}) and (len(node.args) <= 2)


def recognise(gm: fx.GraphModule) -> int:
    """Replace every ``a* + logcumsumexp(log b - a*)`` with ``a* = cumsum(log a)`` along one axis by
    :func:`log_linear_scan` (the values ``a*`` and the logcumsumexp keep their other readers); returns how many."""
    graph = gm.graph
    found = 0
    for node in list(graph.nodes):
        if not _plain(node, _ADD) or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
            continue
        for star, lcse in (node.args, node.args[::-1]):
            if not (_plain(lcse, _LCSE) and _plain(star, _CUMSUM)):
                continue
            sub = lcse.args[0]
            if not (isinstance(sub, fx.Node) and _plain(sub, _SUB) and len(sub.args) == 2 and sub.args[1] is star):
                continue
            dim = _dim(star)
            if not isinstance(dim, int) or dim != _dim(lcse):
                continue
            with graph.inserting_before(node):
                new = graph.call_function(log_linear_scan, (star.args[0], sub.args[0], dim))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            found += 1
            break
    if found:
        graph.eliminate_dead_code()
        gm.recompile()
    return found


class LogLinearScanOp(GraphOp):
    """The stream form of :func:`log_linear_scan`: ``log h`` is the state, from float32's lowest (h = 0)."""

    def __init__(self, shape: tuple[int, ...], first: int):
        super().__init__()
        self.shape, self.first = shape, first

    def states(self):
        return (StateTensor("log_h", self.shape, fill=LOWEST),)

    def step(self, args, kwargs, state, t):
        log_a, log_b = args[0], args[1]
        log_h = _logaddexp(log_a + state[0], log_b)
        (log_h,) = held((log_h,), state, t, self.first)
        return log_h, (log_h,)


def _build(ctx: BuildCtx) -> Build | None:
    node = ctx.node
    no_pending_pad(ctx)
    log_a, log_b, dim = node.args
    x = ctx.env[node]
    axis = node.meta.get("time")
    if axis is None or dim % x.dim() != axis:
        return None  # along a frame axis: runs as it is
    for a in (log_a, log_b):
        if not isinstance(a, fx.Node) or a.meta.get("time") != axis or ctx.env[a].shape != x.shape:
            return None  # a broadcast operand: the parallel form as written (refused if it mixes frames)
    ta, tb = ctx.timing(log_a), ctx.timing(log_b)
    if (ta.delay, ta.first) != (tb.delay, tb.first):
        return None
    shape = tuple(s if i != axis else 1 for i, s in enumerate(x.shape))[1:]
    return Build(LogLinearScanOp(shape, ta.first), replace(ta, span=None))


STREAM_OPS.register(log_linear_scan, _build)

"""Python branches on shapes (``if x.shape[1] == 1: ... else: ...``): the model traced by ``torch.export`` with
a dynamic length, where a branch on the length is decided once for every length from 2 frames on.

``torch.fx`` cannot follow such a branch (the length is a Proxy); ``torch.export`` with a dynamic time dimension
(``Dim("T", min=2)``) takes the branch every length of 2 frames or more takes, and fails where lengths disagree
(``if T > 64``): the model is then refused, naming the branch's source line. The graph it gives holds the
branch taken, and the converter runs it at other lengths like any traced model; the proof at conversion checks
the step against the model itself (whose own branch, run at the stream's length, is the one traced).
"""

from __future__ import annotations

import re

import torch
from torch import fx, nn

from edgeseq.errors import UnsupportedModuleError

MIN_FRAMES = 2  # lengths from here on must take one branch; a model's one-frame branch (its own step) is never traced


class BranchRefusal(UnsupportedModuleError):
    """A branch that lengths take differently."""


def exported(model: nn.Module, example: torch.Tensor, axis: int, where: str = "") -> fx.GraphModule:
    """The model as torch.export traces it with a dynamic batch and time axis, as a plain graph module. ``where``:
    the source line the symbolic trace stopped at (the branch), for the refusal."""
    from edgeseq.graph.pt2 import plain_module

    x = example[:1].detach().float()
    shortest = _shortest(model, x, axis)
    x = torch.cat([x, x])  # batch 2: a batch of 1 would be specialised
    dims = {0: torch.export.Dim("batch", min=1, max=1 << 16), axis: torch.export.Dim("T", min=shortest, max=1 << 24)}
    try:
        ep = torch.export.export(model, (x,), dynamic_shapes=(dims,), strict=False)
    except Exception as exc:
        text = str(exc)
        if "Constraints violated" in text or "specialized" in text:
            guard = re.search(r"generated guard (.*?)(\n|$)", text)
            cond = f" (only for {_named(guard.group(1))})" if guard else ""
            raise BranchRefusal(f"a branch on the sequence length{' at ' + where if where else ''} goes one way at "
                                f"some lengths and another at others{cond}: a stream needs one way for every "
                                f"length from {shortest} frames on") from None
        raise
    sig = ep.graph_signature
    if len(sig.user_outputs) < 1:
        raise UnsupportedModuleError(f"{type(model).__name__}.forward returns nothing")
    gm = plain_module(ep.module(), type(model).__name__)  # (outputs, final state): the outputs stream
    from edgeseq.graph.fold import fold_constants

    fold_constants(gm)  # filters computed in forward from the model's weights alone (a sinc filterbank): once
    gm.meta["edgeseq_branches"] = f"traced by torch.export for lengths >= {shortest}"
    return gm


def _shortest(model: nn.Module, x: torch.Tensor, axis: int, limit: int = 4096) -> int:
    """The shortest input (from :data:`MIN_FRAMES`) whose output has two frames or more: a model that subsamples
    time (a stride-8 filterbank) gives one frame or none below it, and torch.export's guards for those lengths
    (a size of 1 broadcasts) are no branch of the model's."""
    n = MIN_FRAMES
    while n < min(limit, x.shape[axis]):
        try:
            with torch.no_grad():
                y = model(x.narrow(axis, 0, n) if n <= x.shape[axis] else x)
            while isinstance(y, (tuple, list)) and y:
                y = y[0]
            if isinstance(y, torch.Tensor) and y.dim() > axis and y.shape[axis] >= 2:
                return n
        except Exception:  # too short for the model (a kernel longer than the input): longer
            pass
        n *= 2
    return MIN_FRAMES if n <= MIN_FRAMES else min(n, x.shape[axis])


def _named(guard: str) -> str:
    """torch's guard with the input's sizes named: ``17 <= L['x'].size()[1] and ...`` -> ``17 <= T and ...``."""
    guard = re.sub(r"L\['[^']+'\]\.size\(\)\[1\]", "T", guard)
    return re.sub(r" and T <= \d{6,}", "", guard).strip()

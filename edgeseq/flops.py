"""Compute per step, counted from the graph.

:func:`count_flops` runs a call under ``torch.utils.flop_counter.FlopCounterMode``, which counts the
matrix products, convolutions and attention that the call dispatches (2 FLOPs per multiply-add); elementwise
ops (activations, norms, adds) are not counted, so small models are slightly under-counted.

:func:`step_cost` gives the step's FLOPs per step and, for converters that know the offline model it came
from (the continual family), the FLOPs of recomputing the offline model over the frames one output depends on:
the work a non-continual deployment does for every new frame. Both go into the manifest's ``cost``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

COUNTED_BY = "torch.utils.flop_counter: matmuls, convolutions, attention; 2 FLOPs per multiply-add"


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of one call ``fn(*args)``, counted from the ops it dispatches. PyTorch's fused inference path for
    Transformer layers (one native op the counter does not know) is switched off while counting, and attention
    runs as plain matmuls (the CPU's fused attention kernel is not counted either)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def step_flops(step) -> int:
    """FLOPs of one step of one stream, from the initial state."""
    x = torch.zeros(1, step.d_in, dtype=torch.long if step.vocab_size else torch.float32)
    return count_flops(step.step, x, step.init_state(1))


def step_cost(step) -> dict[str, Any]:
    """The manifest's ``cost``: flops_per_step, and where known the offline cost per output and the ratio."""
    per_step = step_flops(step)
    cost: dict[str, Any] = {"flops_per_step": per_step, "counted_by": COUNTED_BY}
    offline = getattr(step, "offline_cost", None)  # set by converters that know the offline model
    if offline:
        cost.update(offline)
        if per_step:
            cost["offline_over_step"] = round(offline["offline_flops_per_output"] / per_step, 2)
    return cost

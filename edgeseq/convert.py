"""``edgeseq.convert``: a trained model into its step form, by its registered converter (:mod:`edgeseq.converters`)
or the graph converter (:mod:`edgeseq.graph`), proven against the model (:mod:`edgeseq.proof`) before it is returned.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseq.converters import (  # noqa: F401  (the registry's names, as edgeseq.convert has always offered them)
    CONVERTERS, NAMED_CONVERTERS, Converter, find_converter, reference_outputs, register_converter,
    register_named_converter,
)
from edgeseq.errors import UnsupportedModuleError
from edgeseq.step import StepModule


def convert(model: nn.Module, example: torch.Tensor | None = None, time_axis: int = 1, *,
            tolerance: float | None = None) -> StepModule:
    """Rewrite a trained model into its constant-memory step form (weights are copied, ``model`` is untouched).

    A registered type uses its converter. Any other causal model is traced and rewritten by the graph converter
    (:mod:`edgeseq.graph`), given ``example``: a real-shaped input (batch, time, *frame), or with time on
    ``time_axis`` (-1 for (batch, channels, time) models).

    Every step is proven against the model before it is returned (:mod:`edgeseq.proof`): rolled out with its state
    fed back over the example and a longer stream, it must match the model's own forward within ``tolerance``
    (scaled error, default 1e-4), else :class:`~edgeseq.errors.ParityError` names the worst output, frame and error.
    The summary is ``step.model_parity`` and goes into every manifest exported from the step."""
    if isinstance(model, StepModule):
        return model
    try:
        conv = find_converter(model)
    except UnsupportedModuleError as exc:
        if example is None:
            raise UnsupportedModuleError(f"{exc}; or pass example= (a real-shaped input) to trace and convert any "
                                         "causal model: edgeseq.convert(model, example=x)") from None
        conv = None
    if conv is None:
        from edgeseq.graph import convert_graph

        step = convert_graph(model, example, time_axis)
    else:
        step = conv.convert(model)
    if getattr(model, "pruning", None) is not None:
        step.pruning = model.pruning  # recorded in the manifest
    from edgeseq.proof import PROOF_TOLERANCE, prove

    step.eval()
    step.model_parity = prove(model, step, example if conv is None else None,
                              tolerance=PROOF_TOLERANCE if tolerance is None else tolerance)
    return step

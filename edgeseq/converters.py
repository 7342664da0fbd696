"""The converter registry: parallel-form module type -> (step converter, per-step reference).

A converter turns a trained module into a :class:`~edgeseq.step.StepModule`. Its ``reference`` computes the
module's own parallel outputs at every time step, the oracle that :func:`edgeseq.check_parity` compares with.
:func:`edgeseq.convert.convert` picks one (or the graph converter); the graph converter looks up the modules it
keeps whole here, so that it never imports :mod:`edgeseq.convert` (no import circle between the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgeseq.errors import UnsupportedModuleError
from edgeseq.registry import Registry
from edgeseq.step import StepModule


@dataclass(frozen=True)
class Converter:
    module_type: type
    convert: Callable[[nn.Module], StepModule]
    # reference(module, x) with x: (batch, T, d_in) -> (batch, T, d_out), the output at every time step
    reference: Callable[[nn.Module, torch.Tensor], torch.Tensor]


CONVERTERS: Registry[Converter] = Registry("converter")
# converters for other libraries' classes, keyed by "module.QualName", so that edgeseq needs no import of them
NAMED_CONVERTERS: Registry[Converter] = Registry("converter by class name")


def register_converter(module_type: type, convert: Callable, reference: Callable) -> Converter:
    """Teach :func:`convert` a new module type."""
    return CONVERTERS.register(module_type, Converter(module_type, convert, reference))


def register_named_converter(class_path: str, convert: Callable, reference: Callable) -> Converter:
    """Teach :func:`convert` a class of another library by its path (``"mambapy.mamba.Mamba"``), without importing it."""
    return NAMED_CONVERTERS.register(class_path, Converter(object, convert, reference))


def find_converter(model: nn.Module) -> Converter:
    kind = type(model)
    for cls in kind.__mro__:
        path = f"{cls.__module__}.{cls.__qualname__}"
        found = CONVERTERS.get(cls) if cls in CONVERTERS else (
            NAMED_CONVERTERS.get(path) if path in NAMED_CONVERTERS else None)
        if found is not None:
            if getattr(kind, "forward", None) is not getattr(cls, "forward", None):
                break  # a subclass with a forward of its own (padding first, a chomp after): not what cls computes
            return found
    known = ", ".join(sorted([t.__module__.split(".")[0] + "." + t.__qualname__ for t in CONVERTERS.keys()]
                             + [k.split(".")[0] + "." + k.rsplit(".", 1)[1] for k in NAMED_CONVERTERS.keys()]))
    raise UnsupportedModuleError(
        f"no converter for {type(model).__qualname__}; supported: {known}. "
        "Register one with edgeseq.register_converter(YourModule, convert=fn, reference=fn)"
    )


def reference_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The parallel form's output at every time step, x: (batch, T, d_in) -> (batch, T, d_out)."""
    conv = find_converter(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return conv.reference(model, x)
    finally:
        model.train(was_training)

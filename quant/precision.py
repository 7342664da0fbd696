"""The precision boundary of a step: compute dtype, and how each state tensor is stored between steps.

A :class:`Precision` module sits in ``StepModule.precision``; ``StepModule.step`` calls it with the family's
``_step``. It casts the input and the stored state to what ``_step`` computes with (the state to the step's
``state_math_dtype`` where it has one), runs it, and stores the new state back: float32 (default, untouched),
float16 (a cast: half the bytes), or int8 (symmetric, one scale per tensor calibrated on real rollouts:
``round(s / scale)`` clamped to -127..127). The arithmetic is plain casts,
``round`` and ``clamp``, so every runtime runs it; the stored dtype shows in the ``StateSpec`` and the manifest.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.step import State, StateSpec, dtype_name

FP16_MAX = 65504.0


class Precision(nn.Module):
    def __init__(self, float_spec: StateSpec, storage: dict[str, str], scales: dict[str, float],
                 compute_dtype: torch.dtype = torch.float32, state_math_dtype: torch.dtype | None = None):
        super().__init__()
        self.float_spec = float_spec
        self.compute_dtype = compute_dtype
        # what the loaded state is cast to: the step's own state arithmetic dtype if it has one (StepModule.
        # state_math_dtype: the step then casts its per-step contributions to it, and what it reads out of the
        # state back to the compute dtype), else the compute dtype
        self.state_dtype = state_math_dtype or compute_dtype
        self.storage = tuple(storage.get(t.name, "float32") for t in float_spec.tensors)
        self.scales = tuple(float(scales.get(t.name, 1.0)) for t in float_spec.tensors)
        for t, kind in zip(float_spec.tensors, self.storage):
            if kind == "float16" and abs(t.fill) > FP16_MAX:
                raise ConfigError(f"state {t.name!r} starts at {t.fill:g}, outside float16's range; keep it float32")
            if kind == "int8" and t.fill != 0.0:
                raise ConfigError(f"state {t.name!r} starts at {t.fill:g}, not 0: int8 storage cannot hold it; keep it float")
        # the scales also live in a buffer so that state_dict() and the fingerprint see them
        self.register_buffer("state_scales", torch.tensor(self.scales, dtype=torch.float32))

    def stored_spec(self) -> StateSpec:
        tensors = tuple(
            dataclasses.replace(t, dtype=kind if kind != "float32" else t.dtype)
            for t, kind in zip(self.float_spec.tensors, self.storage)
        )
        return dataclasses.replace(self.float_spec, tensors=tensors)

    def load(self, i: int, s: torch.Tensor) -> torch.Tensor:
        kind = self.storage[i]
        if kind == "int8":
            s = s.to(torch.float32) * self.scales[i]
        return s.to(self.state_dtype)

    def store(self, i: int, s: torch.Tensor) -> torch.Tensor:
        kind = self.storage[i]
        if kind == "int8":
            return torch.clamp(torch.round(s.to(torch.float32) / self.scales[i]), -127, 127).to(torch.int8)
        if kind == "float16":
            return s.to(torch.float16)
        return s.to(torch.float32)

    def forward(self, fn: Callable, x: torch.Tensor, state: State):
        xin = x.to(self.compute_dtype) if x.is_floating_point() else x
        y, new = fn(xin, tuple(self.load(i, s) for i, s in enumerate(state)))
        return y.to(torch.float32), tuple(self.store(i, s) for i, s in enumerate(new))

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{t.name}={k}" for t, k in zip(self.float_spec.tensors, self.storage) if k != "float32")
        math = f", state math={dtype_name(self.state_dtype)}" if self.state_dtype != self.compute_dtype else ""
        return f"compute={dtype_name(self.compute_dtype)}{math}, state: {kinds or 'float32'}"


def state_storage(step) -> dict[str, str]:
    """How each state tensor of ``step`` is stored: its ``Precision`` module's policy, or float32 throughout."""
    prec = getattr(step, "precision", None)
    if prec is None:
        return {n: "float32" for n in step.state_spec.names}
    return dict(zip(prec.float_spec.names, prec.storage))

"""Parity between a parallel form and its step form (or between two runtimes).

Errors are reported per time step and overall: ``abs`` is the max absolute difference; ``rel`` is that
difference divided by the largest reference magnitude at the same step (a scale-free error that does not
blow up where one output element happens to cross zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgeseq.errors import ShapeError
from edgeseq.step import StepModule

_TINY = 1e-12


@dataclass
class ParityReport:
    steps: int
    batch: int
    max_abs_error: float
    max_rel_error: float
    max_scaled_error: float  # abs error / max(1, |reference|) per step: absolute for small outputs, relative for large
    per_step_abs: np.ndarray = field(repr=False)  # (T,)
    per_step_rel: np.ndarray = field(repr=False)  # (T,)
    delay: int = 0
    what: str = "step vs parallel"
    model_overflow_frame: int | None = None  # first frame where the reference itself is NaN/Inf (compared before it)

    @property
    def worst_step(self) -> int:
        return int(np.argmax(self.per_step_abs)) if self.steps else 0

    def summary(self) -> dict:
        return {
            "what": self.what,
            "steps": self.steps,
            "batch": self.batch,
            "delay": self.delay,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "max_scaled_error": self.max_scaled_error,
            "worst_step": self.worst_step,
        }

    def passes(self, tolerance: float) -> bool:
        """True when the scaled error (abs error / max(1, |reference|)) stays within ``tolerance``."""
        return self.max_scaled_error <= tolerance


def compare(ref: np.ndarray | torch.Tensor, got: np.ndarray | torch.Tensor, *, what: str, delay: int = 0) -> ParityReport:
    """Compare outputs laid out (T, batch, ...) step by step."""
    ref = _np(ref).astype(np.float64)
    got = _np(got).astype(np.float64)
    if ref.shape != got.shape:
        raise ShapeError(f"parity: reference shape {ref.shape} != compared shape {got.shape}")
    T, B = ref.shape[0], ref.shape[1] if ref.ndim > 1 else 1
    diff = np.abs(ref - got).reshape(T, -1)
    scale = np.abs(ref).reshape(T, -1)
    per_abs = diff.max(axis=1) if diff.size else np.zeros(T)
    per_scale = np.maximum(scale.max(axis=1), _TINY) if scale.size else np.ones(T)
    per_abs[:delay] = 0.0
    per_rel = per_abs / per_scale
    per_scaled = per_abs / np.maximum(per_scale, 1.0)
    return ParityReport(
        steps=T, batch=B, max_abs_error=float(per_abs.max(initial=0.0)), max_rel_error=float(per_rel.max(initial=0.0)),
        max_scaled_error=float(per_scaled.max(initial=0.0)), per_step_abs=per_abs, per_step_rel=per_rel, delay=delay, what=what,
    )


def rollout(step: StepModule, x: torch.Tensor, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run ``step`` over x: (T, batch, d_in), feeding the state back. Returns (T, batch, d_out)."""
    state = step.init_state(x.shape[1])
    ys = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = step.step(x[t], state)
            ys.append(y)
            if progress is not None and (t + 1) % 256 == 0:
                progress(256)
    if progress is not None and x.shape[0] % 256:
        progress(x.shape[0] % 256)
    return torch.stack(ys) if ys else torch.empty(0, x.shape[1], step.d_out)


def check_parity(
    model: nn.Module, step: StepModule, x: torch.Tensor, progress: Callable[[int], None] | None = None
) -> ParityReport:
    """Compare the parallel form ``model`` with its step form ``step`` on x: (batch, T, d_in).

    The parallel form runs once over the whole sequence; the step form runs one step at a time with its
    state fed back. Works for T = 10,000 and beyond (memory is linear in T for the reference only).
    """
    from edgeseq.converters import reference_outputs

    if callable(getattr(step, "frames_of", None)):  # a traced model: x in the model's own layout, the model itself as reference
        step.eval()
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                ref_full = step.outputs_of(model(x))
        finally:
            model.train(was)
        return _compare_rollout(step, step.frames_of(x), ref_full, progress)
    if x.dim() != 3 or x.shape[-1] != step.d_in:
        raise ShapeError(f"check_parity: expected x of shape (batch, T, {step.d_in}), got {tuple(x.shape)}")
    step.eval()
    return _compare_rollout(step, x, reference_outputs(model, x), progress)


def _compare_rollout(step: StepModule, x: torch.Tensor, ref: torch.Tensor, progress) -> ParityReport:
    """The step rolled out over x (batch, T, d_in) against the parallel outputs ref (batch, T_out, d_out)."""
    got = rollout(step, x.transpose(0, 1).contiguous(), progress)  # (T, B, d_out)
    delay, stride = step.state_spec.delay, step.state_spec.output_stride
    if delay or stride > 1:  # the step's output at delay + k * stride is the parallel output k; the others are not
        got = got[delay::stride]
        if ref.shape[1] < got.shape[0]:
            raise ShapeError(f"check_parity: the parallel form gave {ref.shape[1]} outputs, the step {got.shape[0]} after its delay {delay}")
        ref = ref[:, : got.shape[0]]
    what = "step vs parallel"
    if delay or stride > 1:
        what += f" (step shifted by its delay {delay}" + (f", one output every {stride} steps)" if stride > 1 else ")")
    return compare(ref.transpose(0, 1), got, what=what)


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)

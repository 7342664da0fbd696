"""Calibration data: real sequences rolled through the step with its own state fed back.

``calib`` may be a bundled data set name (its train split: every series from a fresh state), one stream
``(T, d_in)`` or ``(T, batch, d_in)``, or a list of series ``(T_i, d_in)``. Anything else, or frames of the wrong
width, is refused with expected vs got before any work starts.
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from edgeseq.errors import ShapeError
from edgeseq.step import StepModule

DEFAULT_MAX_FRAMES = 5_000


@dataclass
class Calibration:
    """Series (each (T_i, batch, d_in), float32) and where they came from."""

    series: list[torch.Tensor]
    source: str

    @property
    def frames(self) -> int:
        return int(sum(s.shape[0] * s.shape[1] for s in self.series))

    def stream(self) -> torch.Tensor:
        """All series one after another along T (batch 1): (T, 1, d_in)."""
        return torch.cat([s.permute(1, 0, 2).reshape(-1, 1, s.shape[2]) for s in self.series])

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "series": len(self.series), "frames": self.frames}


def calibration_data(step: StepModule, calib: Any, max_frames: int = DEFAULT_MAX_FRAMES) -> Calibration:
    if isinstance(calib, Calibration):
        return calib
    d_in = step.d_in
    want = (f"(T, {d_in}) or (T, batch, {d_in}) frames, a list of (T_i, {d_in}) series, a data set name or a data "
            "file (.npz, .npy, .csv, ...)")
    from edgeseq.data import SequenceDataset

    if isinstance(calib, (str, Path, SequenceDataset)):
        from edgeseq.data import check_fits, load

        ds = load(calib, d_in=d_in)
        check_fits(ds, d_in, what="calibration data")
        series, total = [], 0
        for i in range(len(ds.train)):
            s = torch.as_tensor(np.asarray(ds.train.series(i), dtype=np.float32))[:, None, :]
            series.append(s)
            total += s.shape[0]
            if total >= max_frames:
                break
        return Calibration(series, f"{ds.name} (train split, {len(series)} series)")
    if isinstance(calib, (list, tuple)):
        series = [_as_frames(s, d_in, want) for s in calib]
        if not series:
            raise ShapeError(f"calibration data: empty list; expected {want}")
        return Calibration(series, f"{len(series)} user series")
    return Calibration([_as_frames(calib, d_in, want)], "user stream")


def _as_frames(x: Any, d_in: int, want: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"calibration data: expected {want}, got {type(x).__name__} ({exc})") from None
    if t.dim() == 2:
        t = t[:, None, :]
    if t.dim() != 3 or t.shape[-1] != d_in or t.shape[0] == 0:
        raise ShapeError(f"calibration data: expected {want}, got shape {tuple(t.shape)}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ShapeError("calibration data: contains NaN or Inf")
    return t


def rollout(step: StepModule, cal: Calibration, on_step: Callable[[torch.Tensor, tuple], None] | None = None) -> None:
    """Run every calibration series through the step's float computation (``_step``, before any precision boundary
    is installed) from a fresh state, feeding the state back; ``on_step(y, new_state)`` sees each step's results."""
    with torch.no_grad():
        for s in cal.series:
            state = step.state_spec.init(s.shape[1])
            for t in range(s.shape[0]):
                y, state = step._step(s[t], state)
                if on_step is not None:
                    on_step(y, state)

"""What a parallel form returns for its task, shared by every family."""

from __future__ import annotations

import torch


def task_output(y: torch.Tensor, task: str, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """y: (B, T, d_out) outputs at every step. ``sequence``: all of them; ``classify``: each series' output at
    its last valid step (``lengths``; the last step when None) -> (B, d_out)."""
    if task == "sequence":
        return y
    if lengths is None:
        return y[:, -1]
    idx = (lengths.to(y.device).long() - 1).clamp(min=0)  # (B,)
    return y[torch.arange(y.shape[0], device=y.device), idx]

"""Runtime ``torch``: the eager step module, the reference every other runtime is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseq.runtimes.base import Runtime, register_runtime
from edgeseq.runtimes.session import StreamSession
from edgeseq.step import StepModule


class TorchBackend:
    def __init__(self, step: StepModule):
        self.step = step.eval()

    def run(self, x: np.ndarray, state: list[np.ndarray]):
        with torch.no_grad():
            y, new = self.step.step(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
        return y.numpy(), [t.numpy() for t in new]


@register_runtime
class TorchRuntime(Runtime):
    name = "torch"
    python_module = "torch"

    def open_model(self, model, batch: int | None = None) -> StreamSession:
        from edgeseq.checkpoint import load
        from edgeseq.convert import convert

        if isinstance(model, (str, Path)):
            model = load(model)
        step = convert(model)
        return StreamSession(
            TorchBackend(step), runtime=self.name, d_in=step.d_in, d_out=step.d_out, spec=step.state_spec,
            batch=1 if batch is None else int(batch), fingerprint=step.fingerprint(), train_length=step.info.train_length,
            vocab_size=step.vocab_size,
        )

    def open_file(self, path: Path, manifest: dict, batch: int | None = None) -> StreamSession:
        from edgeseq.errors import ArtifactError

        raise ArtifactError(
            f"{path}: the torch runtime runs model directories and modules, not {manifest['target']} files; "
            f"open it with runtime={manifest['runtime']['name']!r}"
        )

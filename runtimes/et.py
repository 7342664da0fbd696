"""Runtime ``executorch``: loads a ``.pte`` through ``executorch.runtime`` (XNNPACK kernels are built in)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from edgeseq.errors import ArtifactError, require
from edgeseq.runtimes.base import Runtime, register_runtime


class ExecuTorchBackend:
    def __init__(self, path: Path, threads: int | None = 1):
        require("executorch", "executorch")
        from executorch.runtime import Runtime as EtRuntime

        with native_stderr_quiet():
            if threads is not None:
                set_threads(threads)
            try:
                self.method = EtRuntime.get().load_program(str(path)).load_method("forward")
            except Exception as exc:
                raise ArtifactError(
                    f"{path}: ExecuTorch cannot load it ({str(exc).splitlines()[0]}; EDGESEQ_DEBUG=1 shows its log)"
                ) from None

    def run(self, x: np.ndarray, state: list[np.ndarray]):
        out = self.method.execute([torch.from_numpy(x), *(torch.from_numpy(s) for s in state)])
        # outputs live in the program's planned memory and are overwritten by the next call: copy them
        return out[0].numpy().copy(), [t.numpy().copy() for t in out[1:]]


@contextlib.contextmanager
def native_stderr_quiet():
    """Hide the ExecuTorch runtime's C++ info log (cpuinfo probing, thread-pool resets) while it loads.

    Set ``EDGESEQ_DEBUG=1`` (the CLI's ``--debug`` does) to keep it."""
    if os.environ.get("EDGESEQ_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured): nothing to hide
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def set_threads(n: int) -> None:
    """XNNPACK's thread pool size (process-wide in ExecuTorch's Python bindings)."""
    try:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != n:
            portable_lib._unsafe_reset_threadpool(n)
    except (ImportError, AttributeError):  # pragma: no cover - older executorch
        pass


@register_runtime
class ExecuTorchRuntime(Runtime):
    name = "executorch"
    python_module = "executorch.runtime"

    def open_file(self, path: Path, manifest: dict, batch: int | None = None, threads: int | None = 1):
        return self.session(ExecuTorchBackend(path, threads), manifest, path, batch)

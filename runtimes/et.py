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


def program_inputs(x: np.ndarray, state: list[np.ndarray], channels_last: frozenset[int]) -> list[torch.Tensor]:
    """The method's inputs: state tensor i channels-last when the program was exported so (``channels_last``,
    from the manifest), contiguous otherwise. Free when a tensor already has that layout (the state the program
    gave back last call): the conversion only costs for a state that comes from elsewhere (an init state, a saved
    one). Without it a channels-last program would read NCHW bytes as NHWC and compute garbage without an error."""
    ts = [torch.from_numpy(x)]
    for i, s in enumerate(state):
        t = torch.from_numpy(s)
        ts.append(t.contiguous(memory_format=torch.channels_last) if i in channels_last else t.contiguous())
    return ts


class ExecuTorchBackend:
    def __init__(self, path: Path, threads: int | None = 1, channels_last: frozenset[int] = frozenset()):
        self.channels_last = channels_last
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
        out = self.method.execute(program_inputs(x, state, self.channels_last))
        # outputs live in the program's planned memory and are overwritten by the next call: copy them (keeping
        # their memory layout: a channels-last state goes back in as it came out)
        return out[0].numpy().copy(), [t.numpy().copy(order="K") for t in out[1:]]


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
        return self.session(ExecuTorchBackend(path, threads, channels_last_indices(manifest)), manifest, path, batch)


def channels_last_indices(manifest: dict) -> frozenset[int]:
    """Which state inputs the program takes channels-last (manifest ``runtime.channels_last_state``; absent in
    manifests written before it: none)."""
    names = manifest.get("runtime", {}).get("channels_last_state") or []
    order = [t["name"] for t in manifest["state_spec"]["tensors"]]
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ArtifactError(f"manifest: channels_last_state names {unknown[0]!r}, which is not a state tensor")
    return frozenset(order.index(n) for n in names)

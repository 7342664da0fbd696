"""The runtime registry and :func:`open`."""

from __future__ import annotations

from pathlib import Path

from edgeseq.registry import Registry
from edgeseq.runtimes.session import StreamSession, check_batch
from edgeseq.step import StateSpec


class Runtime:
    name: str = ""
    python_module: str = ""  # the Python package that loads this runtime (its import is timed apart by profiles)

    def open_file(self, path: Path, manifest: dict, batch: int | None = None) -> StreamSession:
        raise NotImplementedError

    def open_model(self, model, batch: int | None = None) -> StreamSession:
        from edgeseq.errors import ArtifactError

        raise ArtifactError(f"runtime {self.name!r} opens exported files, not in-memory models")

    def session(self, backend, manifest: dict, path: Path, batch: int | None, cls=StreamSession) -> StreamSession:
        return cls(
            backend, runtime=self.name, d_in=manifest["inputs"][0]["shape"][1], d_out=manifest["outputs"][0]["shape"][1],
            spec=StateSpec.from_dict(manifest["state_spec"]), batch=check_batch(manifest, batch),
            fingerprint=manifest["fingerprint"], train_length=manifest.get("train_length"), path=path,
            vocab_size=manifest.get("vocab_size") or 0,
        )


RUNTIMES: Registry[Runtime] = Registry("runtime")


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    RUNTIMES.register(cls.name, cls())
    return cls


def open(path, runtime: str | None = None, batch: int | None = None) -> StreamSession:  # noqa: A001 - public API name
    """Open a streaming session.

    ``path`` is an exported artifact (model file or its ``.edgeseq.json``), a model directory, or an
    ``nn.Module``; the last two run on the eager ``torch`` runtime. ``runtime`` overrides the manifest's.
    """
    from torch import nn

    from edgeseq import manifest as man

    if isinstance(path, nn.Module) or (isinstance(path, (str, Path)) and Path(path).is_dir()):
        return RUNTIMES.get(runtime or "torch").open_model(path, batch=batch)
    model_file, _, data = man.resolve_artifact(path)
    man.check_file(model_file, data)
    model_file, data = man.select_batch(model_file, data, batch)  # a fixed-batch target's program for this batch
    rt = RUNTIMES.get(runtime or data["runtime"]["name"])
    verify = getattr(rt, "verify", None)
    if verify is not None:  # a file from elsewhere is checked before the runtime loads it (ExecuTorch: in a child process)
        verify(model_file, data)
    return rt.open_file(model_file, data, batch=batch)

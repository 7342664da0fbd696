"""The artifact manifest (``<file>.edgeseq.json``, e.g. ``lstm.onnx.edgeseq.json``): one description of a step artifact for every runtime.

Fields (schema version 1):

- ``schema_version``, ``edgeseq_version``, ``created``
- ``family``, ``config``, ``task``, ``train_length``: where the step came from
- ``target`` (onnx | executorch | ...), ``file`` (the model file's name beside the manifest), ``file_sha256``
- ``runtime``: ``{"name", "version", ...}`` plus target details (ONNX opset, ExecuTorch backend)
- ``batch``: an integer when the artifact has a fixed batch, or ``"dynamic"``
- ``inputs`` / ``outputs``: ``[{"name", "shape", "dtype"}]``, shapes with ``"batch"`` for the batch axis
- ``state_spec``: :meth:`edgeseq.step.StateSpec.to_dict`
- ``quantization``, ``pruning``: configs, or null
- ``fingerprint``: sha256 of family, config and weights; a saved stream state carries it
- ``parity``: the error measured at export time against eager over a rollout with the state fed back
- ``model_parity``: the artifact's outputs over that rollout against the model's own forward, when the model was
  at hand at export (a model directory, a ``.pt2``, a Python model); ``conversion_proof``: the step against the
  model at conversion (:mod:`edgeseq.proof`)
- ``graph``: operator statistics of the exported graph (delegated vs non-delegated ops for ExecuTorch)
- ``cost``: ``flops_per_step`` counted from the eager step's graph (:mod:`edgeseq.flops`); for continual
  networks also ``offline_flops_per_output`` (recomputing the offline model over ``offline_frames`` frames for
  each new output) and ``offline_over_step``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseq.errors import ArtifactError
from edgeseq.step import StateSpec

SCHEMA_VERSION = 1
SUFFIX = ".edgeseq.json"
REQUIRED = (
    "schema_version", "edgeseq_version", "family", "config", "target", "file", "runtime", "batch",
    "inputs", "outputs", "state_spec", "fingerprint", "parity",
)


def manifest_path_for(model_path: Path) -> Path:
    """``out/model.onnx`` -> ``out/model.onnx.edgeseq.json`` (one manifest per file, so targets can share a stem)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SUFFIX)


def resolve_artifact(path: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """Given a model file or its manifest, return (model file, manifest path, validated manifest)."""
    path = Path(path)
    if path.name.endswith(SUFFIX):
        data = read(path)
        return path.with_name(data["file"]), path, data
    if not path.exists():
        raise ArtifactError(f"{path}: no such file")
    man = manifest_path_for(path)
    if not man.is_file():
        raise ArtifactError(f"{path}: no manifest beside it (expected {man.name}); export it with edgeseq export")
    return path, man, read(man)


MAX_BYTES = 16 << 20  # a manifest is a few KiB (its largest tables: per-op breakdowns); nothing larger is parsed


def read(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_file():
        from edgeseq.data.sizes import check_whole

        check_whole(path, ArtifactError, cap=MAX_BYTES, what="manifest", factor=16)  # JSON parsed: ~10x its text
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such manifest") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({exc})") from None
    validate(data, where=str(path))
    return data


def validate(data: Any, where: str = "manifest") -> None:
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ArtifactError(f"{where}: manifest lacks {', '.join(missing)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(f"{where}: manifest schema {data['schema_version']} is not supported (this edgeseq reads {SCHEMA_VERSION})")
    try:
        StateSpec.from_dict(data["state_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: invalid state_spec ({exc})") from None
    for key in ("inputs", "outputs"):
        if not isinstance(data[key], list) or not all(isinstance(e, dict) and {"name", "shape", "dtype"} <= set(e) for e in data[key]):
            raise ArtifactError(f"{where}: invalid {key}")
    if not isinstance(data["file"], str) or Path(data["file"]).name != data["file"] or data["file"] in ("", ".", ".."):
        raise ArtifactError(f"{where}: 'file' must be a plain file name beside the manifest, got {data['file']!r}")
    if not (data["batch"] == "dynamic" or (isinstance(data["batch"], int) and data["batch"] >= 1)):
        raise ArtifactError(f"{where}: batch must be a positive integer or 'dynamic'")
    progs = data.get("batch_programs", [])
    if not isinstance(progs, list) or not all(
            isinstance(e, dict) and isinstance(e.get("batch"), int) and e["batch"] >= 1 and isinstance(e.get("file"), str)
            and e["file"] and Path(e["file"]).name == e["file"] and e["file"] not in (".", "..") for e in progs):
        raise ArtifactError(f"{where}: invalid batch_programs (a list of {{batch, file, file_sha256}} beside the manifest)")


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(model_file: Path, data: dict) -> None:
    """Refuse a model file that is not the one its manifest describes (replaced, truncated, corrupted)."""
    if not Path(model_file).is_file():
        raise ArtifactError(f"{model_file}: the manifest's model file is missing")
    want = data.get("file_sha256")
    if want and file_sha256(model_file) != want:
        raise ArtifactError(f"{model_file}: file does not match its manifest (sha256 differs); re-export it")


def batches(data: dict) -> list[int] | None:
    """The batch sizes an artifact has programs for (its own and its ``batch_programs``'), None when dynamic."""
    if data["batch"] == "dynamic":
        return None
    return sorted({int(data["batch"]), *(int(e["batch"]) for e in data.get("batch_programs", []))})


def rebatch_hint(data: dict, batch: int) -> tuple[str, str]:
    """The batch sizes an artifact has programs for, and the export option that adds ``batch``:
    ``("1, 8", "--batch 1,8,16")``."""
    have = batches(data) or []  # a fixed batch: never empty
    return ", ".join(map(str, have)), "--batch " + ",".join(map(str, sorted({*have, int(batch)})))


def select_batch(model_file: Path, data: dict, batch: int | None) -> tuple[Path, dict]:
    """The program for ``batch``: ``model_file`` itself, or the one its manifest lists in ``batch_programs`` (written
    beside it with its own manifest), checked to be that program of the same model. Unchanged when no program has
    that batch (the runtime then refuses it, naming the batch sizes there are)."""
    if batch is None or data["batch"] == "dynamic" or int(batch) == data["batch"]:
        return model_file, data
    entry = next((e for e in data.get("batch_programs", []) if e["batch"] == int(batch)), None)
    if entry is None:
        return model_file, data
    other = Path(model_file).with_name(entry["file"])
    if not other.is_file():
        raise ArtifactError(f"{other}: the batch-{batch} program listed in {Path(model_file).name}'s manifest is missing")
    f, _, d = resolve_artifact(other)
    if d["fingerprint"] != data["fingerprint"] or d["batch"] != int(batch) or d.get("file_sha256") != entry.get("file_sha256"):
        raise ArtifactError(f"{other}: not the batch-{batch} program of {Path(model_file).name} (its manifest describes "
                            "another model, batch or file); re-export both")
    check_file(f, d)
    return f, d


def io_names(spec: StateSpec) -> tuple[list[str], list[str]]:
    """Graph input and output names: ``x, state_<name>...`` -> ``y, next_state_<name>...``."""
    return ["x"] + [f"state_{n}" for n in spec.names], ["y"] + [f"next_state_{n}" for n in spec.names]

"""Model directories: ``config.json`` + ``model.safetensors``. No pickle anywhere.

``config.json``::

    {"format": "edgeseq", "edgeseq_version": "...", "family": "rnn", "config": {...}, "train_length": 29}

Loading validates everything before a model is returned: the family and config, that every tensor in
``model.safetensors`` exists with the shape the config implies, and that no weight is NaN or Inf.
Other directory formats (Hugging Face Mamba, later) register a loader in ``DIR_FORMATS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgeseq._version import __version__
from edgeseq.config import config_from_dict, config_to_dict
from edgeseq.errors import ArtifactError, ConfigError, WeightsError
from edgeseq.families import FAMILIES, family_of
from edgeseq.fsutil import commit_files, staging_dir
from edgeseq.registry import Registry

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class DirFormat:
    name: str
    detect: Callable[[dict], bool]  # given the parsed config.json
    load: Callable[[Path, dict], nn.Module]


DIR_FORMATS: Registry[DirFormat] = Registry("model directory format")


def save(model: nn.Module, directory: str | Path, *, train_length: int | None = None) -> Path:
    """Write ``model`` (a registered family's parallel form) as ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import save_file

    fam = family_of(model)
    if fam is None:
        raise ConfigError(
            f"edgeseq.save needs a model of a registered family ({', '.join(FAMILIES.keys())}), got {type(model).__name__}; "
            "wrap plain modules first (e.g. RNNModel.from_module(lstm, head))"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    check_finite(sd, where=str(directory / WEIGHTS_NAME))
    tl = train_length if train_length is not None else getattr(model, "train_length", None)
    cfg = {
        "format": "edgeseq",
        "edgeseq_version": __version__,
        "family": fam.name,
        "config": config_to_dict(model.config),
        "train_length": tl,
    }
    if getattr(model, "pruning", None) is not None:
        cfg["pruning"] = model.pruning  # what edgeseq.quant.prune_ did (method config, sparsity, fine-tuning)
    directory.mkdir(parents=True, exist_ok=True)
    with staging_dir(directory) as tmp:
        save_file(sd, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "family": fam.name})
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        commit_files([(tmp / WEIGHTS_NAME, directory / WEIGHTS_NAME), (tmp / CONFIG_NAME, directory / CONFIG_NAME)])
    return directory


def load(directory: str | Path) -> nn.Module:
    """Load a model directory (any registered format) and validate its weights. Returns the model in eval mode."""
    directory = Path(directory)
    raw = read_config(directory)
    cfg_path = directory / CONFIG_NAME
    fmt = DIR_FORMATS.find(lambda _k, f: f.detect(raw))
    if fmt is None:
        raise ConfigError(
            f"{cfg_path}: unrecognised model directory (no 'family' key, and no other known format: "
            f"{', '.join(DIR_FORMATS.keys())})"
        )
    model = fmt.load(directory, raw).eval()
    if isinstance(raw.get("pruning"), dict):
        model.pruning = raw["pruning"]
    return model


def read_config(directory: Path) -> dict:
    """The parsed ``config.json`` of a model directory (any format), or one clear error."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a model directory (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise ArtifactError(f"{directory}: missing {CONFIG_NAME}")
    from edgeseq.data.sizes import check_whole

    check_whole(cfg_path, ConfigError, cap=16 << 20, what="config.json", factor=16)  # a config is a few hundred bytes
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a JSON object")
    return raw


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: missing weights file")
    from edgeseq.data.sizes import check_whole

    check_whole(path, WeightsError, what="weights file")  # its tensors are read whole (safetensors checks its header
    try:                                                  # against the file itself)
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers and truncation
        raise WeightsError(f"{path}: cannot read safetensors ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def check_finite(sd: dict[str, torch.Tensor], where: str) -> None:
    for name, t in sd.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            n_bad = int((~torch.isfinite(t)).sum())
            raise WeightsError(f"{where}: tensor {name!r} has {n_bad} NaN/Inf value(s)")


def load_state_checked(model: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Load ``sd`` into ``model`` after checking names, shapes, dtypes and finiteness; one clear line on failure."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(sd[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:3]) + (f" (+{len(mismatched) - 3} more)" if len(mismatched) > 3 else ""))
    if missing:
        problems.append("missing " + ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:3]) + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    if problems:
        raise WeightsError(f"{where}: weights do not match the config: " + " | ".join(problems))
    check_finite(sd, where)
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()})


def _load_edgeseq_dir(directory: Path, raw: dict) -> nn.Module:
    cfg_path = directory / CONFIG_NAME
    fam = FAMILIES.get(raw["family"])
    if "config" not in raw:
        raise ConfigError(f"{cfg_path}: missing 'config'")
    cfg = config_from_dict(fam.config_cls, raw["config"], what=f"{cfg_path} config")
    model = fam.model_cls(cfg)
    sd = read_safetensors(directory / WEIGHTS_NAME)
    load_state_checked(model, sd, str(directory / WEIGHTS_NAME))
    tl = raw.get("train_length")
    if tl is not None and (not isinstance(tl, int) or tl < 1):
        raise ConfigError(f"{cfg_path}: train_length must be a positive integer or null, got {tl!r}")
    model.train_length = tl
    return model


DIR_FORMATS.register("edgeseq", DirFormat("edgeseq", lambda raw: "family" in raw, _load_edgeseq_dir))

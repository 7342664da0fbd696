"""Hugging Face ``transformers`` Mamba and Mamba-2 models -> family ``mamba``.

Reads the directory ``save_pretrained`` writes (``config.json`` + ``model.safetensors``, or safetensors shards
with ``model.safetensors.index.json``) without importing ``transformers``, or takes a model in memory. Pickled
``pytorch_model.bin`` checkpoints are refused. ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` become language
models (token id in, logits out); ``MambaModel`` / ``Mamba2Model`` return the final normalised hidden state.

Before any weight is loaded, the sizes the weights imply (state size, convolution kernel, expansion, heads,
layers, vocabulary) are compared with ``config.json`` and a contradiction is reported by its config field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from edgeseq.checkpoint import (
    CONFIG_NAME, DIR_FORMATS, DirFormat, check_finite, load_state_checked, read_config, read_safetensors,
)
from edgeseq.config import config_from_dict
from edgeseq.convert import convert, register_named_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError, WeightsError
from edgeseq.models.mamba import MambaConfig, MambaModel
from edgeseq.registry import Registry


@dataclass(frozen=True)
class HfArch:
    """How one Hugging Face ``model_type`` maps onto family ``mamba``."""

    model_type: str
    config: Callable[[dict], dict]  # HF config dict -> MambaConfig fields (without d_in / d_out / head / vocab)
    implied: Callable[[dict[str, torch.Tensor]], dict[str, int]]  # weights -> the HF config values they imply


HF_ARCHS: Registry[HfArch] = Registry("Hugging Face model type")


def _need(raw: dict, key: str, where: str):
    if key not in raw:
        raise ConfigError(f"{where}: missing {key!r}")
    return raw[key]


def _check_act(raw: dict, where: str) -> None:
    act = raw.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ConfigError(f"{where}: hidden_act={act!r} is not supported (Mamba uses silu)")


def _mamba1_config(raw: dict, where: str) -> dict:
    _check_act(raw, where)
    D = int(_need(raw, "hidden_size", where))
    rank = raw.get("time_step_rank", "auto")
    return {
        "variant": "mamba1", "d_model": D, "n_layers": int(_need(raw, "num_hidden_layers", where)),
        "d_state": int(_need(raw, "state_size", where)), "d_conv": int(raw.get("conv_kernel", 4)),
        "expand": int(raw.get("expand", 2)), "dt_rank": math.ceil(D / 16) if rank == "auto" else int(rank),
        "norm_eps": float(raw.get("layer_norm_epsilon", 1e-5)), "bias": bool(raw.get("use_bias", False)),
        "conv_bias": bool(raw.get("use_conv_bias", True)),
    }


def _mamba1_implied(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    E, N = sd["layers.0.mixer.A_log"].shape
    D = sd["layers.0.norm.weight"].shape[0]
    return {
        "hidden_size": D, "state_size": N, "conv_kernel": sd["layers.0.mixer.conv1d.weight"].shape[2],
        "expand": E // D if E % D == 0 else E / D, "time_step_rank": sd["layers.0.mixer.dt_proj.weight"].shape[1],
    }


def _float(v: Any, where: str) -> float:
    """A float from config.json; transformers writes infinity as {"__float__": "Infinity"}."""
    if isinstance(v, dict) and "__float__" in v:
        v = v["__float__"]
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {v!r}") from None


def _mamba2_config(raw: dict, where: str) -> dict:
    _check_act(raw, where)
    limit = raw.get("time_step_limit") or [0.0, math.inf]
    lo, hi = (_float(v, where) for v in limit)
    if lo > 0.0 or hi != math.inf:
        raise ConfigError(f"{where}: time_step_limit=[{lo}, {hi}] is not supported (only the default [0.0, inf])")
    D, expand = int(_need(raw, "hidden_size", where)), int(raw.get("expand", 2))
    heads, head_dim = int(_need(raw, "num_heads", where)), int(_need(raw, "head_dim", where))
    if heads * head_dim != expand * D:
        raise ConfigError(f"{where}: num_heads * head_dim ({heads} * {head_dim}) must equal expand * hidden_size ({expand} * {D})")
    return {
        "variant": "mamba2", "d_model": D, "n_layers": int(_need(raw, "num_hidden_layers", where)),
        "d_state": int(_need(raw, "state_size", where)), "d_conv": int(raw.get("conv_kernel", 4)), "expand": expand,
        "head_dim": head_dim, "n_groups": int(raw.get("n_groups", 1)), "norm_eps": float(raw.get("layer_norm_epsilon", 1e-6)),
        "bias": bool(raw.get("use_bias", False)), "conv_bias": bool(raw.get("use_conv_bias", True)),
        "chunk_size": int(raw.get("chunk_size", 64)),
    }


def _mamba2_implied(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    H = sd["layers.0.mixer.A_log"].shape[0]
    E = sd["layers.0.mixer.norm.weight"].shape[0]
    D = sd["layers.0.norm.weight"].shape[0]
    conv_dim = sd["layers.0.mixer.conv1d.weight"].shape[0]
    return {
        "hidden_size": D, "expand": E // D if E % D == 0 else E / D, "num_heads": H,
        "conv_kernel": sd["layers.0.mixer.conv1d.weight"].shape[2], "_bc_channels": conv_dim - E,
    }


HF_ARCHS.register("mamba", HfArch("mamba", _mamba1_config, _mamba1_implied))
HF_ARCHS.register("mamba2", HfArch("mamba2", _mamba2_config, _mamba2_implied))


# ------------------------------------------------------------------------------------------------ weights
def _normalise_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """HF names -> ours. Returns the renamed dict and whether it came from a *ForCausalLM (``backbone.`` prefix)."""
    causal = any(k.startswith("backbone.") for k in sd)
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("backbone.")
        if k == "embeddings.weight":
            k = "embed.weight"
        elif k == "lm_head.weight":
            k = "head.weight"
        out[k] = v
    return out, causal


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{index}: not a safetensors index ({exc})") from None
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            sd.update(read_safetensors(directory / shard))
        return sd
    if any((directory / n).is_file() for n in ("pytorch_model.bin", "model.pt", "pytorch_model.bin.index.json")):
        raise WeightsError(
            f"{directory}: only a pickled checkpoint (pytorch_model.bin) is here; edgeseq never unpickles. "
            "Re-save it with save_pretrained(dir, safe_serialization=True)"
        )
    raise WeightsError(f"{directory}: missing model.safetensors")


# HF config field -> its value in the translated MambaConfig fields
_STATED = {
    "hidden_size": lambda c: c["d_model"], "state_size": lambda c: c["d_state"], "conv_kernel": lambda c: c["d_conv"],
    "expand": lambda c: c["expand"], "time_step_rank": lambda c: c["dt_rank"],
    "num_heads": lambda c: c["expand"] * c["d_model"] // c["head_dim"],
}


def _check_implied(arch: HfArch, raw: dict, cfg: dict, sd: dict[str, torch.Tensor], where: str) -> None:
    required = ["layers.0.mixer.A_log", "layers.0.norm.weight", "layers.0.mixer.conv1d.weight"]
    missing = [k for k in required if k not in sd]
    if missing:
        raise WeightsError(f"{where}: the weights are not a {arch.model_type} model (missing {', '.join(missing)})")
    implied = arch.implied(sd)
    bc = implied.pop("_bc_channels", None)
    for key, value in implied.items():
        stated = _STATED[key](cfg)  # config.json's value, defaults resolved once in arch.config
        if stated != value:
            raise ConfigError(f"{where}: {key}={stated} contradicts the weights, which imply {key}={value}")
    if bc is not None and bc != 2 * cfg["n_groups"] * cfg["d_state"]:
        raise ConfigError(
            f"{where}: state_size={cfg['d_state']} with n_groups={cfg['n_groups']} contradicts the weights, whose "
            f"convolution carries {bc} B/C channels (2 * n_groups * state_size)"
        )
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    if layers != cfg["n_layers"]:
        raise ConfigError(f"{where}: num_hidden_layers={cfg['n_layers']} contradicts the weights, which have {layers} layers")


def _arch(raw: dict, where: str) -> HfArch:
    model_type = raw.get("model_type")
    if model_type not in HF_ARCHS:
        raise ConfigError(
            f"{where}: Hugging Face model type {model_type!r} is not supported; edgeseq imports {', '.join(HF_ARCHS.keys())}"
        )
    return HF_ARCHS.get(model_type)


def _build(raw: dict, sd: dict[str, torch.Tensor], causal: bool, where: str) -> MambaModel:
    arch = _arch(raw, where)
    cfg = arch.config(raw, where)
    sd, prefixed = _normalise_keys(sd)
    archs = raw.get("architectures") or []
    causal = causal or prefixed or any(str(a).endswith("ForCausalLM") for a in archs)
    _check_implied(arch, raw, cfg, sd, where)
    if causal:
        vocab = int(_need(raw, "vocab_size", where))
        if "head.weight" not in sd:  # tied embeddings: save_pretrained drops the duplicate
            if "embed.weight" not in sd:
                raise WeightsError(f"{where}: neither lm_head.weight nor the tied embeddings are in the weights")
            sd["head.weight"] = sd["embed.weight"]
        cfg.update(d_in=1, d_out=vocab, vocab_size=vocab, head="linear")
    else:
        cfg.update(d_in=1, d_out=cfg["d_model"], vocab_size=int(_need(raw, "vocab_size", where)), head="norm")
    emb = sd.get("embed.weight")
    if emb is not None and emb.shape[0] != cfg["vocab_size"]:
        raise ConfigError(f"{where}: vocab_size={cfg['vocab_size']} contradicts the weights, whose embedding has {emb.shape[0]} rows")
    config = config_from_dict(MambaConfig, cfg, what=where)
    model = MambaModel(config)
    load_state_checked(model, {k: v.float() for k, v in sd.items()}, where)
    return model.eval()


def from_huggingface(source: Any) -> MambaModel:
    """A Hugging Face Mamba / Mamba-2 model as family ``mamba``: ``source`` is a ``save_pretrained`` directory
    or a ``transformers`` model in memory (``MambaModel``, ``MambaForCausalLM``, ``Mamba2Model``, ``Mamba2ForCausalLM``)."""
    if isinstance(source, (str, Path)):
        directory = Path(source)
        return _load_dir(directory, read_config(directory))
    config = getattr(source, "config", None)
    if config is None or not hasattr(config, "to_dict") or not hasattr(source, "state_dict"):
        raise UnsupportedModuleError(f"from_huggingface expects a directory or a transformers model, got {type(source).__name__}")
    name = type(source).__name__
    sd = {k: v.detach() for k, v in source.state_dict().items()}
    check_finite(sd, where=name)
    return _build(config.to_dict(), sd, causal=name.endswith("ForCausalLM"), where=name)


def _load_dir(directory: Path, raw: dict) -> MambaModel:
    where = str(directory / CONFIG_NAME)
    _arch(raw, where)  # refuse another architecture before reading its (possibly huge) weights
    sd = _read_weights(directory)
    return _build(raw, sd, causal=False, where=where)


DIR_FORMATS.register("huggingface", DirFormat("huggingface", lambda raw: "model_type" in raw and "family" not in raw, _load_dir))


def _hf_reference(model, x: torch.Tensor) -> torch.Tensor:
    """The transformers model's own full-sequence output: logits, or the last hidden state."""
    out = model(input_ids=(x[..., 0] if x.dim() == 3 else x).long())
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


for _module, _classes in (("mamba", ("MambaModel", "MambaForCausalLM")), ("mamba2", ("Mamba2Model", "Mamba2ForCausalLM"))):
    for _cls in _classes:
        register_named_converter(f"transformers.models.{_module}.modeling_{_module}.{_cls}",
                                 lambda m: convert(from_huggingface(m)), _hf_reference)

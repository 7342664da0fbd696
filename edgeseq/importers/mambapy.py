"""``mambapy`` models in memory -> family ``mamba``.

* ``mambapy.mamba.Mamba`` (the residual stack alone: (B, L, D) -> (B, L, D)) becomes a model with
  ``embed=False, head="none"``: the input is the residual stream, the output the stream after the last block.
* ``mambapy.lm.LM`` with a Mamba-1 config becomes a language model (token id in, logits out).

Recognised by structure (``layers`` of blocks with a ``mixer``; ``embedding``/``mamba``/``norm_f``/``lm_head``
for the LM), so importing ``mambapy`` is not needed here. muP models and ``inner_layernorms`` are refused:
their forward differs from the reference Mamba block.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgeseq.checkpoint import check_finite, load_state_checked
from edgeseq.config import config_from_dict
from edgeseq.convert import convert, register_named_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.mamba import MambaConfig, MambaModel


def _fields(cfg: Any, where: str) -> dict:
    for flag in ("mup", "inner_layernorms"):
        if getattr(cfg, flag, False):
            raise ConfigError(f"{where}: mambapy {flag}=True is not supported (its forward differs from the reference Mamba block)")
    if not hasattr(cfg, "expand_factor") or not hasattr(cfg, "dt_rank"):
        raise UnsupportedModuleError(f"{where}: only Mamba-1 mambapy configs are supported, got {type(cfg).__name__}")
    return {
        "variant": "mamba1", "d_model": int(cfg.d_model), "n_layers": int(cfg.n_layers), "d_state": int(cfg.d_state),
        "d_conv": int(cfg.d_conv), "expand": int(cfg.expand_factor), "dt_rank": int(cfg.dt_rank),
        "norm_eps": float(cfg.rms_norm_eps), "bias": bool(cfg.bias), "conv_bias": bool(cfg.conv_bias),
    }


def from_mambapy(model: nn.Module) -> MambaModel:
    """A ``mambapy`` ``Mamba`` stack or ``LM`` as family ``mamba`` (weights copied; ``model`` is untouched)."""
    name = type(model).__name__
    if all(hasattr(model, a) for a in ("embedding", "mamba", "norm_f", "lm_head")):
        cfg = _fields(model.config, name)
        vocab = int(model.embedding.num_embeddings)
        cfg.update(d_in=1, d_out=int(model.lm_head.out_features), vocab_size=vocab, head="linear")
        sd = {}
        for k, v in model.state_dict().items():
            k = k.replace("embedding.", "embed.", 1) if k.startswith("embedding.") else k
            k = k.removeprefix("mamba.")
            k = "head.weight" if k == "lm_head.weight" else k
            sd[k] = v
    elif hasattr(model, "layers") and hasattr(model, "config") and all(hasattr(layer, "mixer") for layer in model.layers):
        cfg = _fields(model.config, name)
        cfg.update(d_in=cfg["d_model"], d_out=cfg["d_model"], embed=False, head="none")
        sd = dict(model.state_dict())
    else:
        raise UnsupportedModuleError(f"from_mambapy expects a mambapy Mamba or LM, got {name}")
    sd = {k: v.detach().float() for k, v in sd.items()}
    check_finite(sd, where=name)
    out = MambaModel(config_from_dict(MambaConfig, cfg, what=f"{name} config"))
    load_state_checked(out, sd, name)
    return out.eval()



def _mambapy_reference(model, x):
    """mambapy's own full-sequence forward (its parallel scan)."""
    return model(x[..., 0].long() if hasattr(model, "lm_head") and x.dim() == 3 else x)


register_named_converter("mambapy.mamba.Mamba", lambda m: convert(from_mambapy(m)), _mambapy_reference)
register_named_converter("mambapy.lm.LM", lambda m: convert(from_mambapy(m)), _mambapy_reference)

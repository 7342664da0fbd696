"""``quantize_(step, config)``: quantize a step module in place, torchao style.

The quantized step is the eager reference: ``edgeseq.export`` lowers it per target (ExecuTorch traces it,
ONNX rewrites its float graph with ``onnxruntime.quantization``) and checks the artifact against it over a long
rollout. The config (with its state policy) and the calibration summary go into the manifest.
"""

from __future__ import annotations

from typing import Any

import torch

from edgeseq.checkpoint import check_finite
from edgeseq.errors import ConfigError
from edgeseq.quant.calibrate import Calibration, calibration_data, rollout
from edgeseq.quant.config import QuantConfig, check_target, scheme_of
from edgeseq.quant.precision import Precision, state_storage
from edgeseq.step import StepModule, dtype_name, torch_dtype


def quantize_(step: StepModule, config: QuantConfig, calib: Any = None, *, target: str | None = None) -> StepModule:
    """Quantize ``step`` in place with ``config``; return it.

    ``calib``: calibration sequences (a data set name, frames, or a list of series; see ``calibrate.py``), needed by
    ``int8-static`` and by any state tensor the policy stores as int8. ``target`` (optional) refuses, before any
    work, a scheme that target cannot run.
    """
    if not isinstance(step, StepModule):
        raise ConfigError(f"quantize_ takes a step module (edgeseq.convert(model)), got {type(step).__name__}")
    if getattr(step, "quantization", None) is not None:
        raise ConfigError(f"this step is already quantized ({step.quantization.scheme}); quantize the float step")
    scheme = check_target(config, target) if target else scheme_of(config)
    names = step.state_spec.names
    unknown = [n for n, _ in config.state.overrides if n not in names]
    if unknown:
        raise ConfigError(f"state policy names {', '.join(map(repr, unknown))}, not state tensors of this step; "
                          f"its state: {', '.join(names)}")
    int8_state = [n for n, p in config.state.overrides if p == "int8"]
    cal: Calibration | None = calibration_data(step, calib) if calib is not None else None
    if cal is None and (scheme.needs_calibration or int8_state):
        why = scheme.name if scheme.needs_calibration else f"int8 storage of state {', '.join(int8_state)}"
        raise ConfigError(f"{why} needs calibration data: pass calib= a data set name (e.g. 'japanese-vowels') or real frames")
    check_finite(dict(step.state_dict()), where="step module")
    step.eval()

    scales = _state_scales(step, cal, int8_state) if int8_state else {}
    float_spec = step.state_spec
    n = scheme.apply(step, config, cal)
    if n == 0:
        raise ConfigError(f"{scheme.name}: this step has no layers the scheme quantizes (nn.Linear, or a continual "
                          "network's dense temporal convolution); nothing to do")
    compute = torch_dtype(scheme.compute_dtype)
    if compute != torch.float32 or not config.state.is_default:
        prec = Precision(float_spec, dict(config.state.overrides), scales, compute, step.state_math_dtype)
        step.precision = prec
        step.state_spec = prec.stored_spec()
    step.quantization = config
    step.quant_calibration = cal
    step.quant_layers = n
    return step


def _state_scales(step: StepModule, cal: Calibration, names: list[str]) -> dict[str, float]:
    """Symmetric int8 scale per state tensor: the largest |value| the float rollouts reach, over 127."""
    idx = {n: i for i, n in enumerate(step.state_spec.names)}
    amax = {n: 0.0 for n in names}

    def see(_y, state):
        for n in names:
            amax[n] = max(amax[n], float(state[idx[n]].abs().max()))

    rollout(step, cal, see)
    return {n: max(a, 1e-8) / 127.0 for n, a in amax.items()}


def quant_manifest(step: StepModule) -> dict[str, Any] | None:
    """The manifest's ``quantization`` entry for a quantized step (None for a float one)."""
    config = getattr(step, "quantization", None)
    if config is None:
        return None
    scheme = scheme_of(config)
    cal = getattr(step, "quant_calibration", None)
    prec = getattr(step, "precision", None)
    return {
        "config": config.to_dict(),
        "summary": scheme.summary,
        "quantized_layers": getattr(step, "quant_layers", None),
        "compute_dtype": scheme.compute_dtype,
        "state_math_dtype": dtype_name(prec.state_dtype) if prec is not None else scheme.compute_dtype,
        "calibration": cal.summary() if cal is not None else None,
        "state_storage": state_storage(step),
        "state_scales": dict(zip(prec.float_spec.names, prec.scales)) if prec is not None else {},
        "state_check": None,
        "drift": getattr(step, "quant_drift", None),
    }

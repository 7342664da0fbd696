"""Scheme ``int8-static``: int8 per-channel weights; each linear layer's input and output quantized with a scale
and zero point calibrated on real sequences (rollouts with the state fed back).

ExecuTorch: the traced step is PT2E's static graph (q/dq around every linear), lowered to XNNPACK's ``qs8``
kernels. ONNX: QuantizeLinear/DequantizeLinear pairs written by edgeseq around the step's own linear layers
(``onnx_qdq.py``) with the eager step's grids (weights, weight scales and zero points, the calibrated activation
ranges), which onnxruntime fuses into ``QGemm``. TensorRT: the same pairs in the form its explicit quantization
takes (``activations="symmetric"``: int8 with zero points 0 everywhere, symmetric int8 weights, the bias left
float), for TensorRT to build an int8 engine from on the device. Only the linear layers' activations are quantized:
gates, state updates and the state itself stay float unless the state policy opts a tensor in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseq.quant.calibrate import rollout
from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.errors import ConfigError
from edgeseq.quant.qlinear import ACTIVATION_GRIDS, QuantLinear, check_weight_format, swap_linears


@dataclass(frozen=True)
class Int8StaticConfig(QuantConfig):
    scheme = "int8-static"
    # 8-bit weight format (quant/qlinear.py): "int8" (-127..127, ExecuTorch), "uint8" (0..255 with a zero point per
    # channel) or "int8-reduced" (-64..64); onnx refuses full-range int8 (its x86 kernels saturate)
    weights: str = "int8"
    # the calibrated activations' int8 grid: "affine" (a zero point: all 256 levels on a one-sided range) or
    # "symmetric" (zero point 0: what TensorRT's explicit quantization takes, and its default there)
    activations: str = "affine"


def _apply(step, config: Int8StaticConfig, cal) -> int:
    layers: list[QuantLinear] = []

    def make(lin):
        q = QuantLinear(lin, "static", config.weights, config.activations)
        layers.append(q)
        return q

    n = swap_linears(step, make)
    for q in layers:
        q.start_calibration()
    rollout(step, cal)
    for q in layers:
        q.finish_calibration()
    return n


def _lower_onnx(float_path: Path, out_path: Path, config: Int8StaticConfig, step) -> None:
    from edgeseq.quant.onnx_qdq import write_static_qdq
    from edgeseq.quant.onnx_select import expect_quantized

    n = write_static_qdq(float_path, out_path, step)
    expect_quantized(out_path, n, "QDQ")


def _lower_tensorrt(float_path: Path, out_path: Path, config: Int8StaticConfig, step) -> None:
    from edgeseq.quant.onnx_qdq import write_static_qdq
    from edgeseq.quant.onnx_select import expect_quantized

    n = write_static_qdq(float_path, out_path, step, tensorrt=True)
    expect_quantized(out_path, n, "QDQ")


def _check(config: Int8StaticConfig, target: str) -> None:
    check_weight_format(config, target)
    if config.activations not in ACTIVATION_GRIDS:
        raise ConfigError(f"int8-static: activations={config.activations!r} is not an activation grid; choose from "
                          f"{', '.join(ACTIVATION_GRIDS)}")
    if target == "tensorrt" and config.activations != "symmetric":
        raise ConfigError("int8-static on tensorrt takes symmetric activations (TensorRT's explicit quantization "
                          "has zero points 0 only): use activations='symmetric' (CLI: --activations symmetric), "
                          "its default there")


register_scheme(Scheme(
    name="int8-static", config=Int8StaticConfig, targets=("executorch", "onnx", "tensorrt"),
    summary="int8 per-channel weights, linear inputs/outputs int8 with scales calibrated on real rollouts",
    apply=_apply, lower_onnx=_lower_onnx, lower_tensorrt=_lower_tensorrt, check=_check, needs_calibration=True,
    tolerance=0.15,
    peak_precision="int8",
))

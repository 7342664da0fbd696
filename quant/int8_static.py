"""Scheme ``int8-static``: int8 per-channel weights; each linear layer's input and output quantized with a scale
and zero point calibrated on real sequences (rollouts with the state fed back).

ExecuTorch: the traced step is PT2E's static graph (q/dq around every linear), lowered to XNNPACK's ``qs8``
kernels. ONNX: QuantizeLinear/DequantizeLinear pairs written by edgeseq around the step's own linear layers
(``onnx_qdq.py``) with the eager step's grids (weights, weight scales and zero points, the calibrated activation
ranges), which onnxruntime fuses into ``QGemm``. Only the linear layers' activations are quantized: gates, state
updates and the state itself stay float unless the state policy opts a tensor in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseq.quant.calibrate import rollout
from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.quant.qlinear import QuantLinear, check_weight_format, swap_linears


@dataclass(frozen=True)
class Int8StaticConfig(QuantConfig):
    scheme = "int8-static"
    # 8-bit weight format (quant/qlinear.py): "int8" (-127..127, ExecuTorch), "uint8" (0..255 with a zero point per
    # channel) or "int8-reduced" (-64..64); onnx refuses full-range int8 (its x86 kernels saturate)
    weights: str = "int8"


def _apply(step, config: Int8StaticConfig, cal) -> int:
    layers: list[QuantLinear] = []

    def make(lin):
        q = QuantLinear(lin, "static", config.weights)
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


register_scheme(Scheme(
    name="int8-static", config=Int8StaticConfig, targets=("executorch", "onnx"),
    summary="int8 per-channel weights, linear inputs/outputs int8 with scales calibrated on real rollouts",
    apply=_apply, lower_onnx=_lower_onnx, check=check_weight_format, needs_calibration=True, tolerance=0.15,
    peak_precision="int8",
))

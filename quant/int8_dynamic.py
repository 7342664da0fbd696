"""Scheme ``int8-dynamic``: int8 per-channel weights, activations quantized per call (per tensor, int8 affine).

No calibration. ExecuTorch: the traced step is PT2E's dynamic-quantization graph, which XNNPACK lowers to its
``qd8`` fully-connected kernels. ONNX: ``onnxruntime.quantization.quantize_dynamic`` on the float graph, limited to
the ``MatMul``/``Gemm`` nodes of the step's own linear layers (``onnx_select.py``): DynamicQuantizeLinear +
MatMulInteger; nothing else in the graph (gates, state updates, a Mamba conv's sum, a norm's mean) is touched.
Recurrent state stays float.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.quant.qlinear import QuantLinear, check_weight_format, swap_linears


@dataclass(frozen=True)
class Int8DynamicConfig(QuantConfig):
    scheme = "int8-dynamic"
    # 8-bit weight format (quant/qlinear.py): "int8" (-127..127, ExecuTorch), "uint8" (0..255 with a zero point
    # per channel) or "int8-reduced" (-64..64); onnx refuses full-range int8 (its x86 kernels saturate)
    weights: str = "int8"


def _apply(step, config: Int8DynamicConfig, cal) -> int:
    return swap_linears(step, lambda lin: QuantLinear(lin, "dynamic", config.weights))


def _lower_onnx(float_path: Path, out_path: Path, config: Int8DynamicConfig, step) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeseq.quant.onnx_select import expect_quantized, gemm_to_matmul, quantized_layer_paths, select_nodes

    gemm_to_matmul(float_path)  # onnxruntime's dynamic pass rewrites Gemm itself, renaming the nodes we select
    nodes = select_nodes(float_path, quantized_layer_paths(step, (QuantLinear,)), suffixes=("", "_kn"))
    quantize_dynamic(
        str(float_path), str(out_path), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
        per_channel=True, reduce_range=config.weights == "int8-reduced",
        weight_type=QuantType.QUInt8 if config.weights == "uint8" else QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
    )
    expect_quantized(out_path, len(nodes), "MatMulInteger")


register_scheme(Scheme(
    name="int8-dynamic", config=Int8DynamicConfig, targets=("executorch", "onnx"),
    summary="int8 per-channel weights, int8 activations quantized per call; no calibration",
    apply=_apply, lower_onnx=_lower_onnx, check=check_weight_format, tolerance=2e-2,
    peak_precision="int8",
))

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

    from edgeseq.quant.onnx_select import expect_quantized, gemm_to_matmul, select_nodes

    gemm_to_matmul(float_path)  # onnxruntime's dynamic pass rewrites Gemm itself, renaming the nodes we select
    layers = {p: m for p, m in step.named_modules() if isinstance(m, QuantLinear)}
    nodes = select_nodes(float_path, list(layers), suffixes=("", "_kn"))
    quantize_dynamic(
        str(float_path), str(out_path), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
        per_channel=True, reduce_range=config.weights == "int8-reduced",
        weight_type=QuantType.QUInt8 if config.weights == "uint8" else QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
    )
    expect_quantized(out_path, len(nodes), "MatMulInteger")
    pin_weights(out_path, layers)


def pin_weights(path: Path, layers: dict) -> int:
    """Write each quantized layer's own integers, zero points and scales over the ones onnxruntime's dynamic pass
    derived again from the dequantized float weights (``<weight>[_kn]_quantized`` / ``_zero_point`` / ``_scale``
    initializers, laid out (in, out)); return how many layers were pinned. Its re-derivation lands on the eager
    grid all but rarely: on a Hugging Face Mamba 256x4's 1024x256 head one weight of 262,144 came back one step off,
    and the onnx artifact's logits differed from the eager quantized step's by 3.4e-4 from the first step while every
    state agreed to 1e-7. Initializers that do not hold the same grid within one step (another layout) are refused
    rather than overwritten; a layer whose initializers are not under those names is left as derived (the parity
    check still holds it)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgeseq.errors import ArtifactError

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    pinned = 0
    for name, layer in layers.items():
        want = name + ".weight"
        stem = next((n[: -len("_quantized")] for n in inits if n.endswith("_quantized") and (
            (w := n[: -len("_quantized")].removesuffix("_kn")) == want or w.endswith("." + want))), None)
        if stem is None or stem + "_zero_point" not in inits or stem + "_scale" not in inits:
            continue  # not written under onnxruntime's names: left as derived (the parity check still holds it)
        old = {sfx: numpy_helper.to_array(inits[stem + sfx]) for sfx in ("_quantized", "_zero_point", "_scale")}
        q_old, q_new = old["_quantized"], layer.weight_q.numpy().T
        if q_old.shape != q_new.shape or np.abs(q_old.astype(np.int32) - q_new.astype(np.int32)).max() > 1:
            raise ArtifactError(f"onnxruntime's quantized weights of layer {name} are not on its grid "
                                f"({q_old.shape} vs {q_new.shape}); nothing written")
        new = {"_quantized": q_new.astype(q_old.dtype), "_zero_point": layer.weight_zero_point.numpy().astype(q_old.dtype),
               "_scale": layer.weight_scale.numpy().astype(np.float32)}
        for sfx, arr in new.items():
            inits[stem + sfx].CopyFrom(numpy_helper.from_array(arr.reshape(old[sfx].shape), stem + sfx))
        pinned += 1
    onnx.save(model, str(path))
    return pinned


register_scheme(Scheme(
    name="int8-dynamic", config=Int8DynamicConfig, targets=("executorch", "onnx"),
    summary="int8 per-channel weights, int8 activations quantized per call; no calibration",
    apply=_apply, lower_onnx=_lower_onnx, check=check_weight_format, tolerance=2e-2,
    peak_precision="int8",
))

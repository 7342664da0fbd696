"""Scheme ``int8-static``: int8 per-channel weights; each linear layer's input and output quantized with a scale
and zero point calibrated on real sequences (rollouts with the state fed back).

ExecuTorch: the traced step is PT2E's static graph (q/dq around every linear), lowered to XNNPACK's ``qs8``
kernels. ONNX: ``onnxruntime.quantization.quantize_static`` in QDQ format on the float graph, limited to
the ``MatMul``/``Gemm`` nodes of the step's own linear layers (``onnx_select.py``), calibrated (MinMax) on the
same rollout frames and states. Only the linear layers' activations are quantized: gates, state updates and the
state itself stay float unless the state policy opts a tensor in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseq.quant.calibrate import rollout
from edgeseq.errors import ConfigError
from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.quant.qlinear import QuantLinear, check_weight_format, swap_linears


@dataclass(frozen=True)
class Int8StaticConfig(QuantConfig):
    scheme = "int8-static"
    # 8-bit weight format (quant/qlinear.py): "int8" (-127..127, ExecuTorch) or "int8-reduced" (-64..64, what onnx
    # needs: full-range int8 saturates its x86 kernels, and uint8 is refused for static, see _check)
    weights: str = "int8"
    onnx_weights = "int8-reduced"  # class attribute: the onnx default (uint8 is refused, see _check)


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


class _Reader:
    """onnxruntime ``CalibrationDataReader``: each step's frame and incoming state from the same float rollouts that
    calibrated the eager step (states in their stored dtype when a precision policy is installed)."""

    def __init__(self, step, cal, names):
        import torch

        from edgeseq.quant.qlinear import dequantized_copy

        fstep = dequantized_copy(step)  # the float math calibration ran (observers see the dequantized weights)
        prec = getattr(step, "precision", None)
        spec = prec.float_spec if prec is not None else step.state_spec
        feeds = []
        with torch.no_grad():
            for s in cal.series:
                state = spec.init(s.shape[1])
                for t in range(s.shape[0]):
                    stored = [prec.store(i, v) if prec is not None else v for i, v in enumerate(state)]
                    feeds.append({names[0]: s[t].numpy().copy(), **{n: v.numpy().copy() for n, v in zip(names[1:], stored)}})
                    _, state = fstep._step(s[t], state)
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _lower_onnx(float_path: Path, out_path: Path, config: Int8StaticConfig, step) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgeseq.manifest import io_names

    from edgeseq.quant.onnx_select import expect_quantized, quantized_layer_paths, select_nodes

    nodes = select_nodes(float_path, quantized_layer_paths(step, (QuantLinear,)))
    in_names, _ = io_names(step.state_spec)
    reader = _Reader(step, step.quant_calibration, in_names)
    quantize_static(
        str(float_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes, per_channel=True,
        reduce_range=config.weights == "int8-reduced", activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True},
    )
    expect_quantized(out_path, len(nodes), "QDQ")
    _, out_names = io_names(step.state_spec)
    float_state_outputs(out_path, out_names[1:])


def float_state_outputs(path: Path, names: list[str]) -> None:
    """onnxruntime's QDQ pass quantizes a state output that also feeds a quantized MatMul (LSTM's h feeds the
    head) and makes the graph output the DequantizeLinear's result: the state would round-trip through int8.
    Rewire each such output to the float tensor the QuantizeLinear reads; the MatMul keeps its Q/DQ input."""
    import onnx

    model = onnx.load(str(path))
    nodes = model.graph.node
    producer = {o: n for n in nodes for o in n.output}
    changed = False
    for name in names:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]  # the float tensor
        inner = name + "_dequantized"
        for n in nodes:  # consumers of the graph output now read the DQ result under a new name
            for i, inp in enumerate(n.input):
                if inp == name:
                    n.input[i] = inner
        dq.output[0] = inner
        for n in nodes:  # the float tensor takes the graph output's name
            for i, out in enumerate(n.output):
                if out == src:
                    n.output[i] = name
            for i, inp in enumerate(n.input):
                if inp == src:
                    n.input[i] = name
        changed = True
    if changed:
        onnx.save(model, str(path))


def _check(config: Int8StaticConfig, target: str) -> None:
    """Static uint8 weights are refused: onnxruntime's static QDQ pass makes per-channel weights symmetric (uint8:
    around 128, scale 2 max|w| / 255) whatever it is asked, and re-quantizing dequantized weights on that grid
    does not give the same grid back (the scale moves by up to 0.4%): on one 64x96 layer 9.3% of the outputs were
    1 step off the eager layer, and a trained Mamba 2x64 step exceeded the tolerance (0.20 against 0.15)."""
    if config.weights == "uint8":
        raise ConfigError(
            "int8-static cannot use uint8 weights: onnxruntime's static pass re-grids per-channel uint8 weights "
            "symmetrically, so the artifact would not match its eager step; use weights='int8-reduced' (CLI: --weights "
            "int8-reduced, the onnx default for int8-static) or int8-dynamic with uint8 weights"
        )
    check_weight_format(config, target)


register_scheme(Scheme(
    name="int8-static", config=Int8StaticConfig, targets=("executorch", "onnx"),
    summary="int8 per-channel weights, linear inputs/outputs int8 with scales calibrated on real rollouts",
    apply=_apply, lower_onnx=_lower_onnx, check=_check, needs_calibration=True, tolerance=0.15,
    peak_precision="int8",
))

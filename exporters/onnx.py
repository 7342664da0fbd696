"""Target ``onnx``: the dynamo exporter, named state I/O, a dynamic batch axis, full ``onnx.checker`` check."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from edgeseq.errors import ParityError, require
from edgeseq.exporters.base import Exporter, FlatStep, register_exporter
from edgeseq.manifest import io_names
from edgeseq.step import StepModule

OPSET = 18


@register_exporter
class OnnxExporter(Exporter):
    target = "onnx"
    suffix = ".onnx"
    runtime = "onnxruntime"
    dynamic_batch = True
    extra = "onnx"

    def write(self, step: StepModule, path: Path, batch: int) -> dict[str, Any]:
        onnx = require("onnx", "onnx")
        require("onnxscript", "onnx")
        quant = getattr(step, "quantization", None)
        info: dict[str, Any] = {}
        if quant is None:
            _export_graph(step, path)
        else:
            # the float graph (int8-rounded weights, dequantized), then onnxruntime.quantization rewrites it
            from edgeseq.quant.config import scheme_of
            from edgeseq.quant.precision import state_storage
            from edgeseq.quant.qlinear import dequantized_copy
            from edgeseq.quant.verify import check_onnx

            float_path = path.with_name(path.stem + ".float.onnx")
            _export_graph(dequantized_copy(step), float_path)
            scheme_of(quant).lower_onnx(float_path, path, quant, step)
            float_path.unlink()
            _check(onnx, path)
            _, out_names = io_names(step.state_spec)
            info["state_check"] = check_onnx(path, list(step.state_spec.names), out_names[1:], state_storage(step))
        model = onnx.load(str(path))
        ops = Counter(n.op_type for n in model.graph.node)
        return {
            "runtime": {"name": "onnxruntime", "version": _ort_version(), "opset": OPSET, "onnx": onnx.__version__},
            "graph": {"nodes": sum(ops.values()), "op_types": dict(sorted(ops.items()))},
            **info,
        }


def _export_graph(step: StepModule, path: Path) -> None:
    import onnx

    flat = FlatStep(step).eval()
    example_batch = 2  # not 1: a batch of 1 would be specialised away
    state = step.init_state(example_batch)
    args = (step.example_input(None, example_batch), state)
    in_names, out_names = io_names(step.state_spec)
    b = torch.export.Dim("batch", min=1, max=1 << 16)
    dynamic_shapes = ({0: b}, tuple({0: b} for _ in state))
    with torch.no_grad():
        program = torch.onnx.export(
            flat, args, dynamo=True, input_names=in_names, output_names=out_names,
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, external_data=False, verbose=False,
        )
    program.save(str(path), external_data=False)
    _check(onnx, path)


def _check(onnx, path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ParityError(f"onnx.checker rejected the exported graph: {str(exc).splitlines()[0]}") from None


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:  # pragma: no cover
        return "unknown"

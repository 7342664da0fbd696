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
    lowering = "lower_onnx"  # the scheme's ONNX lowering this target uses
    timed_rnn_ops = True  # recurrent cells: ONNX's LSTM/GRU/RNN ops or their gates, whichever onnxruntime runs faster

    def write(self, step: StepModule, path: Path, batch: int, rnn_ops: str = "timed", **_options: Any) -> dict[str, Any]:
        onnx = require("onnx", "onnx")
        require("onnxscript", "onnx")
        quant = getattr(step, "quantization", None)
        info: dict[str, Any] = {}
        if quant is None:
            choice = _export_rnn_form(step, path, batch, rnn_ops if self.timed_rnn_ops else "gates")
            if choice is not None:
                info["rnn_ops"] = choice
        else:
            # the float graph (int8-rounded weights, dequantized), then onnxruntime.quantization rewrites it
            from edgeseq.quant.config import scheme_of
            from edgeseq.quant.precision import state_storage
            from edgeseq.quant.qlinear import dequantized_copy
            from edgeseq.quant.verify import check_onnx

            float_path = path.with_name(path.stem + ".float.onnx")
            _export_graph(dequantized_copy(step), float_path)
            getattr(scheme_of(quant), self.lowering)(float_path, path, quant, step)
            float_path.unlink()
            _check(onnx, path)
            _, out_names = io_names(step.state_spec)
            info["state_check"] = check_onnx(path, list(step.state_spec.names), out_names[1:], state_storage(step))
        model = onnx.load(str(path))
        ops = Counter(n.op_type for n in model.graph.node)
        return {
            "runtime": {"name": "onnxruntime", "version": _ort_version(), "opset": OPSET, "onnx": onnx.__version__,
                        **({"rnn_ops": info.pop("rnn_ops")} if "rnn_ops" in info else {}),
                        **self.runtime_notes(step, model)},
            "graph": {"nodes": sum(ops.values()), "op_types": dict(sorted(ops.items()))},
            **info,
        }

    def runtime_notes(self, step: StepModule, model) -> dict[str, Any]:
        return {}


@register_exporter
class TensorRTExporter(OnnxExporter):
    """Target ``tensorrt``: an ONNX file for TensorRT's ONNX parser, its engine built on the device (engines do not
    move across GPUs or TensorRT versions). An int8-static step is written in explicit quantization form (Q/DQ
    pairs, int8, zero points 0, symmetric per-channel weights, float bias: ``onnx_qdq.write_static_qdq``), checked
    against TensorRT's rules for it (``check_tensorrt_qdq``). Validated here on onnxruntime's CPU provider with
    graph optimizations off: each Q/DQ evaluated as written, the reference semantics TensorRT's int8 kernels
    implement (the fused CPU int8 kernels would check onnxruntime's kernels instead)."""

    target = "tensorrt"
    lowering = "lower_tensorrt"
    timed_rnn_ops = False  # onnxruntime's CPU timing says nothing of TensorRT's: the gates, as matmuls it fuses

    def runtime_notes(self, step: StepModule, model) -> dict[str, Any]:
        notes = {"ort_optimization": "disabled", "tensorrt_qdq": check_tensorrt_qdq(model),
                 "engine": "built on the device by TensorRT from this file; not built by edgeseq"}
        pruned = (getattr(step, "pruning", None) or {}).get("config", {})
        if pruned.get("method") == "n:m" and (pruned.get("n"), pruned.get("m")) == (2, 4):
            # 2:4 along the input dimension: the pattern Ampere's sparse tensor cores (Jetson Orin) run, when the
            # engine is built with TensorRT's SPARSE_WEIGHTS builder flag
            notes["sparse_weights"] = "2:4: build with BuilderFlag.SPARSE_WEIGHTS (trtexec --sparsity=enable)"
        return notes


def check_tensorrt_qdq(model) -> dict[str, Any]:
    """TensorRT's rules for explicitly quantized ONNX, checked on the written graph (raises ArtifactError on the
    first broken one): every QuantizeLinear / DequantizeLinear is int8 with zero point 0 (or none); a Q/DQ pair's
    scale is one scalar for activations; weights (constant inputs of a DequantizeLinear) are per output channel on
    the axis the consumer reads as output channels (Gemm with transB: 0; MatMul: 1). Returns counts."""
    from onnx import numpy_helper

    from edgeseq.errors import ArtifactError

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    counts = {"quantize": 0, "dequantize": 0, "weight_dequantize": 0}
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["quantize" if n.op_type == "QuantizeLinear" else "dequantize"] += 1
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and (zp.dtype.name != "int8" or zp.any()):
            raise ArtifactError(f"{n.name}: zero point {zp.dtype.name} {zp.ravel()[:3].tolist()}...: TensorRT takes int8 "
                                "with zero point 0; nothing written")
        weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        scale = inits.get(n.input[1])
        if weight:
            counts["weight_dequantize"] += 1
            q = inits[n.input[0]]
            if q.dtype.name != "int8":
                raise ArtifactError(f"{n.name}: {q.dtype.name} weights: TensorRT takes int8; nothing written")
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            for c in consumers.get(n.output[0], []):
                if c.op_type not in ("Gemm", "MatMul"):
                    raise ArtifactError(f"{n.name}: a quantized weight read by {c.op_type} {c.name}; edgeseq writes "
                                        "TensorRT Q/DQ for Gemm and MatMul only; nothing written")
                trans_b = next((a.i for a in c.attribute if a.name == "transB"), 0)
                want = 0 if (c.op_type == "Gemm" and trans_b) else 1
                if scale is None or scale.size != q.shape[want] or axis != want:
                    raise ArtifactError(f"{n.name}: weight scales not per output channel of {c.name} (axis {axis}, "
                                        f"{None if scale is None else scale.size} scales); nothing written")
        elif scale is None or scale.size != 1:
            raise ArtifactError(f"{n.name}: an activation's scale must be one constant for TensorRT; nothing written")
    return counts


def _export_rnn_form(step: StepModule, path: Path, batch: int, rnn_ops: str) -> dict[str, Any] | None:
    """Write ``step`` to ``path`` with its recurrent cells as ``rnn_ops`` says: ``gates`` (matmuls and pointwise
    ops), ``fused`` (ONNX's LSTM/GRU/RNN ops, exporters/onnx_rnn.py) or ``timed``: both written and run on
    onnxruntime (:func:`time_forms`), the faster kept. Returns what the manifest records of the choice (None for a
    step without such cells)."""
    from edgeseq.exporters.onnx_rnn import fused_rnn_cells

    if rnn_ops != "fused":
        _export_graph(step, path)
    if rnn_ops == "gates":
        return None
    other = path.with_name(path.stem + ".fused.onnx")
    try:
        with fused_rnn_cells(step) as cells:
            if cells:
                _export_graph(step, path if rnn_ops == "fused" else other, fused=True)
        if not cells:
            if rnn_ops == "fused":
                _export_graph(step, path)
            return None
        if rnn_ops == "fused":
            return {"form": "fused", "cells": cells, "decided_by": "asked for"}
        times = time_forms({"gates": path, "fused": other}, step, batch)
        form = "fused" if times["fused"] < times["gates"] else "gates"
        if form == "fused":
            other.replace(path)
    finally:
        other.unlink(missing_ok=True)
    return {"form": form, "cells": cells, "decided_by": "timing", "us_per_step": times,
            "timing": f"onnxruntime {_ort_version()} CPU, 1 thread, batch {batch}, medians of {_ROUNDS} interleaved "
                      f"rounds, bound I/O"}


_ROUNDS = 7


def time_forms(paths: dict[str, Path], step: StepModule, batch: int, budget_s: float = 0.4) -> dict[str, float]:
    """µs per step of each ONNX file of ``step`` on onnxruntime (CPU, one thread, inputs and outputs bound once, as
    a session runs them), interleaved rounds, medians; about ``budget_s`` seconds in all."""
    import statistics
    import time

    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 4
    rng = np.random.default_rng(0)
    state = [t.numpy() for t in step.init_state(batch)]
    in_names, out_names = io_names(step.state_spec)
    calls = {}
    for form, p in paths.items():
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        keep = [rng.standard_normal((batch, step.d_in)).astype(np.float32), *(t.copy() for t in state)]
        for name, a in zip(in_names, keep):
            io.bind_input(name, "cpu", 0, a.dtype, a.shape, a.ctypes.data)
        for name in out_names:
            io.bind_output(name, "cpu")
        calls[form] = (sess, io, keep)
    for sess, io, _ in calls.values():  # warm up, and one call's time for the round size
        sess.run_with_iobinding(io)
    t0 = time.perf_counter()
    for sess, io, _ in calls.values():
        sess.run_with_iobinding(io)
    per_round = max(5, int(budget_s / _ROUNDS / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(_ROUNDS):
        for form, (sess, io, _) in calls.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                sess.run_with_iobinding(io)
            times[form].append((time.perf_counter() - t0) / per_round * 1e6)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def _export_graph(step: StepModule, path: Path, fused: bool = False) -> None:
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
            **({"custom_translation_table": _translations()} if fused else {}),
        )
    program.save(str(path), external_data=False)
    _check(onnx, path)


def _translations() -> dict:
    from edgeseq.exporters.onnx_rnn import TRANSLATIONS

    return TRANSLATIONS


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

"""The int8-static ONNX lowering, written by edgeseq: QuantizeLinear/DequantizeLinear pairs around each quantized
linear layer of the float graph, carrying the eager step's own grids.

``onnxruntime.quantization.quantize_static`` re-derives every grid from the float graph: it re-quantizes the
(already 8-bit) weights on a grid of its choosing and calibrates the activations again. For symmetric int8 weights
its grid happens to be ours; for asymmetric uint8 weights it is not (its static QDQ pass makes per-channel
weights symmetric around 128 whatever it is asked, and the re-quantized weights then sit up to one step off
ours: 9.3% of one 64x96 layer's outputs were one step off the eager layer). Writing the pairs ourselves pins the
artifact to the eager step's numbers: weights, weight scales and zero points, the calibrated input and output
scales and zero points, all taken from the :class:`~edgeseq.quant.qlinear.QuantLinear` modules.

Per layer (a ``Gemm`` with a constant ``B``, the form torch exports ``linear`` in; a ``MatMul`` with a constant B
is handled too):

    x -> Q/DQ (uint8, the calibrated input scale; zero point + 128) -> Gemm(., DQ(W_q), DQ(b_int32)) -> Q/DQ (output)

Activations use uint8 with the zero point shifted by 128: the same grid as the eager step's int8 affine one
(``clamp(round(x/s) + z, -128, 127) + 128 == clamp(round(x/s) + z + 128, 0, 255)``), and the form onnxruntime's
x86 kernels take (u8 activations). The bias is int32 on the grid ``s_in * s_w`` per output channel, as
onnxruntime's fused ``QGemm`` needs it (it adds the bias in the int32 accumulator); the eager static layer rounds
its bias onto the same grid at calibration (``qlinear.round_bias``), so both add the same bias. onnxruntime fuses
each group into one ``QGemm``; what still differs is float rounding order (the eager layer sums float products,
``QGemm`` integer ones and rescales once), which moves an output by one step where it sits on a rounding
boundary (measured: 0.005% of one 64x96 layer's outputs; 0.05% before the eager bias was rounded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq.errors import ArtifactError

_SHIFT = 128  # int8 affine -> uint8 affine: same scale, integers and zero point + 128


def write_static_qdq(float_path: Path, out_path: Path, step, tensorrt: bool = False) -> int:
    """Write ``out_path``: the float graph at ``float_path`` with each of ``step``'s static
    :class:`~edgeseq.quant.qlinear.QuantLinear` layers quantized on its own grids. Returns the number of
    ``MatMul``/``Gemm`` nodes rewritten.

    ``tensorrt``: the form TensorRT's explicit quantization takes instead: activations int8 with zero point 0 (the
    layers must have been calibrated on the symmetric grid), symmetric int8 weights, and the bias left a float
    constant (TensorRT has no int32 Q/DQ; it adds the bias itself). The float bias is the eager layer's, already
    rounded onto the ``s_in * s_w`` grid at calibration, so it is the value an int32 bias would carry."""
    import onnx
    from onnx import helper, numpy_helper

    from edgeseq.quant.onnx_select import layer_nodes
    from edgeseq.quant.qlinear import QuantLinear, bias_scale

    layers = {p: m for p, m in step.named_modules() if isinstance(m, QuantLinear)}
    by_node = {n: p for p, nodes in layer_nodes(float_path, list(layers)).items() for n in nodes}
    model = onnx.load(str(float_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    added: dict = {}
    nodes: list = []

    def const(name: str, value: np.ndarray) -> str:
        if name in added and not np.array_equal(numpy_helper.to_array(added[name]), value):
            raise ArtifactError(f"two different constants named {name} (a layer used twice with other grids?); nothing written")
        added[name] = numpy_helper.from_array(value, name)
        return name

    # an activation's zero point as written: int8 for TensorRT, else uint8 shifted by 128 (same grid)
    act_zp = (lambda z: np.array(z, np.int8)) if tensorrt else (lambda z: np.array(z + _SHIFT, np.uint8))
    for node in graph.node:
        path = by_node.get(node.name)
        if path is None:
            nodes.append(node)
            continue
        q = layers[path]
        if q.in_q is None or q.out_q is None:
            raise ArtifactError(f"layer {path} was not calibrated; nothing written")
        if tensorrt and (q.weights != "int8" or q.in_q[1] != 0 or q.out_q[1] != 0):
            raise ArtifactError(f"layer {path}: TensorRT takes symmetric int8 weights and zero-point-0 activations; this "
                                f"layer has {q.weights} weights and zero points {q.in_q[1]}, {q.out_q[1]}; nothing written")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            raise ArtifactError(f"layer {path}: Gemm node {node.name} is not a plain linear (transA/alpha/beta); nothing written")
        trans_b = node.op_type == "Gemm" and attrs.get("transB", 0) == 1
        tag = node.name or path

        # the weight: our integers, scales and zero points; the float initializer must be their dequantized values
        wq = q.weight_q.numpy()
        w_scale = q.weight_scale.numpy().astype(np.float32)
        w_zp = q.weight_zero_point.numpy().astype(wq.dtype)
        deq = (wq.astype(np.float32) - w_zp.astype(np.float32)[:, None]) * w_scale[:, None]
        stored = numpy_helper.to_array(inits[node.input[1]])
        if not trans_b:
            wq, deq = wq.T.copy(), deq.T
        if stored.shape != deq.shape or not np.allclose(stored, deq, rtol=0, atol=1e-6 * max(1.0, float(np.abs(deq).max()))):
            raise ArtifactError(f"layer {path}: the graph's weight {node.input[1]} is not the layer's dequantized int8 "
                                "weight; nothing written")
        axis = 0 if trans_b else 1
        w_dq, wname = f"{tag}_W_dq", node.input[1]  # the weight's constants keep the parameter's name
        nodes.append(helper.make_node(
            "DequantizeLinear", [const(f"{wname}_quantized", wq), const(f"{wname}_scale", w_scale),
                                 const(f"{wname}_zero_point", w_zp)],
            [w_dq], name=f"{tag}_W_DequantizeLinear", axis=axis))

        # the input: the calibrated int8 grid, as uint8 (TensorRT: int8, zero point 0)
        s_in, z_in = q.in_q
        in_scale = const(f"{tag}_in_scale", np.array(s_in, np.float32))
        in_zp = const(f"{tag}_in_zp", act_zp(z_in))
        x_q, x_dq = f"{tag}_in_q", f"{tag}_in_dq"
        nodes.append(helper.make_node("QuantizeLinear", [node.input[0], in_scale, in_zp], [x_q], name=f"{tag}_in_QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [x_q, in_scale, in_zp], [x_dq], name=f"{tag}_in_DequantizeLinear"))

        inputs = [x_dq, w_dq]
        if tensorrt and node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            inputs.append(node.input[2])  # float: the eager layer's bias, already on the s_in * s_w grid
        elif node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            # the bias, int32 on the accumulator's grid s_in * s_w
            b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            b_scale = bias_scale(s_in, q.weight_scale).numpy()
            bq = np.clip(np.round(b / b_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
            b_dq, bname = f"{tag}_b_dq", node.input[2]
            nodes.append(helper.make_node(
                "DequantizeLinear", [const(f"{bname}_quantized", bq), const(f"{bname}_scale", b_scale),
                                     const(f"{bname}_zero_point", np.zeros(bq.shape, np.int32))],
                [b_dq], name=f"{tag}_b_DequantizeLinear", axis=0))
            inputs.append(b_dq)
        elif q.bias is not None:  # a MatMul whose bias is a separate Add: the output grid would sit before the bias
            raise ArtifactError(f"layer {path}: {node.op_type} node {node.name} carries no bias but the layer has one "
                                "(exported as MatMul + Add); nothing written")

        # the output: the calibrated int8 grid, as uint8 (TensorRT: int8); the consumers read the dequantized tensor
        y = node.output[0]
        y_f, y_q = f"{tag}_out_f", f"{tag}_out_q"
        s_out, z_out = q.out_q
        out_scale = const(f"{tag}_out_scale", np.array(s_out, np.float32))
        out_zp = const(f"{tag}_out_zp", act_zp(z_out))
        nodes.append(helper.make_node(node.op_type, inputs, [y_f], name=node.name, **attrs))
        nodes.append(helper.make_node("QuantizeLinear", [y_f, out_scale, out_zp], [y_q], name=f"{tag}_out_QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [y_q, out_scale, out_zp], [y], name=f"{tag}_out_DequantizeLinear"))

    rewritten = set(by_node)
    used = {i for n in nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + list(added.values()))
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(rewritten)

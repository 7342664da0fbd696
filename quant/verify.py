"""Verify the state precision policy on the exported graph, not on the intent.

For every state output of the artifact's graph: its dtype must be the policy's storage dtype, and it must not
come out of a quantize/dequantize node unless the policy stores that tensor as int8 (opt-in). ONNX is checked on
the final (quantized) model; ExecuTorch on the exported ATen program that XNNPACK lowers.
"""

from __future__ import annotations

from typing import Any

from edgeseq.errors import ParityError

_ONNX_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 7: "int64", 11: "float64"}


def _verdict(name: str, dtype: str, producer: str, storage: str, quant_op: bool) -> dict[str, Any]:
    ok = dtype == storage and (storage == "int8" or not quant_op)
    return {"name": name, "dtype": dtype, "producer": producer, "storage": storage, "ok": ok}


def check_onnx(model_path, state_names: list[str], out_names: list[str], storage: dict[str, str]) -> list[dict]:
    import onnx

    model = onnx.load(str(model_path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    dtypes = {o.name: _ONNX_DTYPES.get(o.type.tensor_type.elem_type, str(o.type.tensor_type.elem_type)) for o in model.graph.output}
    return [
        _verdict(n, dtypes.get(o, "?"), producer.get(o, "input"), storage[n], producer.get(o, "") in _ONNX_QUANT_OPS)
        for n, o in zip(state_names, out_names)
    ]


def check_exported_program(ep, state_names: list[str], storage: dict[str, str],
                           passthrough: dict[str, str] | None = None) -> list[dict]:
    """``ep``: the torch.export program of ``FlatStep`` (outputs: y, then the state tensors not in
    ``passthrough``, in state order). A passed-through state (``{name: input state it is}``) leaves as it came
    in: its dtype is that input's, from no operator."""
    from edgeseq.step import dtype_name

    passthrough = passthrough or {}
    out = next(n for n in ep.graph.nodes if n.op == "output")
    nodes = {n.name: n for n in ep.graph.nodes}
    user = list(ep.graph_signature.user_inputs)  # names of x, then of the state tensors
    produced = iter(out.args[0][1:])
    results = []
    for name in state_names:
        if name in passthrough:
            node = nodes[user[1 + state_names.index(passthrough[name])]]
            producer = f"input {passthrough[name]} (passed through)"
        else:
            node = next(produced)
            producer = None
        target = str(getattr(node, "target", "")) if node.op == "call_function" else node.op
        quant_op = "quantize_per" in target or "dequantize_per" in target
        val = node.meta.get("val")
        dtype = dtype_name(val.dtype) if val is not None else "?"
        results.append(_verdict(name, dtype, producer or (target.split(".")[1] if "." in target else target),
                                storage[name], quant_op))
    return results


def enforce(results: list[dict], target: str) -> None:
    bad = [r for r in results if not r["ok"]]
    if bad:
        r = bad[0]
        raise ParityError(
            f"{target}: state tensor {r['name']!r} leaves the graph as {r['dtype']} from {r['producer']} but the state "
            f"policy stores it as {r['storage']}: the scheme quantized recurrent state without opt-in; nothing written"
        )

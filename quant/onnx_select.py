"""Which nodes of an exported float ONNX graph ``onnxruntime.quantization`` may rewrite: exactly the step's
quantized linear layers.

Left to its op-type filter, onnxruntime quantizes every ``MatMul``/``Gemm`` it can: on a Mamba step that includes
the matmul that contracts the SSM state with C (QDQ even rounds the *state* through int8 on its way in), the
causal convolution's sum against a constant ones vector and the normalization's mean row, none of which the eager
quantized step quantizes; the artifact then disagrees with its reference (measured: scaled error 1.52 against a
tolerance of 0.15 for int8-static, 0.0247 against 0.02 for int8-dynamic, on a trained Mamba 2x64) and the state
precision policy is broken inside the graph. The lowerings pass ``nodes_to_quantize`` from here instead.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgeseq.errors import ArtifactError


def quantized_layer_paths(step: nn.Module, kinds: tuple[type, ...]) -> list[str]:
    """Module paths of the step's layers of the given (quantized linear) types."""
    return [name for name, m in step.named_modules() if isinstance(m, kinds)]


def select_nodes(model_path: Path, layer_paths: list[str], suffixes: tuple[str, ...] = ("",)) -> list[str]:
    """Names of the ``MatMul``/``Gemm`` nodes whose weight initializer is one of ``layer_paths``' ``.weight``
    (the exporter names initializers by parameter path, possibly under a wrapper prefix; ``suffixes``: what a rewrite
    may have appended to the name, e.g. ``_kn`` for a transposed copy). Every layer must be found: a layer left
    float by a renamed initializer would pass unnoticed otherwise."""
    return [n for nodes in layer_nodes(model_path, layer_paths, suffixes).values() for n in nodes]


def layer_nodes(model_path: Path, layer_paths: list[str], suffixes: tuple[str, ...] = ("",)) -> dict[str, list[str]]:
    """:func:`select_nodes`, by layer: each layer path -> the names of its ``MatMul``/``Gemm`` nodes."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    wanted = {p + ".weight" + sfx: p for p in layer_paths for sfx in suffixes}
    found: dict[str, list[str]] = {p: [] for p in layer_paths}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        name = node.input[1]
        for w, p in wanted.items():
            if name == w or name.endswith("." + w):
                found[p].append(node.name)
                break
    missing = [p for p, nodes in found.items() if not nodes]
    if missing:
        raise ArtifactError(f"could not find the ONNX node of quantized layer(s) {', '.join(missing)} in the exported "
                            "graph (weight initializer renamed?); refusing to leave them float")
    return found


def expect_quantized(path: Path, n: int, op_type: str) -> None:
    """The lowered graph must hold exactly ``n`` quantized layers (``op_type`` nodes, or for ``"QDQ"`` MatMul/Gemm
    nodes whose weight comes out of a DequantizeLinear): onnxruntime skips a node it cannot match by name without
    a word (its dynamic pass renames Gemm nodes, for one), which would leave layers float while the manifest says
    int8."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if op_type == "QDQ":
        producer = {o: node.op_type for node in graph.node for o in node.output}
        got = sum(1 for node in graph.node if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1
                  and producer.get(node.input[1]) == "DequantizeLinear")
    else:
        got = sum(1 for node in graph.node if node.op_type == op_type)
    if got != n:
        raise ArtifactError(f"onnxruntime quantized {got} linear layer(s) of the {n} edgeseq selected ({op_type}); "
                            "nothing written")


def gemm_to_matmul(path: Path) -> None:
    """Rewrite ``Gemm`` nodes with a constant B (torch exports ``linear`` on 2-D inputs as Gemm, transB=1) as
    ``MatMul`` (B transposed, stored as ``<B>_kn``, node ``<name>_matmul``) + ``Add`` (bias), in place: the names
    are then ours, not whatever onnxruntime's own Gemm rewrite would give them."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "Gemm" or n.input[1] not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0):
            nodes.append(n)
            continue
        b = numpy_helper.to_array(inits[n.input[1]])
        if attrs.get("transB", 0):
            b = b.T.copy()
        bname = n.input[1] + "_kn"
        model.graph.initializer.append(numpy_helper.from_array(b, bname))
        mm_out = n.output[0] + "_mm" if len(n.input) > 2 else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], bname], [mm_out], name=n.name + "_matmul"))
        if len(n.input) > 2:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(path))

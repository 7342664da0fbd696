"""``edgeseq inspect``: a summary of an artifact's manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeseq.cli.common import handle_errors, out, print_stepwise


@handle_errors
def inspect(
    artifact: Annotated[Path, typer.Argument(help="Exported artifact (.onnx / .pte) or its .edgeseq.json manifest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
) -> None:
    """Show an artifact's family, runtime, inputs/outputs, state bytes, parity and operator delegation.

    A .onnx / .pte without an edgeseq manifest beside it shows what the file itself says."""
    from edgeseq.cli.common import must_exist

    must_exist(artifact)
    from edgeseq import manifest as man
    from edgeseq.errors import ArtifactError

    if not artifact.name.endswith(man.SUFFIX) and not man.manifest_path_for(artifact).is_file():
        return _inspect_bare(artifact, as_json)
    model_file, _, m = man.resolve_artifact(artifact)
    if not model_file.is_file():
        raise ArtifactError(f"{model_file}: the model file its manifest describes is missing")
    man.check_file(model_file, m)  # a truncated or replaced file: refused, as stream refuses it
    if as_json:
        out.print_json(json.dumps(m))
        return
    size = model_file.stat().st_size
    rt = m["runtime"]
    out.print(f"[bold]{model_file.name}[/]: family [bold]{m['family']}[/] ({m.get('task', '?')}), target {m['target']} "
              f"on {rt.get('name')} {rt.get('version', '')}" + (f", opset {rt['opset']}" if "opset" in rt else "")
              + (f", backend {rt['backend']}" if "backend" in rt else ""))
    out.print(f"file {size:,} bytes (sha256 matches the manifest)", f"| batch {m['batch']}",
              f"| train length {m.get('train_length')}", f"| fingerprint {m['fingerprint'][:16]}")
    out.print(_io_table("inputs / outputs", m))
    for e in m.get("batch_programs") or []:  # more programs of the same step at other batch sizes (for pools)
        f, d = man.select_batch(model_file, m, e["batch"])  # checked: present, that model's, sha256 as listed
        out.print(f"batch {e['batch']}: {f.name} ({f.stat().st_size:,} bytes, sha256 matches), parity at export: max "
                  f"scaled error {d['parity']['max_scaled_error']:.3g} over {d['parity']['steps']} steps")
    if m.get("vocab_size"):
        out.print(f"language model: one token id per step, ids 0..{m['vocab_size'] - 1}; outputs are logits")
    ss = m["state_spec"]
    rf = ss.get("receptive_field")
    out.print(f"state: {len(ss['tensors'])} tensors, [bold]{ss['bytes_per_stream']:,} bytes per stream[/], delay {ss['delay']}"
              + (f" (the first {ss['delay']} outputs of a stream are not ready)" if ss["delay"] else "")
              + (f", receptive field {rf} frames" if rf else "")
              + (f", one output every {ss['output_stride']} frames" if ss.get("output_stride", 1) > 1 else ""))
    cost = m.get("cost")
    if cost:
        line = f"compute: {_flops(cost['flops_per_step'])} per step"
        if cost.get("offline_flops_per_output"):
            line += (f"; recomputing the offline model over its {cost['offline_frames']} frames for each output: "
                     f"{_flops(cost['offline_flops_per_output'])} ([bold]{cost['offline_over_step']:g}x[/] the step)")
        out.print(line + " (FLOPs counted from the graph: matmuls, convolutions, attention)")
    p = m["parity"]
    out.print(f"parity at export ({p['what']}): {p['steps']} steps x {p['batch']} streams, max abs error "
              f"{p['max_abs_error']:.3g}, max rel error {p['max_rel_error']:.3g}, final state error "
              f"{p['final_state_max_abs_error']:.3g} (tolerance {p['tolerance']:g})")
    print_stepwise(p)
    for r in m.get("parity_on") or []:  # edgeseq check-device: the program on a device's (emulated) arithmetic
        out.print(f"parity on {r['device']} ({r['arch']}, qemu -cpu {r['qemu_cpu']}, emulated) vs {r['versus'].split(' (')[0]}: "
                  f"{r['frames']} frames, max abs error {r['max_abs_error']:.3g}, max scaled error "
                  f"{r['max_scaled_error']:.3g}; vs the eager step at most {r.get('vs_eager_bound', r['max_scaled_error']):.3g} "
                  f"({'within' if r['passed'] else 'PAST'} its tolerance {r['tolerance']:g})",
                  highlight=False)
    g = m.get("graph", {})
    if "delegated_ops" in g:
        out.print(f"operators: {g['delegated_ops']} delegated to {rt.get('backend', '?')} in {g['partitions']} partition(s), "
                  f"{g['non_delegated_ops']} not delegated ({g['delegated_fraction']:.0%} delegated)")
        if g["non_delegated"]:
            out.print("  not delegated: " + ", ".join(f"{k} x{v}" for k, v in g["non_delegated"].items()))
        if "planned_arena_bytes" in g:
            out.print(f"  planned memory arena: {g['planned_arena_bytes']:,} bytes")
        passed, cl = rt.get("passthrough_state") or {}, rt.get("channels_last_state") or []
        if "planned_inputs" in rt or passed or cl:
            out.print(f"  state I/O: inputs {'copied into planned memory' if rt.get('planned_inputs', True) else 'read in place'}"
                      + f", outputs {'in planned memory' if rt.get('planned_outputs', True) else 'written where the caller says'}"
                      + (f"; {len(passed)} of {len(ss['tensors'])} state tensors passed along by the runtime (a ring "
                         "buffer's shift), not program outputs" if passed else "")
                      + (f"; {len(cl)} taken channels-last" if cl else ""))
        if rt.get("custom_ops"):
            out.print(f"  edgeseq's own operators: {', '.join(map(str, rt['custom_ops']))} (exported with --custom-ops; "
                      "a runtime without edgeseq's kernels refuses the program: docs/custom-ops.md)")
    if rt.get("tensorrt_qdq") is not None:
        q = rt["tensorrt_qdq"]
        out.print(f"tensorrt: {q['quantize']} QuantizeLinear / {q['dequantize']} DequantizeLinear ({q['weight_dequantize']} on "
                  "weights), checked against TensorRT's explicit-quantization rules; validated on onnxruntime with graph "
                  "optimizations off; the engine is built on the device"
                  + (f"; {rt['sparse_weights']}" if rt.get("sparse_weights") else ""))
    elif "nodes" in g:
        out.print(f"operators: {g['nodes']} ONNX nodes (" + ", ".join(f"{k} x{v}" for k, v in g["op_types"].items()) + ")")
    out.print(f"quantization: {_quant_line(m.get('quantization'))}; pruning: {_prune_line(m.get('pruning'))}")


def _io_table(title: str, info: dict):
    from rich.table import Table

    io = Table(title=title)
    for col in ("kind", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for e in info[kind]:
            io.add_row(kind[:-1], e["name"], str(tuple(e["shape"])), e["dtype"])
    return io


def _inspect_bare(path: Path, as_json: bool) -> None:
    """A .onnx / .pte without an edgeseq manifest beside it: what the file itself says."""
    from edgeseq.errors import ArtifactError

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from edgeseq.errors import require

        onnx = require("onnx", "onnx")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        dtype = {v: k.lower() for k, v in onnx.TensorProto.DataType.items()}

        def rows(values):
            return [{"name": v.name, "dtype": dtype.get(v.type.tensor_type.elem_type, "?"),
                     "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]

        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        info = {"file": path.name, "format": "onnx", "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                "producer": f"{model.producer_name} {model.producer_version}".strip(), "inputs": rows(model.graph.input),
                "outputs": rows(model.graph.output), "nodes": len(model.graph.node), "op_types": ops}
    elif suffix == ".pte":
        from edgeseq.errors import require

        require("executorch", "executorch")
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():  # the flatbuffer's file identifier
            # (checked first: the runtime aborts the process on some non-program bytes instead of raising)
            raise ArtifactError(f"{path}: not an ExecuTorch program (no ET file identifier in its header)")
        from edgeseq.runtimes.et import import_runtime

        try:
            program = import_runtime().Runtime.get().load_program(path)
            methods = sorted(program.method_names)
            meta = program.metadata("forward" if "forward" in methods else methods[0])
        except Exception as exc:  # the runtime's own errors for a corrupt program
            raise ArtifactError(f"{path}: not a loadable ExecuTorch program ({type(exc).__name__})") from None

        scalar = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
                  11: "bool", 15: "bfloat16"}  # c10::ScalarType codes, as the runtime reports them

        def tensors(n, get):
            return [{"name": f"#{i}", "shape": list(get(i).sizes()), "dtype": scalar.get(int(get(i).dtype()), str(get(i).dtype()))}
                    for i in range(n)]

        info = {"file": path.name, "format": "executorch", "methods": methods,
                "inputs": tensors(meta.num_inputs(), meta.input_tensor_meta),
                "outputs": tensors(meta.num_outputs(), meta.output_tensor_meta)}
    else:
        raise ArtifactError(f"{path}: not an artifact (.onnx, .pte or a .edgeseq.json manifest)")
    info["bytes"] = path.stat().st_size
    info["note"] = ("no edgeseq manifest beside it: not exported by edgeseq (or its manifest was moved); no state "
                    "layout, parity or delegation to show, and edgeseq stream will not open it")
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(f"[bold]{path.name}[/]: {info['format']} file, {info['bytes']:,} bytes"
              + (f", opsets {info['opsets']}" if "opsets" in info else "")
              + (f", methods {', '.join(info['methods'])}" if "methods" in info else ""))
    out.print(_io_table("inputs / outputs (from the file)", info))
    if "nodes" in info:
        out.print(f"operators: {info['nodes']} ONNX nodes (" + ", ".join(f"{k} x{v}" for k, v in info["op_types"].items()) + ")")
    out.print(f"[yellow]note:[/] {info['note']}")


def _flops(n: int) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} FLOP"


def _quant_line(q) -> str:
    if not q:
        return "none (float32)"
    cfg = q.get("config", {})
    checks = q.get("state_check") or []
    state = ", ".join(f"{c['name']}={c['dtype']}" for c in checks) or "unchecked"
    ok = "checked on the graph" if checks and all(c.get("ok") for c in checks) else "CHECK FAILED"
    line = f"{cfg.get('scheme', '?')} (state: {state}, {ok})"
    d = q.get("drift")
    if d:
        line += f"; drift over {d['steps']:,} steps: mean rel {d['output_rel_error_mean']:.3g}, {'bounded' if d['bounded'] else 'growing'}"
    return line


def _prune_line(p) -> str:
    if not p:
        return "none"
    return f"{p['config'].get('method', '?')} {p['config'].get('amount', 0):.0%} ({p.get('params', '?'):,} parameters)"

"""``edgeseq inspect``: a summary of an artifact's manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeseq.cli.common import handle_errors, out


@handle_errors
def inspect(
    artifact: Annotated[Path, typer.Argument(help="Exported artifact (.onnx / .pte) or its .edgeseq.json manifest.", exists=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
) -> None:
    """Show an artifact's family, runtime, inputs/outputs, state bytes, parity and operator delegation."""
    from rich.table import Table

    from edgeseq import manifest as man

    model_file, _, m = man.resolve_artifact(artifact)
    if as_json:
        out.print_json(json.dumps(m))
        return
    size = model_file.stat().st_size if model_file.exists() else None
    rt = m["runtime"]
    out.print(f"[bold]{model_file.name}[/]: family [bold]{m['family']}[/] ({m.get('task', '?')}), target {m['target']} "
              f"on {rt.get('name')} {rt.get('version', '')}" + (f", opset {rt['opset']}" if "opset" in rt else "")
              + (f", backend {rt['backend']}" if "backend" in rt else ""))
    out.print(f"file {size:,} bytes" if size is not None else "file missing!", f"| batch {m['batch']}",
              f"| train length {m.get('train_length')}", f"| fingerprint {m['fingerprint'][:16]}")
    io = Table(title="inputs / outputs")
    for col in ("kind", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for e in m[kind]:
            io.add_row(kind[:-1], e["name"], str(tuple(e["shape"])), e["dtype"])
    out.print(io)
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
                      + (f"; {len(passed)} of {len(ss['tensors'])} state tensors passed along by the runtime (a ring "
                         "buffer's shift), not program outputs" if passed else "")
                      + (f"; {len(cl)} taken channels-last" if cl else ""))
    if rt.get("tensorrt_qdq") is not None:
        q = rt["tensorrt_qdq"]
        out.print(f"tensorrt: {q['quantize']} QuantizeLinear / {q['dequantize']} DequantizeLinear ({q['weight_dequantize']} on "
                  "weights), checked against TensorRT's explicit-quantization rules; validated on onnxruntime with graph "
                  "optimizations off; the engine is built on the device"
                  + (f"; {rt['sparse_weights']}" if rt.get("sparse_weights") else ""))
    elif "nodes" in g:
        out.print(f"operators: {g['nodes']} ONNX nodes (" + ", ".join(f"{k} x{v}" for k, v in g["op_types"].items()) + ")")
    out.print(f"quantization: {_quant_line(m.get('quantization'))}; pruning: {_prune_line(m.get('pruning'))}")


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

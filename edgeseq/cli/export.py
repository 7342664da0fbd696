"""``edgeseq export``: convert a model directory and export its step to a runtime, validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeseq.cli.choices import RnnOps, Target
from edgeseq.cli.common import handle_errors, out, print_stepwise, status
from edgeseq.cli.source import ModelArg, TimeAxisOpt


@handle_errors
def export(
    model_dir: ModelArg,
    target: Annotated[Target, typer.Option(help="Export target.")] = Target("onnx"),
    out_path: Annotated[Path, typer.Option("--out", help="Output path stem, file or folder (OUT -> OUT.onnx + OUT.onnx.edgeseq.json).")] = Path("out/model"),
    batch: Annotated[str, typer.Option(
        metavar="<N[,N...]>", callback=lambda v: parse_batches(v),
        help="Streams per call. ExecuTorch fixes it per program: a list (1,8,64) writes one program per size beside "
             "the first, each validated, all listed in the first one's manifest (edgeseq.open(..., batch=8), "
             "StreamPool). ONNX takes any batch: one number, the validation batch.")] = "1",
    steps: Annotated[int, typer.Option(min=1, help="Length of the validation rollout (state fed back).")] = 2000,
    tolerance: Annotated[float, typer.Option(help="Max scaled error (abs / max(1, |ref|)) vs eager; past it nothing is written.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of the validation inputs.")] = 0,
    rnn_ops: Annotated[RnnOps, typer.Option(
        help="onnx: how LSTM/GRU/RNN cells are written. timed: both ONNX's fused LSTM/GRU/RNN ops and the cells' "
             "gates are written and run on onnxruntime, the faster is kept (both times go into the manifest, "
             "runtime.rnn_ops); fused or gates: that one. The tensorrt target always writes the gates.")] = RnnOps("timed"),
    custom_ops: Annotated[bool, typer.Option(
        "--custom-ops", help="executorch: call edgeseq's own operators where the step has one (a Mamba-1 or Mamba-2 "
             "layer's scan update as one kernel; a 256x4 LM's step here: Mamba 9-10% faster in fp32, 23-25% with int8 "
             "weights, Mamba-2 33%). The .pte then runs where those kernels are registered: edgeseq's executorch "
             "runtime (compiled with g++ on first use), the native runner, or an app that links libedgeseq_kernels "
             "(docs/custom-ops.md); a stock ExecuTorch runtime refuses it. Listed in the manifest (runtime.custom_ops).")] = False,
    time_axis: TimeAxisOpt = None,
) -> None:
    """Export MODEL's step function to TARGET and validate it on its runtime.

    MODEL is an edgeseq model directory or a torch.export archive (.pt2) of your own model (docs/own-models.md).

    The artifact runs STEPS steps on its runtime beside the eager step, each feeding its own state back, and its
    outputs are compared with the model's own forward over the same stream; both errors go into the manifest
    (parity, model_parity). Past TOLERANCE the export fails and writes nothing (but for a quantized step whose
    stream parts from the eager step at an int8 rounding: each of its steps is checked from the eager state
    instead, docs/compression.md).
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_path, "--out")  # before any work
    import edgeseq
    from edgeseq.cli.source import open_model

    with status(f"converting {model_dir}"):
        model, step = open_model(model_dir, time_axis)
    with status(f"exporting to {target.value} and validating over {steps} steps"):
        art = edgeseq.export(step, out_path, target=target.value, batch=batch[0], steps=steps,
                             tolerance=tolerance, seed=seed, more_batches=batch[1:], model=model,
                             rnn_ops=rnn_ops.value, custom_ops=custom_ops)
    p = art.parity
    g = art.manifest.get("graph", {})
    extra = (f"; {g['delegated_ops']}/{g['delegated_ops'] + g['non_delegated_ops']} ops delegated"
             if "delegated_ops" in g else "")
    out.print(f"wrote {art.path} ({art.manifest['file_bytes']:,} bytes) and {art.manifest_path}; "
              f"parity over {p['steps']} steps: max abs error {p['max_abs_error']:.3g} vs the eager step{extra}")
    print_stepwise(p)
    mp = art.manifest.get("model_parity")
    if mp is not None:
        out.print(f"artifact vs the model itself over {mp['steps']} steps: max abs error {mp['max_abs_error']:.3g}, "
                  f"max scaled error {mp['max_scaled_error']:.3g}" + ("" if mp["enforced"] else " (quantized: recorded, not enforced)"))
    r = art.manifest.get("runtime", {}).get("rnn_ops")
    if r is not None and r.get("decided_by") == "timing":
        t = r["us_per_step"]
        out.print(f"recurrent cells as {'ONNX LSTM/GRU/RNN ops' if r['form'] == 'fused' else 'gates'}: "
                  f"{t['fused']:.1f} us (fused ops) vs {t['gates']:.1f} us (gates) per step on onnxruntime")
    ops = art.manifest.get("runtime", {}).get("custom_ops")
    if custom_ops:
        out.print(f"edgeseq's own operators in the program: {', '.join(ops)}" if ops else
                  "no edgeseq operator applies to this step (they cover: the scan update of Mamba-1 and Mamba-2): standard operators only")
    for e in art.manifest.get("batch_programs", []):
        out.print(f"wrote {art.path.with_name(e['file'])} (batch {e['batch']}) and its manifest; "
                  f"parity: max scaled error {e['max_scaled_error']:.3g}")


def parse_batches(value: str) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]`` (the first is the artifact's own batch; duplicates dropped)."""
    try:
        sizes = [int(v) for v in str(value).replace(" ", "").split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected batch sizes such as 1 or 1,8,64") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"{value!r}: batch sizes must be >= 1")
    return list(dict.fromkeys(sizes))

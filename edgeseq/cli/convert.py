"""``edgeseq convert``: convert a model directory to its step form and prove parity over a long stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.common import handle_errors, out, progress_bar, status
from edgeseq.cli.source import ModelArg, TimeAxisOpt


@handle_errors
def convert(
    model_dir: ModelArg,
    steps: Annotated[int, typer.Option(min=1, help="Length of the parity stream.")] = 10_000,
    batch: Annotated[int, typer.Option(min=1, help="Independent streams in the parity check.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the standard-normal parity inputs.")] = 0,
    tolerance: Annotated[float, typer.Option(help="Fail (exit 1) if the step's max abs error exceeds this.")] = 1e-4,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the state spec and parity report here.")] = None,
    time_axis: TimeAxisOpt = None,
) -> None:
    """Convert MODEL to a constant-memory step function and check it against the parallel form.

    MODEL is an edgeseq model directory or a torch.export archive (.pt2) of your own model, whose graph is
    rewritten into a step (docs/own-models.md). Prints the state layout (names, shapes, bytes per stream), the
    delay and receptive field, and the max abs/rel error of the step over STEPS steps fed back through its own
    state against the model itself.
    """
    import torch
    from rich.table import Table

    import edgeseq
    from edgeseq.errors import ParityError

    from edgeseq.cli.source import open_model

    with status(f"converting {model_dir}"):
        model, step = open_model(model_dir, time_axis)
    x = step.example_input(steps, batch, torch.Generator().manual_seed(seed)).transpose(0, 1).contiguous()
    if callable(getattr(step, "inputs_of", None)):  # a traced model takes its own layout
        x = step.inputs_of(x)
    with progress_bar() as p:
        t = p.add_task(f"parity over {steps} steps", total=steps)
        report = edgeseq.check_parity(model, step, x, progress=lambda n: p.advance(t, n))
    table = Table(title=f"{step.info.family} step state ({step.state_spec.bytes_per_stream:,} bytes per stream)")
    for col in ("state", "shape", "dtype", "bytes/stream"):
        table.add_column(col)
    for s in step.state_spec.tensors:
        table.add_row(s.name, str(("batch", *s.shape)), s.dtype, f"{s.nbytes:,}")
    out.print(table)
    spec = step.state_spec
    rf = "unbounded (a recurrence)" if spec.receptive_field is None else f"{spec.receptive_field} frames"
    out.print(f"delay {spec.delay} frames (output n is the model's output n - {spec.delay}); receptive field {rf}")
    proof = getattr(step, "model_parity", None)
    if proof:
        checks = "; ".join(f"{c['what'].removeprefix('step vs model on ')}: max scaled error {c['max_scaled_error']:.3g}"
                           for c in proof["checks"])
        out.print(f"proven at conversion against the model ({checks})")
    out.print(f"parity over {steps} steps x {batch} streams: max abs error {report.max_abs_error:.3g}, "
              f"max rel error {report.max_rel_error:.3g} (worst step {report.worst_step})")
    if json_out is not None:
        from edgeseq.fsutil import write_json_atomic

        write_json_atomic(json_out, {"state_spec": step.state_spec.to_dict(), "parity": report.summary(),
                                     "fingerprint": step.fingerprint()})
    if report.max_abs_error > tolerance:
        raise ParityError(f"step disagrees with the parallel form: max abs error {report.max_abs_error:.3g} > {tolerance:g}")

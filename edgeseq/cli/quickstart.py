"""``edgeseq quickstart``: the main job on the bundled default, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeseq.cli.common import err, handle_errors, out, progress_bar


@handle_errors
def quickstart(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the model, the artifacts and summary.json.")] = Path("runs/quickstart"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 40,
    parity_steps: Annotated[int, typer.Option(min=1, help="Length of the step-vs-parallel parity stream.")] = 10_000,
) -> None:
    """Train a small LSTM classifier on the bundled JapaneseVowels data, convert it to a step function,
    export it to ONNX and ExecuTorch, stream the test split through every runtime, print accuracy and parity, and
    write a profile report (measured here, estimated for every catalog device) to OUT/report/report.html.
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_dir, "--out")  # before any work
    from rich.table import Table

    from edgeseq.fsutil import write_json_atomic
    from edgeseq.pipeline import QuickstartConfig, run_quickstart

    cfg = QuickstartConfig(epochs=epochs, parity_steps=parity_steps)
    with progress_bar() as p:
        task = p.add_task("starting", total=None)

        def on_stage(name: str) -> None:
            p.update(task, description=name, total=None, completed=0)
            err.log(name)

        def on_epoch(epoch: int, total: int, loss: float) -> None:
            p.update(task, description=f"train: epoch {epoch}/{total}, loss {loss:.4f}", total=total, completed=epoch)

        def on_series(label: str, i: int, n: int) -> None:
            if i % 10 == 0 or i == n:
                p.update(task, description=f"stream on {label}", total=n, completed=i)

        s = run_quickstart(out_dir, cfg, on_stage, on_epoch, on_series)
    write_json_atomic(out_dir / "summary.json", s)

    par = s["parity_step_vs_parallel"]
    out.print(f"\n[bold]{s['family']}[/] LSTM, {s['params']:,} parameters, trained on {s['data']} in {s['train_seconds']:.1f} s; "
              f"state {s['state_bytes_per_stream']:,} bytes per stream")
    out.print(f"step vs parallel over {par['steps']:,} real frames: max abs error {par['max_abs_error']:.3g}, "
              f"max rel error {par['max_rel_error']:.3g}")
    table = Table(title=f"test split ({s['test_series']} series), streamed one frame at a time")
    for col in ("runtime", "accuracy", "max |logit - parallel|", "µs/step"):
        table.add_column(col, justify="right" if col != "runtime" else "left")
    for r in s["runtimes"]:
        table.add_row(r["runtime"], f"{r['accuracy']:.4f}", f"{r['max_abs_error_vs_parallel']:.2e}",
                      "-" if r["us_per_step"] is None else f"{r['us_per_step']:.1f}")
    out.print(table)
    for t, a in s["artifacts"].items():
        p_ = a["parity"]
        out.print(f"{t}: {a['path']} ({a['bytes']:,} bytes), export parity over {p_['steps']:,} steps "
                  f"max abs error {p_['max_abs_error']:.3g}")
    rep = s.get("report")
    if rep:
        for c in rep["measured"]:
            out.print(f"profile {c['label']}: p50 {c['p50_us']:.1f} µs, p99 {c['p99_us']:.1f} µs, jitter {c['cv']:.2f}, "
                      f"memory {'flat' if c['memory_flat'] else 'GROWS'}, parity vs eager {c['parity_max_abs_error']:.3g}")
        out.print(f"report (measured here + {rep['estimates']} device estimates): {rep['html']}")
    out.print(f"summary: {out_dir / 'summary.json'}")

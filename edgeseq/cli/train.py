"""``edgeseq train``: train a family's parallel form on a bundled data set or a user's data and save a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.choices import Family
from edgeseq.cli.common import err, handle_errors, out, progress_bar
from edgeseq.cli.dataopts import (
    SOURCE_HELP, Features, LabelCol, MaxMemory, SeriesCol, SplitSeed, Task, TimeCol, data_options, load_data,
)


@handle_errors
def train(
    family: Annotated[Family, typer.Option(help="Model family to build.")] = Family("rnn"),
    data: Annotated[str, typer.Option(help=f"Data to train on: {SOURCE_HELP}.")] = "japanese-vowels",
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (config.json + model.safetensors + metrics.json).")] = Path("runs/model"),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 40,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate (cosine decay).")] = 1e-2,
    batch_size: Annotated[int, typer.Option(min=1, help="Series per optimiser step.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Family config field as key=value (JSON values), repeatable, e.g. --set cell=gru --set d_hidden=128."),
    ] = None,
    series_col: SeriesCol = None,
    time_col: TimeCol = None,
    label_col: LabelCol = None,
    features: Features = None,
    split_seed: SplitSeed = 0,
    task: Task = None,
    max_memory: MaxMemory = None,
) -> None:
    """Train a model of FAMILY on DATA and save it as a model directory.

    DATA is a bundled data set or your own file or folder (docs/data.md): labels one per series train a
    classifier, per-step targets a sequence model; without labels nothing can be trained. The family's config gets
    d_in, d_out and task from the data; --set overrides any other field. Test-split metrics are printed and
    written to metrics.json beside the model.
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_dir, "--out")  # before any work
    import edgeseq
    from edgeseq.config import parse_overrides
    from edgeseq.errors import InputError
    from edgeseq.fsutil import write_json_atomic
    from edgeseq.train import TrainConfig, fit

    ds = load_data(data, data_options(series_col, time_col, label_col, features, split_seed, task, max_memory),
                   labels_for="training")
    if ds.task == "unlabeled":
        raise InputError(f"--data {ds.source or ds.name}: no labels to train on (a label column, y, labels.csv or "
                         "sub-folders); unlabeled data serves calibration, streaming and profiling")
    cfg = {"d_in": ds.d_in, "d_out": ds.d_out, "task": ds.task, **parse_overrides(set_ or [])}
    import torch

    torch.manual_seed(seed)  # initial weights
    model = edgeseq.build(family.value, **cfg)
    tc = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    err.print(f"training {family.value} ({n_params:,} parameters) on {ds.name}: {len(ds.train)} train / {len(ds.test)} test series")
    with progress_bar() as p:
        bar_task = p.add_task("training", total=epochs)

        def on_epoch(epoch: int, total: int, loss: float) -> None:
            p.update(bar_task, completed=epoch, description=f"epoch {epoch}/{total} loss {loss:.4f}")

        result = fit(model, ds, tc, progress=on_epoch)
    edgeseq.save(model, out_dir)
    metrics = {"data": ds.name, "family": family.value, "params": n_params, "seconds": result.seconds,
               "final_loss": result.losses[-1], "test": result.metrics, "train_config": tc.__dict__}
    write_json_atomic(out_dir / "metrics.json", metrics)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    out.print(f"trained in {result.seconds:.1f} s; test {shown}; saved {out_dir}")

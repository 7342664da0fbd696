"""The data options every command that takes data shares: a bundled name or a user's file, and how to read it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from edgeseq.data import DATASETS

SOURCE_HELP = (f"a bundled data set ({', '.join(DATASETS.keys())}) or your own file or folder: .npz, .npy, .csv, "
               ".tsv, .parquet, or a folder of per-series .npy/.csv files (docs/data.md)")
SeriesCol = Annotated[Optional[str], typer.Option(
    "--series-col", help="Table data: the series-id column (default: 'series' if present, else the file is one series).")]
TimeCol = Annotated[Optional[str], typer.Option(
    "--time-col", help="Table data: the time column (default: 'time' if present); it must never go backwards.")]
LabelCol = Annotated[Optional[str], typer.Option(
    "--label-col", help="Table data: the label column, one class per series (default: 'label' if present).")]
Features = Annotated[Optional[str], typer.Option(
    "--features", help="Table data: comma-separated feature columns (default: every other numeric column).")]
Task = Annotated[Optional[str], typer.Option(
    "--task", help="The data's task: classify, sequence or unlabeled (default: from the labels' shape: one per series "
                   "is classify, per-step targets sequence, none unlabeled); a file whose labels do not fit it is refused.")]
MaxMemory = Annotated[Optional[str], typer.Option(
    "--max-memory", help="The most memory reading the data may take (512MiB, 2GiB, bytes); a file that would take "
                         "more is refused before it is read. Default: the memory available.")]
SplitSeed = Annotated[int, typer.Option(
    "--split-seed", help="Seed of the train/test split made when the data has none (a 'split' column or array).")]


def data_options(series_col=None, time_col=None, label_col=None, features=None, split_seed: int = 0, task=None,
                 max_memory: str | None = None):
    from edgeseq.data.files import DataOptions
    from edgeseq.data.sizes import parse_size

    cols = tuple(c.strip() for c in features.split(",") if c.strip()) if features else None
    return DataOptions(series=series_col, time=time_col, label=label_col, features=cols, seed=split_seed, task=task,
                       max_memory=None if max_memory is None else parse_size(max_memory))


def load_data(source: str, options, what: str = "data", *, d_in: int | None = None, labels_for: str | None = None):
    """Load ``source`` (see :func:`edgeseq.data.load`: ``d_in`` and ``labels_for`` are checked against a file's
    header before its data is read); for a user's file, say how it was read and split."""
    from edgeseq.cli.common import err
    from edgeseq.data import load

    ds = load(source, options, d_in=d_in, labels_for=labels_for)
    if ds.note:
        classes = f", classes {', '.join(ds.classes[:8])}{' ...' if len(ds.classes) > 8 else ''}" if ds.classes else ""
        err.print(f"{what} {ds.name}: {len(ds.train) + (len(ds.test) if ds.test is not ds.train else 0)} series of "
                  f"{ds.d_in} features, task {ds.task}{classes}; {ds.note}", highlight=False)
    return ds

"""Data: bundled data sets (a registry of loaders) and a user's own files, both as :class:`SequenceDataset`.

:func:`load` is what every command and API that takes data calls: a bundled name (``japanese-vowels`` ships
inside the package, see ``README.md`` beside this file; the others come from the ``data`` extra) or a path to a
``.npz`` / ``.npy`` / ``.csv`` / ``.tsv`` / ``.parquet`` file or a folder of per-series files
(:mod:`edgeseq.data.files`, docs/data.md). :func:`check_fits` checks a data set against a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Callable

import numpy as np
import torch

from edgeseq.registry import Registry


@dataclass
class Split:
    x: np.ndarray  # (N, T_max, d_in) float32, zero-padded after each series' end
    lengths: np.ndarray  # (N,) int64
    y: np.ndarray  # (N,) int64 class labels (classify) or (N, T_max, d_out) targets (sequence)

    def __len__(self) -> int:
        return len(self.lengths)

    def series(self, i: int) -> np.ndarray:
        """Series ``i`` without padding: (T_i, d_in)."""
        return self.x[i, : self.lengths[i]]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x), torch.from_numpy(self.lengths), torch.from_numpy(self.y)


@dataclass
class SequenceDataset:
    name: str
    task: str  # "classify" or "sequence"
    d_in: int
    d_out: int  # classes (classify) or target features (sequence)
    train: Split
    test: Split
    source: str = ""
    classes: list[str] | None = None  # class names of a user's file (labels in sorted order), when known
    note: str = ""  # how the split was made (a user's file), for the CLI to print
    features: list[str] | None = None  # feature column names of a table

    @property
    def max_length(self) -> int:
        return int(max(self.train.lengths.max(), self.test.lengths.max()))


DATASETS: Registry[Callable[[], SequenceDataset]] = Registry("data set")


def load_dataset(name: str) -> SequenceDataset:
    return DATASETS.get(name)()


def load(source, options=None, *, d_in: int | None = None, labels_for: str | None = None) -> SequenceDataset:
    """A bundled data set by name, or a user's file or folder (``options``: :class:`edgeseq.data.files.DataOptions`).

    ``d_in`` (the model's features per frame) and ``labels_for`` (why labels are needed, e.g. ``"training"``) are
    checked against a file's header before its data is read: an ``.npy`` header, an ``.npz``'s members, a table's
    header row or parquet schema, a folder's listing. :func:`check_fits` still checks the data set as read."""
    from dataclasses import replace
    from pathlib import Path

    from edgeseq.data.files import DataOptions, load_file

    if d_in is not None or labels_for is not None:
        options = replace(options or DataOptions(), d_in=d_in, labels_for=labels_for)

    if isinstance(source, SequenceDataset):
        return source
    text = str(source)
    if text in DATASETS and not Path(text).exists():
        return load_dataset(text)
    path = Path(text).expanduser()
    if not path.exists() and "/" not in text and not path.suffix:
        from edgeseq.errors import InputError

        raise InputError(f"{text!r} is neither a bundled data set ({', '.join(DATASETS.keys())}) nor a file or folder")
    return load_file(path, options)


def check_fits(ds: SequenceDataset, d_in: int, *, d_out: int | None = None, task: str | None = None,
               what: str = "data") -> None:
    """Refuse, in one line naming the data, a data set that does not fit a model: its feature count, and where a
    metric is wanted (``task``) its labels: missing, of another task, or classes outside the model's ``d_out``."""
    from edgeseq.errors import InputError

    where = ds.source or ds.name
    if ds.d_in != d_in:
        raise InputError(f"{what} {where}: {ds.d_in} features per frame; the model takes {d_in}")
    if task is None:
        return
    if ds.task == "unlabeled":
        raise InputError(f"{what} {where}: no labels, so the model's {task} metric cannot be computed (add a label "
                         "column, y, labels.csv or sub-folders)")
    if ds.task != task:
        raise InputError(f"{what} {where}: {ds.task} labels; the model's task is {task}")
    if task == "classify" and d_out is not None:
        top = int(max(ds.train.y.max(initial=0), ds.test.y.max(initial=0)))
        if top >= d_out:
            name = ds.classes[top] if ds.classes and top < len(ds.classes) else str(top)
            raise InputError(f"{what} {where}: label {name!r} (class {top}) is outside the model's {d_out} classes")
    if task == "sequence" and d_out is not None and ds.d_out != d_out:
        raise InputError(f"{what} {where}: {ds.d_out} targets per step; the model gives {d_out}")


def _pad(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    out = np.zeros((len(lengths), int(lengths.max()), values.shape[1]), dtype=np.float32)
    start = 0
    for i, n in enumerate(lengths):
        out[i, :n] = values[start : start + n]
        start += n
    return out


@DATASETS.register("japanese-vowels")
def japanese_vowels() -> SequenceDataset:
    """UCI Japanese Vowels (Kudo et al. 1999; CC BY 4.0): 12 LPC coefficients per frame, 9 speakers."""
    with resources.files(__name__).joinpath("japanese_vowels.npz").open("rb") as f:
        z = dict(np.load(f, allow_pickle=False))
    splits = {}
    for s in ("train", "test"):
        lengths = z[f"{s}_lengths"].astype(np.int64)
        splits[s] = Split(_pad(z[f"{s}_values"], lengths), lengths, z[f"{s}_labels"].astype(np.int64))
    return SequenceDataset(
        "japanese-vowels", "classify", 12, 9, splits["train"], splits["test"],
        source="UCI Japanese Vowels via the UEA archive (aeon); CC BY 4.0",
    )


from edgeseq.data import forecasting as _forecasting  # noqa: E402,F401  (registers "elecdemand")
from edgeseq.data import sensors as _sensors  # noqa: E402,F401  (registers "basic-motions")

"""Data sets: a registry of loaders returning :class:`SequenceDataset`.

``japanese-vowels`` ships inside the package (see ``README.md`` beside this file for its source and licence),
so the main job needs no download and no extra.
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

    @property
    def max_length(self) -> int:
        return int(max(self.train.lengths.max(), self.test.lengths.max()))


DATASETS: Registry[Callable[[], SequenceDataset]] = Registry("data set")


def load_dataset(name: str) -> SequenceDataset:
    return DATASETS.get(name)()


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

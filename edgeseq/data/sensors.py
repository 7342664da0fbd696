"""Sensor-stream data sets from installed packages (the ``data`` extra); nothing downloads.

``basic-motions``: the UEA BasicMotions set (shipped inside ``aeon``): a smart watch's 3-axis accelerometer and
3-axis gyroscope at 10 Hz, 100 samples (10 s) per recording, four activities (badminton, running, standing,
walking); 40 training and 40 test recordings (Clements et al., UEA archive; aeon ``load_classification``).
Channels are z-scored with the training part's statistics; labels are the activities in sorted order.
"""

from __future__ import annotations

import numpy as np

from edgeseq.data import DATASETS, SequenceDataset, Split
from edgeseq.errors import require

BASIC_MOTIONS_CLASSES = ("badminton", "running", "standing", "walking")


def basic_motions() -> SequenceDataset:
    datasets = require("aeon.datasets", "data")
    splits = {}
    for name in ("train", "test"):
        x, y = datasets.load_classification("BasicMotions", split=name)  # (40, 6, 100), activity names
        splits[name] = (np.asarray(x, dtype=np.float64).transpose(0, 2, 1), np.asarray([BASIC_MOTIONS_CLASSES.index(str(v)) for v in y]))
    flat = splits["train"][0].reshape(-1, 6)
    mean, std = flat.mean(0), flat.std(0)
    out = {}
    for name, (x, y) in splits.items():
        z = ((x - mean) / std).astype(np.float32)
        out[name] = Split(z, np.full(len(z), z.shape[1], dtype=np.int64), y.astype(np.int64))
    return SequenceDataset(
        "basic-motions", "classify", 6, 4, out["train"], out["test"],
        source="UEA BasicMotions via aeon (smart-watch accelerometer + gyroscope, 10 Hz, 4 activities)",
    )


DATASETS.register("basic-motions", basic_motions)

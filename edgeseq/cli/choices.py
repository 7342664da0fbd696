"""Closed CLI choices, built from the registries (adding a family, target or data set needs no CLI change)."""

from __future__ import annotations

from enum import Enum

import edgeseq  # noqa: F401  (registers families, exporters, runtimes)
from edgeseq.exporters import EXPORTERS
from edgeseq.families import FAMILIES
from edgeseq.runtimes import RUNTIMES

Family = Enum("Family", {k: k for k in FAMILIES.keys()}, type=str)
Target = Enum("Target", {k: k for k in EXPORTERS.keys()}, type=str)
RuntimeName = Enum("RuntimeName", {k: k for k in RUNTIMES.keys()}, type=str)
from edgeseq.exporters.base import RNN_OPS  # noqa: E402

RnnOps = Enum("RnnOps", {k: k for k in RNN_OPS}, type=str)

from edgeseq.quant import SCHEMES  # noqa: E402

SchemeName = Enum("SchemeName", {k: k for k in SCHEMES.keys()}, type=str)

from edgeseq.quant.qlinear import ACTIVATION_GRIDS, WEIGHT_FORMATS  # noqa: E402

WeightFormat = Enum("WeightFormat", {k: k for k in WEIGHT_FORMATS}, type=str)
ActivationGrid = Enum("ActivationGrid", {k: k for k in ACTIVATION_GRIDS}, type=str)

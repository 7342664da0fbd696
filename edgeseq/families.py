"""The family registry: one entry per model family (``rnn`` now; ``aaren``, ``mamba``, ... later).

A family provides a frozen config dataclass and a parallel-form ``nn.Module`` built from it. Its step form
and converter are registered in :mod:`edgeseq.convert` by the family's own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeseq.config import config_from_dict
from edgeseq.registry import Registry


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type
    model_cls: type[nn.Module]  # model_cls(config) -> parallel form; the instance keeps it as `.config`
    summary: str = ""
    tiny: tuple[tuple[str, Any], ...] = ()  # config overrides of a tiny model for tests and the conformance suite


FAMILIES: Registry[Family] = Registry("family")


def register_family(family: Family) -> Family:
    return FAMILIES.register(family.name, family)


def family_of(model: nn.Module) -> Family | None:
    """The family whose parallel-form class ``model`` is, or None."""
    return FAMILIES.find(lambda _k, f: type(model) is f.model_cls)


def build(family: str, **config: Any) -> nn.Module:
    """An untrained model of a registered family: ``edgeseq.build("rnn", d_in=12, d_out=9, cell="gru")``."""
    fam = FAMILIES.get(family)
    cfg = config_from_dict(fam.config_cls, config, what=f"{family} config")
    return fam.model_cls(cfg)

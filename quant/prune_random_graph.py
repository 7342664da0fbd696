"""Pruning method ``random-graph``: the sparse structures of the sparse-RNN thesis in the seeds, where the
connectivity between hidden units is a random graph fixed before (re)training instead of learned by magnitude.

Every weight matrix gets a mask from a graph on its units: ``erdos-renyi`` (each connection kept with probability
1 - amount) or ``watts-strogatz`` (a ring lattice where every unit links to its ``k`` nearest neighbours, k chosen
for the density, each link rewired to a random unit with probability ``rewire``: small-world connectivity). For a
recurrent matrix (gates x H rows, H columns) the same unit-to-unit graph masks every gate. Fine-tune (or train) with
the mask held: ``prune_(model, RandomGraphConfig(0.8), data=..., finetune_epochs=...)``. Like ``unstructured``, the
zeros shrink the compressed download, not CPU time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.quant.prune import PruneConfig, PruneMethod, register_method, weight_matrices

GRAPHS = ("erdos-renyi", "watts-strogatz")


@dataclass(frozen=True)
class RandomGraphConfig(PruneConfig):
    method = "random-graph"
    graph: str = "watts-strogatz"
    rewire: float = 0.1  # watts-strogatz: probability of rewiring each lattice link
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.graph not in GRAPHS:
            raise ConfigError(f"random-graph: graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if not 0.0 <= self.rewire <= 1.0:
            raise ConfigError(f"random-graph: rewire must be in [0, 1], got {self.rewire}")


def graph_mask(rows: int, cols: int, density: float, graph: str, rewire: float, g: torch.Generator) -> torch.Tensor:
    """A (rows, cols) 0/1 mask with about ``density`` of its entries set."""
    if graph == "erdos-renyi":
        return (torch.rand(rows, cols, generator=g) < density).float()
    k = max(1, round(density * cols))  # links per row on the ring lattice
    mask = torch.zeros(rows, cols)
    for i in range(rows):
        center = round(i * cols / rows)  # rows and columns may differ: place row i on the column ring
        for j in range(k):
            col = (center + j - k // 2) % cols
            if torch.rand((), generator=g) < rewire:
                col = int(torch.randint(cols, (), generator=g))
            mask[i, col] = 1.0
    return mask


def _random_graph(model: nn.Module, config: RandomGraphConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(config.seed)
    density = 1.0 - config.amount
    masks = {}
    with torch.no_grad():
        for name, w in weight_matrices(model).items():
            rows, cols = w.shape
            gates = rows // cols if "weight_hh" in name and rows % cols == 0 else 1
            base = graph_mask(rows // gates, cols, density, config.graph, config.rewire, g)
            mask = base.repeat(gates, 1).to(w.dtype)
            masks[name] = mask
            w.mul_(mask)
    return masks


register_method(PruneMethod("random-graph", RandomGraphConfig,
                            "connectivity from a fixed random graph (Erdos-Renyi or Watts-Strogatz small world)", _random_graph))

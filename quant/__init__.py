"""Quantization and pruning with a recurrent-state precision policy.

::

    from edgeseq.quant import quantize_, Int8DynamicConfig, Int8StaticConfig, StatePolicy
    step = edgeseq.convert(model)
    quantize_(step, Int8StaticConfig(state=StatePolicy({"c0": "float16"})), calib="japanese-vowels")
    edgeseq.export(step, "out/lstm-int8", target="executorch")   # checked vs the eager quantized step

Schemes (one module each): ``int8-dynamic``, ``int8-static``, ``fp16``, ``int8-weight-only`` / ``int4-weight-only``; see ``SCHEMES``. Pruning: ``prune_(model,
StructuredConfig(0.5), data="japanese-vowels", finetune_epochs=2)``; methods ``unstructured``, ``n:m``, ``structured``
(see ``METHODS``). docs/compression.md has both.
"""

from edgeseq.quant.config import SCHEMES, QuantConfig, StatePolicy, config_from_dict, schemes_for
from edgeseq.quant import fp16 as _fp16  # noqa: F401  (registers the schemes)
from edgeseq.quant import int8_dynamic as _int8_dynamic  # noqa: F401
from edgeseq.quant import int8_static as _int8_static  # noqa: F401
from edgeseq.quant import weight_only as _weight_only  # noqa: F401
from edgeseq.quant.api import quantize_
from edgeseq.quant.fp16 import Fp16Config
from edgeseq.quant.int8_dynamic import Int8DynamicConfig
from edgeseq.quant.int8_static import Int8StaticConfig
from edgeseq.quant.weight_only import Int4WeightOnlyConfig, Int8WeightOnlyConfig
from edgeseq.quant.prune import METHODS, prune_, sparsity
from edgeseq.quant import prune_magnitude as _prune_magnitude  # noqa: F401  (registers the methods)
from edgeseq.quant import prune_structured as _prune_structured  # noqa: F401
from edgeseq.quant import prune_random_graph as _prune_random_graph  # noqa: F401
from edgeseq.quant.prune_random_graph import RandomGraphConfig
from edgeseq.quant.prune_magnitude import NMConfig, UnstructuredConfig
from edgeseq.quant.prune_structured import StructuredConfig

__all__ = [
    "METHODS", "NMConfig", "RandomGraphConfig", "StructuredConfig", "UnstructuredConfig", "prune_", "sparsity", "SCHEMES", "Fp16Config", "Int4WeightOnlyConfig", "Int8WeightOnlyConfig", "Int8DynamicConfig", "Int8StaticConfig", "QuantConfig", "StatePolicy",
    "config_from_dict", "quantize_", "schemes_for",
]

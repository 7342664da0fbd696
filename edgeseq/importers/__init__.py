"""Importers: trained models from other libraries, rewritten as edgeseq families.

* :mod:`~edgeseq.importers.huggingface` -- ``transformers`` Mamba / Mamba-2 checkpoints (``save_pretrained``
  directories, loaded from safetensors only) and in-memory models.
* :mod:`~edgeseq.importers.mambapy` -- ``mambapy`` models in memory.

Each importer returns a :class:`~edgeseq.models.mamba.MambaModel` whose outputs equal the source model's; from
there, ``edgeseq.convert``, ``export`` and ``open`` work as for any other model.
"""

from edgeseq.importers.huggingface import from_huggingface
from edgeseq.importers.mambapy import from_mambapy

__all__ = ["from_huggingface", "from_mambapy"]

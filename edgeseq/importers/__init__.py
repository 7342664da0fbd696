"""Importers: trained models from other libraries, rewritten as edgeseq families.

* :mod:`~edgeseq.importers.huggingface` -- ``transformers`` Mamba / Mamba-2 checkpoints (``save_pretrained``
  directories, loaded from safetensors only) and in-memory models.
* :mod:`~edgeseq.importers.mambapy` -- ``mambapy`` models in memory.
* :mod:`~edgeseq.importers.continual_inference` -- ``continual-inference`` (``co``) networks, as an
  :class:`~edgeseq.models.continual.OfflineModel` of plain ``torch.nn`` layers.

Each importer returns a :class:`~edgeseq.models.mamba.MambaModel` whose outputs equal the source model's; from
there, ``edgeseq.convert``, ``export`` and ``open`` work as for any other model.
"""

from edgeseq.importers.huggingface import from_huggingface
from edgeseq.importers.continual_inference import from_continual
from edgeseq.importers.mambapy import from_mambapy

__all__ = ["from_continual", "from_huggingface", "from_mambapy"]

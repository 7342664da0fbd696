"""Exporters: one module per target, registered in ``EXPORTERS``; :func:`export` validates every artifact."""

from edgeseq.exporters.base import DEFAULT_TOLERANCE, EXPORTERS, Artifact, Exporter, FlatStep, export, register_exporter
from edgeseq.exporters import executorch as _executorch  # noqa: F401  (registers "executorch")
from edgeseq.exporters import onnx as _onnx  # noqa: F401  (registers "onnx")

__all__ = ["DEFAULT_TOLERANCE", "EXPORTERS", "Artifact", "Exporter", "FlatStep", "export", "register_exporter"]

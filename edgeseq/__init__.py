"""edgeseq: ship trained recurrent-form sequence models to the edge as constant-memory step functions.

Public API (see docs/api.md)::

    model = edgeseq.build("rnn", d_in=12, d_out=9, task="classify")
    step = edgeseq.convert(model)                 # StepModule: y_t, state = step(x_t, state)
    report = edgeseq.check_parity(model, step, x)  # x: (batch, T, d_in)
    art = edgeseq.export(step, "out/lstm", target="onnx")
    sess = edgeseq.open(art.path); y_t = sess.push(x_t)
"""

from edgeseq._version import __version__
from edgeseq import models as _models  # noqa: F401  (registers the families)
from edgeseq.checkpoint import load, save
from edgeseq.convert import convert, register_converter
from edgeseq.errors import EdgeseqError
from edgeseq.families import FAMILIES, build
from edgeseq.parity import ParityReport, check_parity
from edgeseq.step import StateSpec, StateTensor, StepModule
from edgeseq.exporters import Artifact, export
from edgeseq.runtimes import StreamPool, StreamSession, StreamState, open
from edgeseq.importers import from_continual, from_huggingface, from_mambapy

__all__ = [
    "__version__", "Artifact", "EdgeseqError", "FAMILIES", "ParityReport", "StateSpec", "StateTensor", "StepModule",
    "StreamPool", "StreamSession", "StreamState", "build", "check_parity", "convert", "export", "from_continual", "from_huggingface", "from_mambapy",
    "load", "open",
    "register_converter", "save",
]

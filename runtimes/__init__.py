"""Runtimes: one module per runtime, registered in ``RUNTIMES``; :func:`open` returns a :class:`StreamSession`."""

from edgeseq.runtimes.base import RUNTIMES, Runtime, open, register_runtime
from edgeseq.runtimes.session import StreamSession, StreamState
from edgeseq.runtimes.pool import StreamPool
from edgeseq.runtimes import eager as _eager  # noqa: F401  (registers "torch")
from edgeseq.runtimes import et as _et  # noqa: F401  (registers "executorch")
from edgeseq.runtimes import inproc as _inproc  # noqa: F401  (registers "native")
from edgeseq.runtimes import ort as _ort  # noqa: F401  (registers "onnxruntime")

__all__ = ["RUNTIMES", "Runtime", "StreamPool", "StreamSession", "StreamState", "open", "register_runtime"]

"""Stream operations: what each time-mixing operation of a traced graph becomes in the step, one module per kind.

- :mod:`~edgeseq.graph.ops.base`: the vocabulary every kind uses -- :class:`Timing` (at step n a value holds the
  model's frame ``n - delay``; its first real frame arrives at step ``first``; a pending left ``pad`` waits for the
  convolution that reads it), :class:`GraphOp`, :class:`Flat`, the builders' registry :data:`STREAM_OPS`
  (looked up by module type, function or method name; :func:`register_stream_op` adds one) and refusals;
- :mod:`~edgeseq.graph.ops.timeshift`: delay lines, padding and slices along time;
- :mod:`~edgeseq.graph.ops.conv`: convolutions along time as ring buffers;
- :mod:`~edgeseq.graph.ops.pool`: average and max pooling along time, the same;
- :mod:`~edgeseq.graph.ops.leaf`: sub-modules with a registered converter, run as its step;
- :mod:`~edgeseq.graph.ops.running`: running reductions and counters along time.

The kinds of other modules register themselves the same way: log-space scans (:mod:`edgeseq.graph.scans`),
windowed attention (:mod:`edgeseq.graph.attention`), rolled loops (:mod:`edgeseq.graph.loops`), ATen forms of all
of these (:mod:`edgeseq.graph.aten`).
"""

from edgeseq.graph.ops.base import (  # noqa: F401
    STREAM_OPS, Build, BuildCtx, Flat, GraphOp, Identity, Pair, StreamRefusal, Timing, _frame, _timed, align,
    find_builder, full, held, no_pending_pad, on_phase, refuse, register_stream_op, windowed,
)
from edgeseq.graph.ops.conv import ConvOp, ConvSpec, _conv, _conv_function, _conv_module  # noqa: F401
from edgeseq.graph.ops.pool import PoolOp  # noqa: F401
from edgeseq.graph.ops.leaf import LeafStepOp, _leaf, leaf_module  # noqa: F401
from edgeseq.graph.ops.running import RUNNING, CounterOp, RunningOp, _arange, _logaddexp, _running  # noqa: F401
from edgeseq.graph.ops.timeshift import (  # noqa: F401
    DelayOp, _fpad, _getitem, _pad_module, _pad_timing, _time_pad, _time_slice,
)

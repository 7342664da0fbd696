"""``StepArena``: where a session's frame, output and state live between runtime calls, for the bound fast path.

Two float32 buffers ("sides"), each laid out as ``[x | y | state 0 | state 1 | ...]`` (every region starting on a
64-byte boundary, :data:`TAIL_BYTES` of zeros after the last one). The side ``cur`` holds the state a stream has
now; one step reads it, writes the frame, the output and the next state into the other side, and the session
flips ``cur`` once the step is accepted. So:

- a runtime bound to the arena (onnxruntime's I/O binding, ExecuTorch's inputs as tensors on it) reads and writes
  these addresses in place: no feed dictionary, no output arrays allocated per call;
- the frame, the output and the next state of one step are one dense buffer, whose finiteness is one sum (a dot
  with ones: NaN and Inf propagate through it), instead of one reduction per array;
- a refused step leaves the side ``cur``, the state before it, untouched.

Only for models whose output and state are all float32 (the check is on float values); other models keep the
per-array path.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

# XNNPACK reads up to 16 bytes past an input (XNN_EXTRA_BYTES in xnnpack.h): every region has at least this much of
# the buffer after it (the regions after it, or the zeros at the end). Same figure as runtimes/et.py's TAIL_BYTES.
TAIL_BYTES = 64
_ALIGN = 16  # floats: 64 bytes

StepFn = Callable[[], None]


def _round_up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class StepArena:
    """Two sides of ``[x | y | state...]`` float32 regions for ``batch`` streams (see the module docstring)."""

    def __init__(self, x_shape: tuple[int, ...], y_shape: tuple[int, ...], state_shapes: Sequence[tuple[int, ...]],
                 x_dtype=np.float32):
        shapes = [tuple(x_shape), tuple(y_shape), *(tuple(s) for s in state_shapes)]
        # the frame of a language model is int64 token ids: two float32 slots each, viewed as int64 (an id below
        # 2**23 reads as a tiny finite float in the side's sum; the ids are range-checked before they are written)
        wide = np.dtype(x_dtype).itemsize // 4
        sizes = [math.prod(shapes[0]) * wide, *(math.prod(s) for s in shapes[1:])]
        offsets, at = [], 0
        for n in sizes:
            offsets.append(at)
            at += _round_up(n)
        total = at + TAIL_BYTES // 4
        self.sides = (np.zeros(total, np.float32), np.zeros(total, np.float32))
        views = [[buf[o:o + n] for o, n in zip(offsets, sizes)] for buf in self.sides]
        views = [[v[0].view(x_dtype).reshape(shapes[0]), *(a.reshape(s) for a, s in zip(v[1:], shapes[1:]))]
                 for v in views]
        self.x = (views[0][0], views[1][0])
        self.y = (views[0][1], views[1][1])
        self.state = (tuple(views[0][2:]), tuple(views[1][2:]))
        # every state region with the padding between them, as one flat view per side (one copy moves the state)
        self.state_block = tuple(buf[offsets[2]:at] if len(offsets) > 2 else buf[:0] for buf in self.sides)

    @staticmethod
    def fits(y_dtype, state_dtypes: Sequence) -> bool:
        """Whether a model with these output and state dtypes can live in an arena (all float32)."""
        return all(np.dtype(d) == np.float32 for d in (y_dtype, *state_dtypes))

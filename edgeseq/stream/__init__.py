"""The vocabulary of stream layers: ring buffers, delay lines and window layers with explicit state.

Both converters that rewrite time-mixing layers emit these, and nothing else does the same rewrite: the continual
family's (:mod:`edgeseq.models.continual_step`, ``nn.Sequential`` / ``OfflineModel`` stacks) and the graph
converter (:mod:`edgeseq.graph`, any traced model).
"""

from edgeseq.stream.base import (
    LOWEST, Affine, BranchesStep, Buffered, Chain, Ctx, DelayLine, Folded, FrameLayerNorm, Pending, Pointwise,
    StreamLayer, channels_last, dilated_frames, fresh_mask, prefixed,
)
from edgeseq.stream.window import ConvStep, PoolStep, Window

__all__ = ["LOWEST", "Affine", "BranchesStep", "Buffered", "Chain", "ConvStep", "Ctx", "DelayLine", "Folded",
           "FrameLayerNorm", "Pending", "Pointwise", "PoolStep", "StreamLayer", "Window", "channels_last",
           "dilated_frames", "fresh_mask", "prefixed"]

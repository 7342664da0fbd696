"""The graph converter: any causal PyTorch sequence model written with standard layers -> a step function.

``edgeseq.convert(model, example=x)`` reaches it for a model without a registered converter; see
docs/own-models.md for what it supports and what it refuses.
"""

from edgeseq.graph.ops import STREAM_OPS, StreamRefusal, register_stream_op
from edgeseq.graph.step import GraphStep, convert_graph

__all__ = ["STREAM_OPS", "GraphStep", "StreamRefusal", "convert_graph", "register_stream_op"]

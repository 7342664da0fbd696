"""Quantization and pruning (``quantize_``, ``prune_``, state precision policy).

Not built yet: this package is reserved by the layout and filled by the compression issue. Nothing here
is called by the rest of edgeseq.
"""

"""Device catalog, profiler, estimator and reports.

Not built yet: this package is reserved by the layout and filled by the devices/profiling issue. Nothing
here is called by the rest of edgeseq.
"""

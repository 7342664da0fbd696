"""Devices and profiling: the device catalog, measured streaming profiles, per-device estimates, reports.

- :mod:`~edgeseq.devices.catalog`: one TOML per device (``catalog/``; more from ``EDGESEQ_DEVICES`` folders)
- :mod:`~edgeseq.devices.host`: the host's bandwidth and per-core peak, measured
- :mod:`~edgeseq.devices.profiler`: latency, load, memory, throughput and parity of one artifact, measured here
- :mod:`~edgeseq.devices.opprof`: per-operator breakdowns (ExecuTorch ETDump, onnxruntime profiling)
- :mod:`~edgeseq.devices.estimate`: roofline-style estimates for the devices it does not run on
- :mod:`~edgeseq.devices.report` / :mod:`~edgeseq.devices.html`: report.json / report.md / report.html

Nothing here is imported by ``import edgeseq``; ``edgeseq profile`` and ``edgeseq devices`` use it.
"""

from edgeseq.devices.catalog import Device, get_device, load_catalog
from edgeseq.devices.profiler import ProfileConfig, profile

__all__ = ["Device", "ProfileConfig", "get_device", "load_catalog", "profile"]

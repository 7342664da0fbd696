"""Per-device estimates: a roofline-style bound, calibrated against the measured host. Always an *estimate*.

For one step of one stream (edgeseq's runtimes run one thread per stream, so a CPU's peak is one core's):

- bytes moved per step ``B`` = weights (the artifact's file size, an upper bound of its weight bytes)
  + state read and written (2 x state bytes per stream) + input and output;
- FLOPs per step ``F`` from the manifest's ``cost`` (counted from the graph);
- the roofline bound on a device ``bound = max(B / bandwidth, F / peak[precision])``, with the peak of the
  compute unit the device runs the runtime on (catalog ``[runtimes.NAME] unit``) at the precision the
  quantization scheme computes its matrix products in (``Scheme.peak_precision``; float32 otherwise);
- per-call work (runtime dispatch, small kernels, bindings) that scales with one core's speed: ``speed`` = the
  core's float32 peak.

The host is measured (:mod:`edgeseq.devices.host`), so its step time ``t_host`` (the profile's p50) is known and
a device's estimate is::

    t_device = t_host x max(bound_device / bound_host, speed_host / speed_device)

that is, the host's efficiency carried over, and no device estimated faster than its single core allows.
What this ignores, said in every estimate: caches (a small model's weights stay in cache, so its bytes never
reach DRAM), published bandwidths being whole-chip peaks (the host's is a measured single-core copy, so
memory-bound estimates are optimistic), thermal limits, and runtime versions that differ from the host's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeseq.devices.catalog import Device

LABEL = "estimate"
CAVEATS = (
    "roofline bound calibrated on the measured host; ignores caches (a small model's weights stay in cache), "
    "uses the device's published whole-chip DRAM peak against the host's measured single-core copy (memory-bound "
    "estimates are optimistic), and ignores thermal limits and runtime version differences"
)


@dataclass(frozen=True)
class Workload:
    """What one step of one stream moves and computes."""

    weight_bytes: int
    state_bytes: int
    io_bytes: int
    flops: int
    precision: str = "fp32"
    runtime: str = "executorch"

    @property
    def bytes_per_step(self) -> int:
        return self.weight_bytes + 2 * self.state_bytes + self.io_bytes


def precision_of(manifest: dict) -> str:
    """The precision a quantized artifact's matrix products run in (float32 when not quantized)."""
    q = manifest.get("quantization") or {}
    scheme = (q.get("config") or {}).get("scheme")
    if not scheme:
        return "fp32"
    from edgeseq.quant.config import SCHEMES

    return SCHEMES.get(scheme).peak_precision if scheme in SCHEMES else "fp32"


def workload_of(manifest: dict, file_bytes: int) -> Workload:
    ss = manifest["state_spec"]
    io = 0
    for e in (manifest["inputs"][0], manifest["outputs"][0]):
        n = 1
        for d in e["shape"]:
            n *= 1 if d == "batch" else int(d)
        io += n * (8 if e["dtype"] == "int64" else 4)
    return Workload(weight_bytes=int(file_bytes), state_bytes=int(ss["bytes_per_stream"]), io_bytes=io,
                    flops=int((manifest.get("cost") or {}).get("flops_per_step", 0)),
                    precision=precision_of(manifest), runtime=manifest["runtime"]["name"])


def _peak(device: Device, unit: str, precision: str) -> tuple[float | None, str]:
    p = device.peak_gflops(unit, precision)
    if p is None and precision != "fp32":
        return device.peak_gflops(unit, "fp32"), "fp32"
    return p, precision


def bound_s(device: Device, w: Workload, unit: str) -> dict[str, Any]:
    """The roofline bound of one step on ``device``'s ``unit``: seconds, and which side limits it."""
    peak, used = _peak(device, unit, w.precision)
    t_mem = w.bytes_per_step / (device.bandwidth_gbs * 1e9) if device.bandwidth_gbs else None
    t_flop = w.flops / (peak * 1e9) if peak else None
    parts = {k: v for k, v in (("memory", t_mem), ("compute", t_flop)) if v is not None}
    if not parts:
        return {"seconds": None, "limited_by": None, "peak_gflops": peak, "precision_used": used}
    side = max(parts, key=parts.get)
    return {"seconds": parts[side], "limited_by": side, "memory_s": t_mem, "compute_s": t_flop,
            "peak_gflops": peak, "precision_used": used}


def estimate(device: Device, host: Device, w: Workload, host_seconds: float, *, memory_bytes: int = 0) -> dict[str, Any]:
    """Estimated p50 step time of workload ``w`` on ``device`` from the host's measured ``host_seconds``.

    ``memory_bytes``: what one stream needs resident (weights + planned arena + state), compared with the
    device's memory. Returns a dict labelled ``"estimate"``; ``available`` is False (with ``reason``) when the
    device does not run the runtime or lacks the figures."""
    out: dict[str, Any] = {"device": device.name, "title": device.title, "label": LABEL, "runtime": w.runtime,
                           "precision": w.precision}
    unit = device.unit_for(w.runtime)
    if unit is None:
        return {**out, "available": False,
                "reason": f"{device.title} lists no {w.runtime} runtime (catalog: {', '.join(device.runtimes) or 'none'})"}
    host_unit = host.unit_for(w.runtime) or "cpu"
    b_dev, b_host = bound_s(device, w, unit), bound_s(host, w, host_unit)
    speed_dev, speed_host = device.peak_gflops(unit, "fp32"), host.peak_gflops(host_unit, "fp32")
    ratios = {}
    if b_dev["seconds"] and b_host["seconds"]:
        ratios["roofline " + b_dev["limited_by"]] = b_dev["seconds"] / b_host["seconds"]
    if unit == "cpu" and speed_dev and speed_host:
        ratios["core speed"] = speed_host / speed_dev
    if not ratios:
        return {**out, "available": False, "unit": unit,
                "reason": f"{device.title}: no bandwidth or {w.precision}/fp32 peak for unit {unit} in the catalog"}
    limit = max(ratios, key=ratios.get)
    est = host_seconds * ratios[limit]
    notes = [CAVEATS]
    if not device.bandwidth_gbs:
        notes.append("no published DRAM bandwidth: compute and core speed only")
    if b_dev["precision_used"] != w.precision:
        notes.append(f"no {w.precision} peak listed for {unit}: float32 peak used")
    mem_gb = memory_bytes / 1e9
    return {
        **out, "available": True, "unit": unit, "p50_us": est * 1e6, "steps_per_s": 1.0 / est if est > 0 else None,
        "limited_by": limit, "ratio_to_host": ratios[limit], "ratios": ratios,
        "bound_us": None if b_dev["seconds"] is None else b_dev["seconds"] * 1e6,
        "host_bound_us": None if b_host["seconds"] is None else b_host["seconds"] * 1e6,
        "host_efficiency": (b_host["seconds"] / host_seconds) if b_host["seconds"] else None,
        "bytes_per_step": w.bytes_per_step, "flops_per_step": w.flops, "peak_gflops": b_dev["peak_gflops"],
        "bandwidth_gbs": device.bandwidth_gbs, "memory_bytes": memory_bytes,
        "fits_in_memory": (mem_gb < device.memory_gb) if device.memory_gb else None, "notes": notes,
    }

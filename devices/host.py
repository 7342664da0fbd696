"""Measure the host: what the catalog's ``host`` entry is filled with at profile time.

- DRAM bandwidth: copying a 64 MiB float32 buffer (bytes read + bytes written per second, best of 5), a
  STREAM-copy-like figure; caches are far smaller than the buffer.
- Peak per core: clock x FLOPs per cycle from ``/proc/cpuinfo`` (the kind of figure the catalog gives for devices),
  else what a single-thread float32 matrix product reaches (512 x 512 x 512, best of 5; always reported as
  ``core_fp32_gflops_achieved``). fp16 and int8
  peaks are not measured: x86 CPUs without AVX512-FP16 compute fp16 in float32 (ratio 1), and int8 dot
  products (VPMADDUBSW/VNNI) give about twice the float32 FMA rate (ratio 2); both ratios are assumptions,
  written into every report.
- Memory and CPU model from ``/proc/meminfo`` and ``/proc/cpuinfo`` (Linux), else the platform module.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import numpy as np

from edgeseq.devices.catalog import Cpu, Device

PRECISION_RATIO = {"fp32": 1.0, "fp16": 1.0, "int8": 2.0}


def measure_bandwidth_gbs(mib: int = 64, repeats: int = 5) -> float:
    a = np.ones(mib * (1 << 20) // 4, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def measure_core_gflops(n: int = 512, repeats: int = 5) -> float:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def theoretical_core_gflops(cpuinfo: str | None = None) -> tuple[float, str] | None:
    """One core's float32 peak from /proc/cpuinfo: clock x FLOPs per cycle of its widest FMA (two FMA units assumed:
    AVX-512 64, AVX2+FMA 32, Arm Advanced SIMD 16), the same kind of figure the catalog gives for devices."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    text = cpuinfo
    mhz, flags = None, set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "cpu MHz" and mhz is None:
            mhz = float(val)
        elif key in ("flags", "Features") and not flags:
            flags = set(val.split())
    if not mhz:
        return None
    for flag, fpc in (("avx512f", 64), ("fma", 32), ("asimd", 16)):
        if flag in flags and (flag != "fma" or "avx2" in flags):
            return mhz / 1e3 * fpc, f"{mhz / 1e3:.2f} GHz x {fpc} fp32 FLOPs/cycle ({flag}, two FMA units assumed)"
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return 0.0


def measured_host(template: Device) -> tuple[Device, dict]:
    """The catalog's ``host`` entry with measured figures, and the raw measurements for the report."""
    bw = measure_bandwidth_gbs()
    gflops = measure_core_gflops()
    theory = theoretical_core_gflops()
    peak, peak_how = theory if theory else (gflops, "measured matmul (no clock/FMA width found in /proc/cpuinfo)")
    cpu = Cpu(cores=os.cpu_count() or 1, core=_cpu_model(), clock_ghz=1.0,
              flops_per_cycle={p: peak * r for p, r in PRECISION_RATIO.items()})  # "clock 1 GHz" x GFLOP/cycle = GFLOP/s
    dev = dataclasses.replace(template, cpu=cpu, bandwidth_gbs=bw, memory_gb=_memory_gb(), title=f"this machine ({cpu.core})")
    raw = {"bandwidth_gbs": round(bw, 2), "core_fp32_gflops": round(peak, 2), "core_fp32_peak": peak_how,
           "core_fp32_gflops_achieved": round(gflops, 2), "cpu": cpu.core, "cores": cpu.cores,
           "memory_gb": dev.memory_gb, "precision_ratio_assumed": dict(PRECISION_RATIO),
           "method": "bandwidth: 64 MiB float32 copy, (read+write) bytes/s, best of 5; achieved: single-thread float32 "
                     "512x512x512 matmul (torch), best of 5"}
    return dev, raw

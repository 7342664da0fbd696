"""The per-device estimator on known numbers (hand-computed roofline bounds)."""

import pytest

from edgeseq.devices.catalog import Cpu, Device
from edgeseq.devices.estimate import LABEL, Workload, estimate, precision_of

def _dev(name, bw, gflops_fp32, int8=None, runtimes=("executorch",)):
    fpc = {"fp32": gflops_fp32}
    if int8:
        fpc["int8"] = int8
    return Device(name=name, title=name, memory_gb=1.0, cpu=Cpu(1, "c", 1.0, fpc),
                  runtimes={r: {"unit": "cpu"} for r in runtimes}, bandwidth_gbs=bw)

HOST = _dev("host", bw=20.0, gflops_fp32=40.0, int8=80.0)

def test_memory_bound_roofline_ratio():
    # 1 MB per step (weights 999,000 + 2 x 400 state + 200 io), 1 MFLOP per step
    w = Workload(weight_bytes=999_000, state_bytes=400, io_bytes=200, flops=1_000_000)
    assert w.bytes_per_step == 1_000_000
    dev = _dev("d", bw=5.0, gflops_fp32=40.0)  # same core speed, 4x less bandwidth
    e = estimate(dev, HOST, w, host_seconds=100e-6, memory_bytes=10_000)
    # host bound max(1e6/20e9 = 50 µs, 1e6/40e9 = 25 µs) = 50 µs; device max(200 µs, 25 µs) = 200 µs -> 4x
    assert e["host_bound_us"] == pytest.approx(50.0) and e["bound_us"] == pytest.approx(200.0)
    assert e["limited_by"] == "roofline memory" and e["p50_us"] == pytest.approx(400.0)
    assert e["host_efficiency"] == pytest.approx(0.5)
    assert e["label"] == LABEL == "estimate" and e["fits_in_memory"] is True

def test_compute_bound_and_core_speed_limit():
    w = Workload(weight_bytes=1_000, state_bytes=0, io_bytes=0, flops=4_000_000)
    fast_bw_slow_core = _dev("d", bw=1000.0, gflops_fp32=10.0)
    e = estimate(fast_bw_slow_core, HOST, w, host_seconds=200e-6)
    # host compute 100 µs, device compute 400 µs -> 4x; core speed 40/10 = 4x as well
    assert e["ratios"]["roofline compute"] == pytest.approx(4.0) and e["ratios"]["core speed"] == pytest.approx(4.0)
    assert e["p50_us"] == pytest.approx(800.0)
    # a device with more bandwidth but the same core is never estimated faster than the host's per-call work
    tiny = Workload(weight_bytes=100_000, state_bytes=0, io_bytes=0, flops=10)
    e = estimate(_dev("d", bw=200.0, gflops_fp32=20.0), HOST, tiny, host_seconds=30e-6)
    assert e["limited_by"] == "core speed" and e["p50_us"] == pytest.approx(60.0)

def test_int8_uses_the_int8_peak_and_falls_back_with_a_note():
    w = Workload(weight_bytes=0, state_bytes=0, io_bytes=0, flops=8_000_000, precision="int8")
    e = estimate(_dev("d", bw=20.0, gflops_fp32=40.0, int8=160.0), HOST, w, host_seconds=100e-6)
    # host int8 80 GFLOP/s -> 100 µs; device 160 -> 50 µs: 0.5x; core speed 1x wins
    assert e["ratios"]["roofline compute"] == pytest.approx(0.5) and e["p50_us"] == pytest.approx(100.0)
    e = estimate(_dev("d", bw=20.0, gflops_fp32=10.0), HOST, w, host_seconds=100e-6)
    assert any("float32 peak used" in n for n in e["notes"])

def test_unavailable_runtime_and_missing_bandwidth():
    w = Workload(weight_bytes=1000, state_bytes=10, io_bytes=10, flops=1000, runtime="onnxruntime")
    e = estimate(_dev("d", bw=10.0, gflops_fp32=10.0), HOST, w, host_seconds=1e-5)
    assert e["available"] is False and "lists no onnxruntime" in e["reason"]
    nobw = _dev("p", bw=None, gflops_fp32=20.0, runtimes=("onnxruntime",))
    e = estimate(nobw, HOST, w, host_seconds=1e-5)
    assert e["available"] and any("no published DRAM bandwidth" in n for n in e["notes"])

def test_precision_follows_the_quantization_scheme():
    assert precision_of({}) == "fp32"
    assert precision_of({"quantization": {"config": {"scheme": "int8-dynamic"}}}) == "int8"
    assert precision_of({"quantization": {"config": {"scheme": "fp16"}}}) == "fp16"
    assert precision_of({"quantization": {"config": {"scheme": "int4-weight-only"}}}) == "fp32"


def test_host_peak_from_cpuinfo():
    from edgeseq.devices.host import theoretical_core_gflops

    gf, how = theoretical_core_gflops("processor : 0\ncpu MHz : 2500.000\nflags : fpu sse2 avx avx2 fma\n")
    assert gf == pytest.approx(2.5 * 32) and "fma" in how
    gf, _ = theoretical_core_gflops("cpu MHz : 2000\nflags : avx2 fma avx512f\n")
    assert gf == pytest.approx(2.0 * 64)
    assert theoretical_core_gflops("cpu MHz : 2000\nflags : sse2\n") is None  # unknown width: the measured matmul is used
    assert theoretical_core_gflops("processor : 0\nFeatures : fp asimd\n") is None  # no clock listed (most Arm kernels)

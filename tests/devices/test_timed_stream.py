"""The profiler's timed loop: one sample per push, each covering the push, memory reads left out of the samples."""

import time

import numpy as np

from edgeseq.devices import memory, profiler


def busy(us):
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass


def test_samples_cover_each_push_and_exclude_memory_reads(monkeypatch):
    real = memory.rss_bytes

    def slow_rss():  # a memory read that takes 5 ms: it must not land in any sample
        busy(5000)
        return real()

    monkeypatch.setattr(profiler.mem, "rss_bytes", slow_rss)
    xs = np.zeros((200, 1), dtype=np.float32)
    samples, points = profiler.timed_stream(lambda x: busy(200), xs, memory_points=10)
    us = samples / 1e3
    assert len(us) == 200 and [p[0] for p in points] == list(range(0, 201, 20))
    assert us.min() >= 200.0  # every sample holds its whole push
    assert us.max() < 5000.0, us.max()  # and none holds a 5 ms memory read
    assert np.median(us) < 400.0


def test_peak_rss_sees_a_64_mib_buffer_and_resets():
    memory.reset_peak()
    base = memory.rss_bytes()
    buf = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    del buf  # freed (munmap): RSS returns near base, the peak keeps it
    assert memory.peak_rss_bytes() >= base + (60 << 20)
    assert memory.rss_bytes() < base + (32 << 20)
    if memory.reset_peak():  # Linux >= 4.0: the peak comes back to the current RSS
        assert memory.peak_rss_bytes() < base + (32 << 20)


def test_more_memory_points_than_steps():
    samples, points = profiler.timed_stream(lambda x: None, np.zeros((5, 1), dtype=np.float32), memory_points=20)
    assert len(samples) == 5 and [p[0] for p in points] == [0, 1, 2, 3, 4, 5]


def test_no_memory_points_still_times_every_step():
    samples, points = profiler.timed_stream(lambda x: busy(50), np.zeros((30, 1), dtype=np.float32), memory_points=0)
    assert len(samples) == 30 and samples.min() >= 50_000 and [p[0] for p in points] == [0, 30]

"""The profiler's timed loop: one sample per push, each covering the push, memory reads left out of the samples.

The loop is driven by a fake clock (``time.perf_counter_ns`` patched): each push and each memory read advance it
by a known amount, so the samples are checked exactly, whatever the load on the machine running the tests."""

import numpy as np

from edgeseq.devices import memory, profiler


class FakeClock:
    def __init__(self):
        self.now = 1_000_000

    def __call__(self):
        return self.now

    def advance(self, ns):
        self.now += ns


def test_samples_cover_each_push_and_exclude_memory_reads(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(profiler.time, "perf_counter_ns", clock)
    real = memory.rss_bytes

    def slow_rss():  # a memory read that takes 5 ms on the fake clock: it must land in no sample
        clock.advance(5_000_000)
        return real()

    monkeypatch.setattr(profiler.mem, "rss_bytes", slow_rss)
    xs = np.arange(200, dtype=np.float32)[:, None]
    pushed = []

    def push(x):  # push i takes 200 + i us
        pushed.append(int(x[0]))
        clock.advance((200 + int(x[0])) * 1000)

    samples, points = profiler.timed_stream(push, xs, memory_points=10)
    assert pushed == list(range(200))  # every frame once, in order
    assert [p[0] for p in points] == list(range(0, 201, 20)) and all(p[1] > 0 for p in points)
    # one sample per push, each exactly its own push: no memory read in any, no push split across two
    np.testing.assert_array_equal(samples, (200 + np.arange(200)) * 1000)


def test_real_clock_gives_one_sample_per_push_without_memory_points():
    """Unpatched: the loop reads the real clock (samples are whole nanoseconds, one per push, monotonic stamps)."""
    samples, points = profiler.timed_stream(lambda x: None, np.zeros((30, 1), dtype=np.float32), memory_points=0)
    assert samples.dtype == np.int64 and len(samples) == 30 and (samples >= 0).all() and [p[0] for p in points] == [0, 30]


def test_peak_rss_sees_a_64_mib_buffer_and_resets():
    memory.reset_peak()
    base = memory.rss_bytes()
    buf = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    del buf  # freed (munmap): RSS returns near base, the peak keeps it
    assert memory.peak_rss_bytes() >= base + (60 << 20)
    assert memory.rss_bytes() < base + (32 << 20)
    if memory.reset_peak():  # Linux >= 4.0: the peak comes back to the current RSS
        assert memory.peak_rss_bytes() < base + (32 << 20)


def test_more_memory_points_than_steps(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(profiler.time, "perf_counter_ns", clock)
    samples, points = profiler.timed_stream(lambda x: clock.advance(7), np.zeros((5, 1), dtype=np.float32), memory_points=20)
    assert list(samples) == [7] * 5 and [p[0] for p in points] == [0, 1, 2, 3, 4, 5]

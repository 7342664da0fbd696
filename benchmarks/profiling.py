"""Profiling overhead: what ``edgeseq profile``'s per-step timing costs against the loop a user streams with.

The profiler times every push in :func:`edgeseq.devices.profiler.timed_segment` (one ``perf_counter_ns`` read
and one list append per push); VmRSS is read between segments, outside every sample. The overhead is measured
as a **paired** comparison: the same stream is cut into blocks of ``K`` real frames, and each block is pushed
once through a bare ``for x in frames: push(x)`` and once through ``timed_segment`` (order alternating), so a
noisy neighbour or a drift in machine speed hits both sides of a pair alike; the overhead is the mean over
blocks of (timed - bare) / bare, with its standard error, and an A/A row (bare against bare) shows what this
machine's noise gives with the same design, and a clock-only loop shows the floor that any per-step timing pays. Also printed: the cost of one clock read in a tight loop, and the
wall-clock cost of the memory reads per stream (outside the samples, so not in the reported latencies).

Target (issue 7): < 2% of the step time.

Run: python benchmarks/profiling.py [--quick]   (writes a section of docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_section  # noqa: E402

MODELS = {"LSTM 1x64": dict(d_hidden=64, num_layers=1), "LSTM 2x256": dict(d_hidden=256, num_layers=2)}
K = 50  # frames per block
MEMORY_POINTS, PROFILE_STEPS = 20, 10_000  # edgeseq profile's defaults


def paired(push, blocks: list[list], segment) -> dict:
    """Each block through a bare loop, ``timed_segment``, a loop that only reads the clock per push, and the bare
    loop again (an A/A pair), order rotating per block; returns µs/step medians and the per-block relative differences' mean and standard error."""
    clock = time.perf_counter_ns

    def bare(frames):
        for x in frames:
            push(x)

    def timed(frames):
        segment(push, frames, [])

    def clock_only(frames):  # the floor: a clock read per push, nothing kept
        for x in frames:
            push(x)
            clock()

    runs = {"bare": [], "timed": [], "clock": [], "again": []}
    fns = [("bare", bare), ("timed", timed), ("clock", clock_only), ("again", bare)]
    for b, frames in enumerate(blocks):
        k = b % len(fns)
        for name, fn in fns[k:] + fns[:k]:
            t0 = clock()
            fn(frames)
            runs[name].append((clock() - t0) / len(frames) / 1e3)
    base = np.asarray(runs["bare"])
    out = {"bare": float(np.median(base))}
    for name in ("timed", "clock", "again"):
        d = (np.asarray(runs[name]) - base) / base
        out[name] = float(np.median(runs[name]))
        out[name + "_diff"] = float(d.mean())
        out[name + "_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks (a smoke run)")
    args = ap.parse_args()
    n_blocks = 60 if args.quick else 600
    warnings.simplefilter("ignore")
    import edgeseq
    from edgeseq.data import load_dataset
    from edgeseq.devices import memory as mem
    from edgeseq.devices.profiler import timed_segment
    from edgeseq.pipeline import real_stream

    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(100_000):
        clock()
    clock_ns = (clock() - t0) / 100_000
    t0 = clock()
    for _ in range(200):
        mem.rss_bytes()
    rss_us = (clock() - t0) / 200 / 1e3
    print(f"one perf_counter_ns read: {clock_ns:.0f} ns; one VmRSS read: {rss_us:.1f} µs", flush=True)

    ds = load_dataset("japanese-vowels")
    stream = list(real_stream(ds.test, K * n_blocks))
    blocks = [stream[i: i + K] for i in range(0, len(stream), K)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in MODELS.items():
            torch.manual_seed(0)
            model = edgeseq.build("rnn", d_in=ds.d_in, d_out=ds.d_out, task="classify", **cfg)
            step = edgeseq.convert(model)
            for target in ("executorch", "onnx"):
                art = edgeseq.export(step, Path(d) / name.replace(" ", "_"), target=target, steps=200)
                sess = edgeseq.open(art.path)
                for x in stream[:300]:
                    sess.push(x)
                r = paired(sess.push, blocks, timed_segment)
                r.update(model=name, runtime=art.manifest["runtime"]["name"])
                r["memory_share"] = MEMORY_POINTS * rss_us / (PROFILE_STEPS * r["bare"])
                rows.append(r)
                print(f"{name:11s} {r['runtime']:12s} bare {r['bare']:7.1f} µs/step, timed {r['timed']:7.1f}: "
                      f"overhead {r['timed_diff']:+.2%} ± {r['timed_se']:.2%} (clock only {r['clock_diff']:+.2%}; A/A {r['again_diff']:+.2%} ± "
                      f"{r['again_se']:.2%})", flush=True)
    md = render(rows, clock_ns, rss_us, n_blocks, args.quick)
    print(md)
    if not args.quick:
        write_section(ROOT / "docs" / "benchmarks.md", "profiling", md)


def render(rows, clock_ns: float, rss_us: float, n_blocks: int, quick: bool) -> str:
    lines = ["## Profiling overhead (benchmarks/profiling.py)", "",
             "The profiler's timed loop (`timed_segment`: one `perf_counter_ns` read and one list append per push) "
             f"against the bare loop a user streams with (`for x in frames: push(x)`), paired: {n_blocks} blocks of "
             f"{K} real JapaneseVowels frames, each block pushed through both (order rotating), overhead = mean over "
             "blocks of (timed - bare) / bare, ± its standard error; the A/A column is the bare loop against itself "
             f"with the same design{' (quick run)' if quick else ''}. Target: < 2% of the step time.", "",
             "| model | runtime | bare µs/step | timed µs/step | overhead | clock read only | A/A | memory reads (wall, outside samples) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['bare']:.1f} | {r['timed']:.1f} | "
                     f"{r['timed_diff']:+.2%} ± {r['timed_se']:.2%} | {r['clock_diff']:+.2%} ± {r['clock_se']:.2%} | {r['again_diff']:+.2%} ± {r['again_se']:.2%} | "
                     f"{r['memory_share']:.2%} |")
    worst = max(rows, key=lambda r: r["timed_diff"] + 2 * r["timed_se"])
    hi = worst["timed_diff"] + 2 * worst["timed_se"]
    lines += ["",
              f"Worst case: {worst['model']} on {worst['runtime']}, {worst['timed_diff']:+.2%} (upper end of a 2-SE "
              f"interval {hi:+.2%}): target < 2% {'met' if hi < 0.02 else 'NOT met'}.",
              "Most of it is the clock read itself (the clock-only column: a loop that reads the clock after each push "
              f"and keeps nothing): one `perf_counter_ns` costs {clock_ns:.0f} ns in a tight loop on this "
              "machine (a Firecracker VM, where reading the TSC is slow; tens of ns on bare metal), and more between "
              "real steps, whose work has evicted what the read needs. Any per-step profiler pays one read per step.",
              f"Memory: one VmRSS read costs {rss_us:.0f} µs; `edgeseq profile` makes {MEMORY_POINTS} per "
              f"{PROFILE_STEPS:,}-step stream between segments, so they lengthen the run by the share shown and are "
              "in no latency sample. The per-operator pass (ETDump / onnxruntime profiling) is a separate pass and is "
              "not in the latency samples either."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

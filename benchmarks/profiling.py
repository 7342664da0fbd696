"""Profiling overhead: what ``edgeseq profile``'s per-step timing and memory reads cost against a bare loop.

The profiler's timed loop is :func:`edgeseq.devices.profiler.timed_stream` (one ``perf_counter_ns`` read per push
into a list, VmRSS read 20 times per stream). Two measurements, both with rounds in ABBA order (a noisy neighbour
or a drift in machine speed slows both sides alike), median over rounds:

1. **instrumentation cost per step**: ``timed_stream`` vs a bare loop around a push that does nothing, over a
   10,000-step stream (the profile's default length): the time the profiler adds to every step, in µs, free of
   the runtime's noise; divided by each artifact's step time it is the overhead the target is about;
2. **end to end**: the same two loops over real sessions (ExecuTorch, onnxruntime; LSTMs 1x64 and 2x256) on real
   JapaneseVowels frames, with an A/A row (bare vs bare) that shows this machine's noise at that size.

Target (issue 7): < 2% of the step time.

Run: python benchmarks/profiling.py [--quick]   (writes a section of docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_section  # noqa: E402

MODELS = {"LSTM 1x64": dict(d_hidden=64, num_layers=1), "LSTM 2x256": dict(d_hidden=256, num_layers=2)}


def ab(fa, fb, rounds: int) -> tuple[float, float, float]:
    """Median µs/step of ``fa`` and ``fb`` over ABBA rounds, and the median of the per-round (b - a) / a."""
    a, b = [], []
    for r in range(rounds):
        for fn in ((fa, fb) if r % 2 == 0 else (fb, fa)):
            (a if fn is fa else b).append(fn())
    return statistics.median(a), statistics.median(b), statistics.median((y - x) / x for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    args = ap.parse_args()
    steps, rounds = (1000, 3) if args.quick else (5000, 11)
    warnings.simplefilter("ignore")
    import edgeseq
    from edgeseq.data import load_dataset
    from edgeseq.devices.profiler import timed_stream
    from edgeseq.pipeline import real_stream

    ds = load_dataset("japanese-vowels")
    long = real_stream(ds.test, 10_000)
    xs = long[:steps]

    def noop(x):
        return None

    def loop(push, frames):
        def run():
            t0 = time.perf_counter()
            for i in range(len(frames)):
                push(frames[i])
            return (time.perf_counter() - t0) / len(frames) * 1e6
        return run

    def timed(push, frames):
        def run():
            t0 = time.perf_counter()
            timed_stream(push, frames, 20)
            return (time.perf_counter() - t0) / len(frames) * 1e6
        return run

    b0, t0_, _ = ab(loop(noop, long), timed(noop, long), rounds)
    instr = t0_ - b0
    print(f"instrumentation: bare {b0:.3f} µs/step, timed {t0_:.3f} µs/step: +{instr:.3f} µs per step", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in MODELS.items():
            torch.manual_seed(0)
            model = edgeseq.build("rnn", d_in=ds.d_in, d_out=ds.d_out, task="classify", **cfg)
            step = edgeseq.convert(model)
            for target in ("executorch", "onnx"):
                art = edgeseq.export(step, Path(d) / name.replace(" ", "_"), target=target, steps=200)
                sess = edgeseq.open(art.path)
                for x in xs[:300]:
                    sess.push(x)
                bare, prof, e2e = ab(loop(sess.push, xs), timed(sess.push, xs), rounds)
                _, _, aa = ab(loop(sess.push, xs), loop(sess.push, xs), rounds)
                rows.append((name, art.manifest["runtime"]["name"], bare, prof, e2e, aa, instr / bare))
                print(f"{name:11s} {rows[-1][1]:12s} bare {bare:7.1f} µs/step, profiled {prof:7.1f}: end to end {e2e:+.2%} "
                      f"(A/A noise {aa:+.2%}); instrumentation {instr / bare:.2%} of the step", flush=True)
    md = render(rows, b0, t0_, steps, rounds, args.quick)
    print(md)
    if not args.quick:
        write_section(ROOT / "docs" / "benchmarks.md", "profiling", md)


def render(rows, b0: float, t0: float, steps: int, rounds: int, quick: bool) -> str:
    instr = t0 - b0
    lines = ["## Profiling overhead (benchmarks/profiling.py)", "",
             "The profiler's timed loop (`timed_stream`: one `perf_counter_ns` read per push into a list, VmRSS read 20 "
             f"times per stream) against a bare loop, median of {rounds} ABBA rounds{' (quick run)' if quick else ''}. "
             "Target: < 2% of the step time.", "",
             f"Instrumentation cost, around a push that does nothing, over a 10,000-step stream: bare {b0:.3f} µs/step, "
             f"timed {t0:.3f} µs/step: **{instr:+.3f} µs per step**.", "",
             f"End to end on real sessions ({steps:,} JapaneseVowels frames per round), with an A/A row (the bare loop "
             "against itself) for this machine's noise:", "",
             "| model | runtime | bare µs/step | profiled µs/step | end to end | A/A noise | instrumentation / step |",
             "|---|---|---|---|---|---|---|"]
    for name, rt, b, p, e2e, aa, share in rows:
        lines.append(f"| {name} | {rt} | {b:.1f} | {p:.1f} | {e2e:+.2%} | {aa:+.2%} | {share:.2%} |")
    worst = max(r[-1] for r in rows)
    over = [(name, rt, e2e) for name, rt, b, p, e2e, aa, share in rows if e2e - max(aa, 0.0) >= 0.02]
    lines += ["", f"Instrumentation: at most {worst:.2%} of a step (the smallest step, {min(r[2] for r in rows):.0f} µs): "
                  f"target < 2% {'met' if worst < 0.02 else 'NOT met'}."]
    if over:
        lines.append("End to end, NOT met for " + ", ".join(f"{n} on {rt} ({e:+.2%})" for n, rt, e in over)
                     + ": more than the instrumentation's own cost and beyond the A/A noise, so the timed loop slows "
                       "these small, Python-dominated steps by more than its clock reads (cache effects of the "
                       "sample list are the likely cause; not resolved).")
    else:
        lines.append("End to end, every difference is under 2% beyond the A/A noise.")
    lines.append("The per-operator pass (ETDump / onnxruntime profiling) is a separate pass and is not in the latency "
                 "samples.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

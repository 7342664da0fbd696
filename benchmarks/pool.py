"""StreamPool: N streams in one batched runtime call per step vs N separate sessions (one call each), for an
LSTM 1x256 (input 64) on onnxruntime (dynamic batch) and ExecuTorch (one artifact exported with --batch 1,8,64: a
program per batch size, listed in one manifest), single thread; the same programs on runtime native from Python
(StreamPool(..., runtime="native"): the C runtime's pool); and the native runner's C pool (es_pool_step: the same
programs, no Python) against N streams of es_push on the batch-1 program. Steps/s counts stream-steps (N per
pool step). Writes its section of docs/reliability.md.

Run: python benchmarks/pool.py [--quick] [--no-write] [--no-native]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgeseq  # noqa: E402
from _common import native_bench, native_us, single_thread_quiet, standard_args, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def rate(fn, stream_steps_per_call: int, calls: int, rounds: int) -> float:
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append(stream_steps_per_call * calls / (time.perf_counter() - t0))
    return statistics.median(out)


def native_rows(path: Path, calls: int, rounds: int) -> list[tuple]:
    """The C pool (``edgeseq-run PROGRAM --bench N --pool``) on each batch program of ``path``, against es_push of
    one stream on its batch-1 program (``edgeseq-run --bench N``): stream-steps per second."""
    import json

    from edgeseq import manifest as man
    from edgeseq.runtimes import native

    b = native.build("x86_64")
    data = json.loads(Path(str(path) + ".edgeseq.json").read_text())  # the batch-1 program's manifest
    one = 1e6 / native_us(b, path, calls * 4, rounds)[1]
    rows = []
    for n in (1, 8, 64):
        program, _ = man.select_batch(path, data, n)
        rows.append(("native C", n, n * 1e6 / native_bench(b, program, calls * 4, rounds, "--pool")["pool_step_us"], one))
    return rows


def main() -> None:
    ap = standard_args(__doc__, "fewer calls")
    ap.add_argument("--no-native", action="store_true", help="leave the native runner out (no C++ build)")
    args = ap.parse_args()
    single_thread_quiet()
    calls, rounds = (50, 3) if args.quick else (300, 5)
    torch.manual_seed(0)
    step = edgeseq.convert(edgeseq.build("rnn", d_in=64, d_out=16, d_hidden=256))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {t: edgeseq.export(step, Path(tmp) / "lstm", target=t, steps=100,
                                   more_batches=(8, 64) if t == "executorch" else ()).path for t in ("onnx", "executorch")}
        runs = [("onnx", paths["onnx"], None), ("executorch", paths["executorch"], None)]
        if not args.no_native:  # the same programs, the pool and the sessions on runtime "native" (the C runtime)
            runs.append(("native from Python", paths["executorch"], "native"))
        for target, path, runtime in runs:
            for n in (1, 8, 64):
                pool = edgeseq.StreamPool(path, slots=n, runtime=runtime)
                slots = [pool.join() for _ in range(n)]
                frames = {s: np.random.default_rng(s).standard_normal(64).astype(np.float32) for s in slots}
                sessions = [edgeseq.open(path, runtime=runtime) for _ in range(n)]
                x = np.zeros((1, 64), np.float32)

                def separate():
                    for s in sessions:
                        s.push(x)

                pooled = rate(lambda: pool.step(frames), n, calls, rounds)
                sep = rate(separate, n, max(1, calls // n), rounds)
                rows.append((target, n, pooled, sep))
        if not args.no_native:
            rows += native_rows(Path(paths["executorch"]), calls, rounds)
    lines = ["## Many streams in one call (`benchmarks/pool.py`)", "",
             f"LSTM 1x256 (input 64), 1 thread: stream-steps per second of a `StreamPool` (one batched call per step "
             f"for all N streams) and of N separate sessions (N calls per step), median of {rounds} runs. onnxruntime "
             "takes any batch; the ExecuTorch artifact was exported with `--batch 1,8,64` (three programs, one "
             "manifest) and each pool runs the program of its size. *native from Python*: the same programs, the pool and "
             "the sessions on runtime `native` (`StreamPool(..., runtime=\"native\")`: the C runtime's `es_pool_step`, "
             "one C call a step). *native C*: the C runner on the same programs, "
             "`es_pool_step` of N streams against one stream's `es_push` on the batch-1 program (N streams of it "
             "make N such calls per step), each timed by the runner itself (`edgeseq-run --bench N [--pool]`).",
             "", "| runtime | streams N | pool steps/s | separate sessions steps/s | pool / separate |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {t} | {n} | {p:,.0f} | {s:,.0f} | **{p / s:.1f}x** |" for t, n, p, s in rows]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "reliability.md", "pool", md)


if __name__ == "__main__":
    main()

"""Soak: 1,000,000 steps through onnxruntime and ExecuTorch for an LSTM, an Aaren and a Mamba step at batch 1, and
100,000 steps of 64 pooled streams (onnxruntime): RSS sampled every 10,000 steps, latency percentiles per
100,000-step window, outputs compared at checkpoints with an eager float64 run of the same stream, the state saved
to disk (atomically) every 10,000 steps. Writes its section of docs/reliability.md.

Run: python benchmarks/soak.py [--quick] [--steps N] [--no-write]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgeseq  # noqa: E402
from _common import single_thread_quiet, standard_args, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RSS_EVERY = 10_000


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def models() -> dict:
    torch.manual_seed(0)
    return {"LSTM 1x64": edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=64),
            "Aaren 1x32": edgeseq.build("aaren", d_in=8, d_out=4, d_model=32, n_layers=1),
            "Mamba 1x32": edgeseq.build("mamba", d_in=8, d_out=4, d_model=32, n_layers=1)}


def frames(steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((steps, 1, 8)).astype(np.float32) * 0.5


def float64_checkpoints(model, xs: np.ndarray, every: int) -> dict[int, np.ndarray]:
    """The eager step in float64 over the whole stream; its outputs at every ``every``-th step (and the last)."""
    step = edgeseq.convert(model).double()
    state = step.init_state(1)
    state = tuple(s.double() for s in state)
    out = {}
    with torch.no_grad():
        for t in range(len(xs)):
            y, state = step.step(torch.from_numpy(xs[t]).double(), state)
            if (t + 1) % every == 0 or t == len(xs) - 1:
                out[t] = y.numpy().copy()
    return out


def soak(path: Path, xs: np.ndarray, ref: dict, window: int, state_dir: Path) -> dict:
    sess = edgeseq.open(path)
    tol = sess_tol(path)
    lat = np.ones(len(xs), dtype=np.int64)  # pages touched now: the timing array is not the stream's memory growth
    rss_points, worst, saved = [], 0.0, 0
    clock = time.perf_counter_ns
    for t in range(len(xs)):
        t0 = clock()
        y = sess.push(xs[t])
        lat[t] = clock() - t0
        if t in ref:
            r = ref[t]
            worst = max(worst, float(np.abs(y - r).max() / max(1.0, float(np.abs(r).max()))))
        if (t + 1) % RSS_EVERY == 0:
            rss_points.append(rss())
            sess.state.save(state_dir / "state.npz")  # atomic: written beside, then renamed
            saved += 1
    windows = [lat[i:i + window] / 1e3 for i in range(0, len(xs), window)]
    p99 = [float(np.percentile(w, 99)) for w in windows]
    # the last saved state (at the end of the stream) resumes exactly: 100 more frames through the session that
    # never stopped and through a new session loaded from the file
    more = frames(100, seed=1)
    resumed = edgeseq.open(path)
    resumed.state = edgeseq.StreamState.load(state_dir / "state.npz")
    same = resumed.steps == len(xs) and bool(np.array_equal(resumed.run(more), sess.run(more)))
    return {"steps": len(xs), "rss_first": rss_points[0], "rss_last": rss_points[-1],
            "rss_growth": rss_points[-1] - rss_points[0], "p50": [float(np.percentile(w, 50)) for w in windows],
            "p99": p99, "worst_scaled": worst, "tolerance": tol, "saved": saved, "resumed": same}


def sess_tol(path: Path) -> float:
    import json

    return float(json.loads(Path(f"{path}.edgeseq.json").read_text())["parity"]["tolerance"])


def pool_soak(path: Path, steps: int, window: int) -> dict:
    pool = edgeseq.StreamPool(path, slots=64)
    slots = [pool.join() for _ in range(64)]
    rng = np.random.default_rng(1)
    lat = np.ones(steps, dtype=np.int64)
    rss_points = []
    every = min(RSS_EVERY, max(1, steps // 10))
    for t in range(steps):
        fr = {s: rng.standard_normal(8).astype(np.float32) * 0.5 for s in slots}
        t0 = time.perf_counter_ns()
        ys = pool.step(fr)
        lat[t] = time.perf_counter_ns() - t0
        if not all(np.isfinite(v).all() for v in ys.values()):
            raise SystemExit(f"pool: NaN at step {t}")
        if (t + 1) % every == 0:
            rss_points.append(rss())
    windows = [lat[i:i + window] / 1e3 for i in range(0, steps, window)]
    return {"steps": steps, "rss_growth": rss_points[-1] - rss_points[0],
            "p99": [float(np.percentile(w, 99)) for w in windows], "p50": [float(np.percentile(w, 50)) for w in windows]}


def main() -> None:
    ap = standard_args(__doc__, "20,000 steps (a smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="steps per runtime (default 1,000,000; --quick 20,000)")
    args = ap.parse_args()
    single_thread_quiet()
    steps = args.steps or (20_000 if args.quick else 1_000_000)
    window = max(RSS_EVERY, steps // 10)
    xs = frames(steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, model in models().items():
            ref = float64_checkpoints(model, xs, window)
            step = edgeseq.convert(model)
            for target in ("onnx", "executorch"):
                art = edgeseq.export(step, tmp / f"{name.split()[0]}", target=target, steps=200).path
                r = soak(art, xs, ref, window, tmp)
                rows.append((name, target, r))
                print(name, target, {k: v for k, v in r.items() if k not in ("p50", "p99")}, flush=True)
        lstm = edgeseq.export(edgeseq.convert(models()["LSTM 1x64"]), tmp / "pool", target="onnx", steps=100).path
        pool_steps = steps // 10
        pool = pool_soak(lstm, pool_steps, max(1, pool_steps // 10))
    lines = ["## Soak (`benchmarks/soak.py`)", "",
             f"{steps:,} steps per runtime at batch 1 (frames N(0, 0.25), one thread); RSS every {RSS_EVERY:,} steps; "
             f"latency per {window:,}-step window; outputs at every window's end against the eager step run in float64 "
             "over the same stream (scaled error, beside the artifact's tolerance); the state saved atomically every "
             f"{RSS_EVERY:,} steps, and the last saved state resumed (100 steps equal to an uninterrupted session).", "",
             "| model | runtime | RSS growth | p50 first / last window µs | p99 first / last window µs | p99 last / first | "
             "worst vs float64 (scaled) | tolerance | states saved | resumed exactly |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---|"]
    for name, target, r in rows:
        lines.append(f"| {name} | {target} | {r['rss_growth'] / 1024:,.0f} KiB | {r['p50'][0]:.1f} / {r['p50'][-1]:.1f} | "
                     f"{r['p99'][0]:.1f} / {r['p99'][-1]:.1f} | {r['p99'][-1] / r['p99'][0]:.2f} | {r['worst_scaled']:.1e} | "
                     f"{r['tolerance']:g} | {r['saved']} | {'yes' if r['resumed'] else 'NO'} |")
    lines += ["", f"64 pooled streams (LSTM 1x64, onnxruntime), {pool['steps']:,} pool steps: RSS growth "
                  f"{pool['rss_growth'] / 1024:,.0f} KiB; p50 first / last window {pool['p50'][0]:.0f} / {pool['p50'][-1]:.0f} µs, "
                  f"p99 {pool['p99'][0]:.0f} / {pool['p99'][-1]:.0f} µs per pool step (64 stream-steps); no NaN."]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "reliability.md", "soak", md)


if __name__ == "__main__":
    main()

"""The measured streaming profile of one artifact on the machine it runs on.

:func:`profile` opens the artifact through the same :class:`~edgeseq.runtimes.session.StreamSession` users
stream with and measures, in this order:

1. **load**: the first open in this process (manifest, checksum, runtime load) and the first step, apart from
   a warm second open;
2. **latency**: ``warmup`` steps (not recorded), then ``steps`` steps, each timed with ``time.perf_counter_ns``
   (one read per step, samples between consecutive reads: :func:`timed_segment`; raw samples kept);
   p50/p90/p99/max and jitter (coefficient of variation);
3. **memory along the stream**: VmRSS read at ``memory_points`` step counts of the same stream (between timed
   steps, so the reads are not in the samples), the process peak (VmHWM, reset before loading), the state
   bytes per stream and the runtime's planned arena;
4. **throughput**: batch 1 (1 / mean step) and ``streams`` independent sessions pushed round-robin;
5. **operators**: a separate traced pass (:mod:`edgeseq.devices.opprof`);
6. **parity**: with a reference model directory, the same inputs through the eager step and the artifact.

Inputs are real frames from a data set (``data``) or seeded N(0, 1) frames (token ids uniform over the
vocabulary for language models); the report says which.
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseq.devices import memory as mem
from edgeseq.errors import ConfigError, ShapeError
from edgeseq.runtimes import RUNTIMES

FLAT_THRESHOLD_BYTES = 256 * 1024  # RSS growth allowed between 10% of the stream and its end


@dataclass(frozen=True)
class ProfileConfig:
    steps: int = 10_000  # timed steps after warm-up (the memory-vs-length stream too)
    warmup: int = 200  # steps run before timing (not recorded)
    streams: int = 4  # independent sessions for the N-stream throughput
    stream_steps: int = 500  # steps per stream in the throughput pass
    op_steps: int = 200  # steps in the per-operator pass (0: skip it)
    memory_points: int = 20  # RSS reads along the stream
    parity_steps: int = 2_000  # steps compared with the reference
    data: str | None = None  # data set name or a data file for real inputs; None: seeded N(0, 1)
    max_memory: int | None = None  # bytes reading ``data`` may take at most (--max-memory)
    seed: int = 0
    arm_parity: bool = False  # also run each .pte on every estimated aarch64 device's arithmetic (qemu, check-device)
    arm_frames: int = 1000

    def __post_init__(self):
        for k in ("steps", "streams", "stream_steps", "memory_points", "parity_steps"):
            if getattr(self, k) < 1:
                raise ConfigError(f"profile: {k} must be >= 1, got {getattr(self, k)}")
        for k in ("warmup", "op_steps"):
            if getattr(self, k) < 0:
                raise ConfigError(f"profile: {k} must be >= 0, got {getattr(self, k)}")


def make_inputs(manifest: dict, cfg: ProfileConfig, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``n`` input frames (n, d_in) for the artifact, and a description for the report."""
    d_in = int(manifest["inputs"][0]["shape"][1])
    vocab = int(manifest.get("vocab_size") or 0)
    rng = np.random.default_rng(cfg.seed)
    if vocab:
        return rng.integers(0, vocab, size=(n, d_in), dtype=np.int64), {"kind": "synthetic", "what": f"token ids uniform in 0..{vocab - 1}, seed {cfg.seed}"}
    if cfg.data:
        from edgeseq.data import check_fits, load
        from edgeseq.data.files import DataOptions
        from edgeseq.pipeline import real_stream

        got = _npy_stream(cfg.data, d_in, n)
        if got is not None:
            frames, total = got
            what = (f"its first {n:,} frames of {total:,}" if total >= n else f"its {total:,} frames, repeated to {n:,}")
            return frames, {"kind": "data file", "what": f"{cfg.data}: {what} (read in chunks)"}
        ds = load(cfg.data, DataOptions(max_memory=cfg.max_memory), d_in=d_in)
        check_fits(ds, d_in, what="input data")
        return real_stream(ds.test, n), {"kind": "data set", "what": f"{ds.name} test split, series concatenated"}
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    return x, {"kind": "synthetic", "what": f"N(0, 1) frames, seed {cfg.seed}"}


def _npy_stream(source: str, d_in: int, n: int) -> tuple[np.ndarray, int] | None:
    """(the first ``n`` frames (n, d_in), T) of a one-series ``.npy`` (T, d_in), read in chunks, never whole (a
    long recording profiles in the memory of ``n`` frames), repeated to ``n`` when shorter, as for any data set;
    None for anything else (read by :func:`edgeseq.data.load`)."""
    from pathlib import Path

    from edgeseq.data import DATASETS
    from edgeseq.data.sizes import NpyFrames
    from edgeseq.errors import InputError

    path = Path(source).expanduser()
    if path.suffix.lower() != ".npy" or not path.is_file() or (source in DATASETS):
        return None
    frames = NpyFrames(path)
    if frames.ndim != 2:
        return None  # a batch of series (series, time, features): the data set reader's
    if frames.frame_shape[0] != d_in:
        raise InputError(f"{path}: {frames.frame_shape[0]} features per frame (from its header, {frames.shape}); the "
                         f"model takes {d_in}; nothing was read")
    if frames.dtype.kind not in "fiu":
        raise InputError(f"{path}: its header gives values of type {frames.dtype}; expected real numbers")
    if len(frames) == 0:
        raise InputError(f"{path}: empty series (0 frames)")
    k = min(n, len(frames))
    x = np.empty((k, d_in), dtype=np.float32)
    for i in range(k):
        x[i] = frames[i]
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        t, c = bad[0]
        raise InputError(f"{path}: {'NaN' if np.isnan(x[t, c]) else 'Inf'} at step {t}, feature {c}")
    return np.ascontiguousarray(np.tile(x, (-(-n // k), 1))[:n]), len(frames)


def _stats(us: np.ndarray) -> dict[str, float]:
    mean = float(us.mean())
    return {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max()), "min_us": float(us.min()),
            "mean_us": mean, "std_us": float(us.std()), "cv": float(us.std() / mean) if mean else 0.0}


def _flat(points: list[tuple[int, int]]) -> dict[str, Any]:
    """RSS growth from the first point at or past 10% of the stream to the end."""
    if len(points) < 2:
        return {"flat": None, "growth_bytes": None, "statement": "too few memory points to judge"}
    last = points[-1][0]
    start = next(p for p in points if p[0] >= 0.1 * last)
    growth = points[-1][1] - start[1]
    flat = growth <= FLAT_THRESHOLD_BYTES
    kib = growth / 1024
    words = (f"Memory is flat along the stream: resident memory changed by {kib:+,.0f} KiB from step {start[0]:,} to "
             f"step {last:,} (threshold {FLAT_THRESHOLD_BYTES // 1024} KiB): the step keeps constant memory."
             if flat else
             f"Memory GROWS along the stream: resident memory rose by {kib:+,.0f} KiB from step {start[0]:,} to step "
             f"{last:,} (threshold {FLAT_THRESHOLD_BYTES // 1024} KiB).")
    return {"flat": flat, "growth_bytes": int(growth), "from_step": int(start[0]), "to_step": int(last),
            "threshold_bytes": FLAT_THRESHOLD_BYTES, "statement": words}


def timed_segment(push: Callable, frames: list, stamps: list) -> int:
    """The profiler's innermost loop: push each frame and append ``time.perf_counter_ns()`` to ``stamps`` after
    it; returns the clock read before the first push. A sample is the difference of consecutive reads, so each
    covers one push plus this loop's own iteration (one clock read and one list append: see
    benchmarks/profiling.py for what that costs against a bare ``for x in frames: push(x)``)."""
    clock = time.perf_counter_ns
    stamp = stamps.append
    t0 = clock()
    for x in frames:
        push(x)
        stamp(clock())
    return t0


def timed_stream(push: Callable, xs: np.ndarray, memory_points: int,
                 on_mark: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Push every frame of ``xs``, timing each push (ns) with :func:`timed_segment`. VmRSS is read at
    ``memory_points`` evenly spaced step counts, between segments, so the reads are in no sample. Returns
    (samples in ns, [(steps, RSS bytes)] from step 0)."""
    n = len(xs)
    frames = list(xs)  # per-frame views, made before any timing
    bounds = sorted(({int(m) for m in np.linspace(0, n, memory_points + 1)[1:]} | {n}) - {0})
    rss_points: list[tuple[int, int]] = [(0, mem.rss_bytes() or 0)]
    parts: list[np.ndarray] = []
    lo = 0
    for hi in bounds:
        segment, stamps = frames[lo:hi], []
        t0 = timed_segment(push, segment, stamps)
        parts.append(np.diff(np.asarray([t0] + stamps, dtype=np.int64)))
        rss_points.append((hi, mem.rss_bytes() or 0))
        if on_mark:
            on_mark(hi)
        lo = hi
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), rss_points


def profile(
    artifact: str | Path, cfg: ProfileConfig = ProfileConfig(), *, reference: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure one artifact; returns the report's ``profiles[i]`` entry (see ``docs/profiling.md``)."""
    with warnings.catch_warnings():  # streams run past the training length on purpose
        warnings.simplefilter("ignore")
        return _profile(artifact, cfg, reference, progress)


def _profile(artifact, cfg: ProfileConfig, reference, progress) -> dict[str, Any]:
    import edgeseq
    from edgeseq import manifest as man
    from edgeseq.devices.opprof import profile_ops

    def tick(stage: str, i: int = 0, n: int = 0) -> None:
        if progress:
            progress(stage, i, n)

    model_file, man_path, m = man.resolve_artifact(artifact)
    man.check_file(model_file, m)
    runtime = m["runtime"]["name"]
    total = cfg.warmup + cfg.steps
    # every pass's frames: the timed stream, the N-stream throughput, the per-operator pass and the parity check
    xs, inputs = make_inputs(m, cfg, max(total, cfg.parity_steps, cfg.stream_steps, cfg.op_steps))
    peak_reset = mem.reset_peak()

    tick("load")
    t0 = time.perf_counter()
    importlib.import_module(RUNTIMES.get(runtime).python_module)
    t_import = time.perf_counter() - t0
    rss0 = mem.rss_bytes()
    t0 = time.perf_counter()
    sess = edgeseq.open(model_file)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    sess.push(xs[0])
    t_first = time.perf_counter() - t0
    rss_loaded = mem.rss_bytes()
    t0 = time.perf_counter()
    warm = edgeseq.open(model_file)
    t_warm = time.perf_counter() - t0
    del warm
    sess.reset()

    for t in range(cfg.warmup):
        sess.push(xs[t])
    tick("stream", 0, cfg.steps)
    samples, rss_points = timed_stream(sess.push, xs[cfg.warmup: total], cfg.memory_points,
                                       lambda i: tick("stream", i, cfg.steps))
    us = samples / 1e3
    stats = _stats(us)
    peak = mem.peak_rss_bytes()

    tick("streams")
    sessions = [edgeseq.open(model_file) for _ in range(cfg.streams)]
    t0 = time.perf_counter()
    for t in range(cfg.stream_steps):
        x = xs[t]
        for s in sessions:
            s.push(x)
    t_streams = time.perf_counter() - t0
    del sessions

    ops: dict[str, Any]
    if cfg.op_steps:
        tick("operators")
        ops = profile_ops(runtime, model_file, m, xs, cfg.op_steps)
    else:
        ops = {"available": False, "reason": "per-operator pass switched off (op_steps = 0)"}

    tick("parity")
    parity = _parity(model_file, m, reference, xs[: cfg.parity_steps])

    g = m.get("graph") or {}
    if g.get("planned_arena_bytes") is not None:  # ExecuTorch: its plan, plus the outputs the runtime gives buffers
        arena = g["planned_arena_bytes"] + g.get("unplanned_output_bytes", 0)
        arena_src = "ExecuTorch memory plan (program non_const_buffer_sizes, from the manifest)" + (
            " and the output buffers the runtime holds (outputs not memory-planned)" if g.get("unplanned_output_bytes") else "")
    else:
        arena = ops.get("arena_held_bytes")
        arena_src = "onnxruntime CPU arena held (profiling events)" if arena else None
    ss = m["state_spec"]
    q, p = m.get("quantization"), m.get("pruning")
    return {
        "artifact": {
            "path": str(model_file), "manifest": str(man_path), "file": model_file.name,
            "bytes": model_file.stat().st_size, "target": m["target"], "runtime": runtime,
            "runtime_version": m["runtime"].get("version"), "backend": m["runtime"].get("backend"),
            "family": m["family"], "config": m["config"], "fingerprint": m["fingerprint"],
            "quantization": (q or {}).get("config", {}).get("scheme") if q else None,
            "pruning": (p or {}).get("config") if p else None, "export_parity": m["parity"],
            "cost": m.get("cost"), "delay": ss.get("delay", 0),
        },
        "inputs": inputs,
        "config": asdict(cfg),
        "load": {"runtime_import_ms": t_import * 1e3, "first_load_ms": t_load * 1e3, "first_step_ms": t_first * 1e3, "warm_load_ms": t_warm * 1e3,
                 "rss_load_delta_bytes": (rss_loaded - rss0) if rss0 and rss_loaded else None,
                 "what": "runtime import: importing the runtime's Python package (0 when already imported); first "
                         "load: the first open of the artifact in this process (manifest, checksum, runtime load); warm "
                         "load: a second open of the same file"},
        "latency": {**stats, "steps": cfg.steps, "warmup": cfg.warmup, "samples_us": [round(float(v), 3) for v in us],
                    "timer": "time.perf_counter_ns between consecutive StreamSession.push calls (input checks, runtime call, state kept)"},
        "throughput": {"batch1_steps_per_s": 1e6 / stats["mean_us"], "streams": cfg.streams,
                       "streams_steps_per_s": cfg.streams * cfg.stream_steps / t_streams,
                       "what": f"{cfg.streams} independent sessions pushed round-robin in one thread"},
        "memory": {
            "peak_rss_bytes": peak, "peak_covers": "this profile (peak reset before loading)" if peak_reset else "the whole process",
            "rss_along_stream": [[int(s), int(b)] for s, b in rss_points], **_flat(rss_points[1:]),
            "state_bytes_per_stream": int(ss["bytes_per_stream"]), "planned_arena_bytes": arena, "arena_source": arena_src,
            "file_bytes": model_file.stat().st_size,
        },
        "operators": ops,
        "parity": parity,
    }


def _parity(model_file: Path, m: dict, reference: str | Path | None, xs: np.ndarray) -> dict[str, Any]:
    exp = m["parity"]
    if reference is None:
        return {"available": False, "export_time": exp,
                "reason": f"no reference model given (--reference MODEL_DIR); at export: {exp['steps']:,} steps, max abs "
                          f"error {exp['max_abs_error']:.3g} vs {exp.get('what', 'eager')}"}
    import edgeseq
    from edgeseq.parity import compare

    ref = edgeseq.open(Path(reference))
    art = edgeseq.open(model_file)
    if ref.d_in != art.d_in or ref.d_out != art.d_out:
        raise ShapeError(f"reference {reference} maps {ref.d_in} -> {ref.d_out} features; the artifact {art.d_in} -> {art.d_out}")
    rep = compare(ref.run(xs)[:, None], art.run(xs)[:, None], what="profile parity", delay=art.delay)  # (T, 1, d_out)
    return {"available": True, "reference": str(reference), "steps": len(xs), "compared_from_step": art.delay,
            "max_abs_error": rep.max_abs_error, "max_rel_error": rep.max_rel_error,
            "max_scaled_error": rep.max_scaled_error,
            "same_model": ref.fingerprint == art.fingerprint, "export_time": exp,
            "what": "artifact vs the reference's eager step, same inputs, state fed back"
                    + ("" if ref.fingerprint == art.fingerprint else
                       " (fingerprints differ: a quantized or pruned artifact against its float model, so this is drift)")}

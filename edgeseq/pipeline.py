"""The main job end to end: train on bundled data, convert, export, stream the test split, compare, profile.

Used by ``edgeseq quickstart``; returns a summary dict and prints nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class QuickstartConfig:
    family: str = "rnn"
    data: str = "japanese-vowels"
    model: tuple[tuple[str, Any], ...] = (("cell", "lstm"), ("d_hidden", 64))  # family config overrides
    epochs: int = 40
    targets: tuple[str, ...] = ("onnx", "executorch")
    parity_steps: int = 10_000  # step-vs-parallel check on the real test stream, repeated to this length
    export_steps: int = 2_000  # validation rollout of each artifact, on real test frames
    profile_steps: int = 5_000  # timed steps per artifact in the profile report (0: no report)
    seed: int = 0


def real_stream(split, steps: int) -> np.ndarray:
    """The split's series concatenated into one long stream (T, d_in), repeated to ``steps`` frames."""
    frames = np.concatenate([split.series(i) for i in range(len(split))])
    reps = -(-steps // len(frames))
    return np.ascontiguousarray(np.tile(frames, (reps, 1))[:steps], dtype=np.float32)


def run_quickstart(
    out_dir: Path, config: QuickstartConfig = QuickstartConfig(),
    on_stage: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
    on_series: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    import edgeseq
    from edgeseq.data import load_dataset
    from edgeseq.train import TrainConfig, evaluate, fit, stream_outputs

    stage = on_stage or (lambda _s: None)
    out_dir = Path(out_dir)
    ds = load_dataset(config.data)
    summary: dict[str, Any] = {"data": ds.name, "family": config.family, "test_series": len(ds.test)}

    stage("train")
    torch.manual_seed(config.seed)  # the initial weights too, so a run is repeatable
    model = edgeseq.build(config.family, d_in=ds.d_in, d_out=ds.d_out, task=ds.task, **dict(config.model))
    result = fit(model, ds, TrainConfig(epochs=config.epochs, seed=config.seed), progress=on_epoch)
    edgeseq.save(model, out_dir / "model")
    summary["train_seconds"] = result.seconds
    summary["params"] = sum(p.numel() for p in model.parameters())

    stage("convert")
    step = edgeseq.convert(model)
    stream = real_stream(ds.test, config.parity_steps)
    report = edgeseq.check_parity(model, step, torch.from_numpy(stream)[None])
    summary["state_bytes_per_stream"] = step.state_spec.bytes_per_stream
    summary["parity_step_vs_parallel"] = report.summary()

    rows = []
    x_test, len_test, _ = ds.test.tensors()
    with torch.no_grad():
        parallel_logits = model(x_test, len_test).numpy()  # (N, classes): the reference for every runtime
    rows.append({"runtime": "parallel form", "accuracy": evaluate(model, ds.task, ds.test)["accuracy"],
                 "max_abs_error_vs_parallel": 0.0, "us_per_step": None})
    sessions = [("torch", "step, eager torch", edgeseq.open(model))]
    arts = {}
    for target in config.targets:
        stage(f"export {target}")
        art = edgeseq.export(step, out_dir / "artifacts" / "model", target=target, model=model,
                             inputs=real_stream(ds.test, config.export_steps)[:, None, :])
        arts[target] = art
        sessions.append((target, f"step, {art.manifest['runtime']['name']}", edgeseq.open(art.path)))
    summary["artifacts"] = {t: {"path": str(a.path), "bytes": a.manifest["file_bytes"], "parity": a.parity,
                                "graph": a.manifest["graph"]} for t, a in arts.items()}

    for key, label, sess in sessions:
        stage(f"stream test split on {label}")
        t0 = time.perf_counter()
        logits = stream_outputs(sess, ds.test, lambda i, n: on_series and on_series(label, i, n))
        secs = time.perf_counter() - t0
        acc = float((logits.argmax(-1) == ds.test.y).mean())
        rows.append({
            "runtime": label, "accuracy": acc,
            "max_abs_error_vs_parallel": float(np.abs(logits - parallel_logits).max()),
            "us_per_step": secs / int(ds.test.lengths.sum()) * 1e6,
        })
    summary["runtimes"] = rows

    if config.profile_steps:
        from edgeseq.devices.profiler import ProfileConfig
        from edgeseq.devices.report import run, write

        stage("profile the artifacts here, estimate them on the catalog devices")
        cfg = ProfileConfig(steps=config.profile_steps, streams=2, op_steps=100, data=config.data)
        rep = run([a.path for a in arts.values()], None, cfg, reference=out_dir / "model")
        paths = write(rep, out_dir / "report")
        summary["report"] = {
            "html": str(paths["report.html"]),
            "measured": [{k: c[k] for k in ("label", "p50_us", "p99_us", "cv", "memory_flat", "parity_max_abs_error")}
                         for c in rep["comparison"]],
            "estimates": sum(1 for e in rep["estimates"] if e["available"]),
        }
    return summary


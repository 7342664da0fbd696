"""Per-operator breakdowns, one profiler per runtime (a registry keyed by the manifest's runtime name).

Each runs the artifact for ``steps`` steps with the state fed back, in a pass of its own (the tracing costs
time, so the latency samples of a profile are taken without it), and returns rows
``{"name", "op_type", "mean_us", "p50_us", "count", "share"}`` sorted by total time, plus what the runtime
says about its memory.

- ``executorch``: the program loaded with ETDump enabled; :class:`executorch.devtools.Inspector` reads the dump.
  Rows are the XNNPACK kernels inside the delegate and the portable operators outside it; ``Method::execute``
  is the whole call.
- ``onnxruntime``: ``SessionOptions.enable_profiling``; one row per graph node (``cat == "Node"`` events, their
  ``dur`` in µs); the CPU arena held (``mem_arena_held``) and the peak bytes in use come from the same events.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseq.manifest import io_names
from edgeseq.registry import Registry
from edgeseq.step import StateSpec

OpProfiler = Callable[[Path, dict, np.ndarray, int], dict[str, Any]]
OP_PROFILERS: Registry[OpProfiler] = Registry("per-operator profiler")


def _rows(samples: dict[str, list[float]], types: dict[str, str]) -> list[dict[str, Any]]:
    total = sum(sum(v) for v in samples.values()) or 1.0
    rows = [{"name": k, "op_type": types.get(k, ""), "mean_us": float(np.mean(v)), "p50_us": float(np.median(v)),
             "count": len(v), "share": sum(v) / total} for k, v in samples.items()]
    return sorted(rows, key=lambda r: -r["mean_us"] * r["count"])


def _init_state(manifest: dict) -> list[np.ndarray]:
    return [t.numpy() for t in StateSpec.from_dict(manifest["state_spec"]).init(1)]


@OP_PROFILERS.register("executorch")
def executorch_ops(path: Path, manifest: dict, xs: np.ndarray, steps: int) -> dict[str, Any]:
    from executorch.runtime import Runtime

    from edgeseq.runtimes.et import ProgramIO, native_stderr_quiet

    with native_stderr_quiet():
        program = Runtime.get().load_program(str(path), enable_etdump=True, debug_buffer_size=0)
        method = program.load_method("forward")
        state = _init_state(manifest)
        io = ProgramIO(manifest)
        for t in range(steps):
            _, state = io.outputs(method.execute(io.inputs(xs[t % len(xs)][None], state)))
    with tempfile.TemporaryDirectory() as d:
        dump = Path(d) / "run.etdp"
        program.write_etdump_result_to_file(str(dump), str(Path(d) / "debug.bin"))
        from executorch.devtools import Inspector

        with warnings.catch_warnings(), native_stderr_quiet(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            df = Inspector(etdump_path=str(dump)).to_dataframe()
    samples: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    whole: list[float] = []
    for _, r in df.iterrows():
        name = str(r["event_name"])
        raw = [float(v) * 1e3 for v in (r["raw"] or [])]  # ms -> µs
        if name in ("Method::init", "Program::load_method"):
            continue
        if name == "Method::execute":
            whole = raw
            continue
        if name == "DELEGATE_CALL":
            types[name] = "delegate call (XNNPACK), includes the kernels below"
            continue
        samples.setdefault(name, []).extend(raw)
        types[name] = "XNNPACK kernel" if bool(r.get("is_delegated_op")) else "portable operator"
    return {
        "available": True, "source": "ExecuTorch ETDump + devtools Inspector", "steps": steps,
        "rows": _rows(samples, types),
        "call_p50_us": float(np.median(whole)) if whole else None,
        "note": "XNNPACK reports its kernels in whole microseconds: kernels under 1 µs read as 0",
    }


@OP_PROFILERS.register("onnxruntime")
def onnxruntime_ops(path: Path, manifest: dict, xs: np.ndarray, steps: int) -> dict[str, Any]:
    import onnxruntime as ort

    spec = StateSpec.from_dict(manifest["state_spec"])
    ins, outs = io_names(spec)
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "ort")
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        state = _init_state(manifest)
        for t in range(steps):
            res = sess.run(outs, dict(zip(ins, [xs[t % len(xs)][None], *state])))
            state = list(res[1:])
        events = json.loads(Path(sess.end_profiling()).read_text())
    samples: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    arena, in_use = 0, 0
    runs = []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            samples.setdefault(name, []).append(float(e["dur"]))
            types[name] = e.get("args", {}).get("op_name", "")
            a = e.get("args", {})
            arena = max(arena, int(a.get("mem_arena_held", 0) or 0))
            in_use = max(in_use, int(a.get("mem_in_use_peak", 0) or 0))
        elif e.get("name") == "model_run":
            runs.append(float(e["dur"]))
    return {
        "available": True, "source": "onnxruntime profiling (SessionOptions.enable_profiling)", "steps": steps,
        "rows": _rows(samples, types), "call_p50_us": float(np.median(runs)) if runs else None,
        "arena_held_bytes": arena or None, "arena_in_use_peak_bytes": in_use or None,
    }


def profile_ops(runtime: str, path: Path, manifest: dict, xs: np.ndarray, steps: int) -> dict[str, Any]:
    if runtime not in OP_PROFILERS:
        return {"available": False, "reason": f"no per-operator profiler for runtime {runtime!r} "
                                              f"(known: {', '.join(OP_PROFILERS.keys())})"}
    return OP_PROFILERS.get(runtime)(path, manifest, xs, steps)

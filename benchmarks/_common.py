"""Helpers shared by the benchmark scripts: interleaved timing, peak RSS of a fresh streaming process, docs sections."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADER = "# Benchmarks\n\nEvery number here is printed by a script in `benchmarks/`; ratios come from one run.\n"

_RSS_CHILD = r"""
import sys, warnings, numpy as np
warnings.simplefilter("ignore")
import edgeseq
sess = edgeseq.open(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1, sess.d_in)).astype(np.float32)
for _ in range(int(sys.argv[2])):
    sess.push(x)
state_bytes = sum(t.nbytes for t in sess.state.tensors)
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(state_bytes, hwm)
"""


def stream_peak_rss(artifact: str | Path, steps: int) -> tuple[int, int]:
    """Stream ``steps`` steps through ``artifact`` in a fresh process: (state bytes at the end, peak RSS bytes)."""
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(artifact), str(steps)], capture_output=True, text=True, check=True)
    state_bytes, hwm = map(int, r.stdout.split()[-2:])
    return state_bytes, hwm


def runtime_step(art, x):
    """A bare call of the artifact's runtime on input ``x`` (no session checks), with its state fed back: a function
    of no arguments that runs one step."""
    import edgeseq

    return _per_call(edgeseq.open(art.path), x)


def _per_call(sess, x):
    """``sess``'s backend ``run`` on ``x`` with the state fed back, from the session's current state."""
    backend, state = sess.backend, {"s": [t.copy() for t in sess.state.tensors]}

    def call():
        _, state["s"] = backend.run(x, state["s"])

    return call


def bound_call(sess, frame):
    """The runtime call a bound session makes, alone (no frame copy, no checks, no bookkeeping): a function of no
    arguments running one step from the session's current buffers; the per-call ``run`` on ``frame`` where it is
    not bound (a token input, say)."""
    if sess.bound:
        _KEEP.append(sess)  # the call runs on the session's buffers: they must outlive it (the caller may drop sess)
        return sess._bound[sess._cur][0]
    return _per_call(sess, np.ascontiguousarray(frame))


_KEEP: list = []  # the sessions whose bound calls bound_call handed out


def gemv_floor(mats: list[np.ndarray]):
    """Each (out, in) matrix against one input vector, numpy (OpenBLAS) into preallocated outputs: what any fp32
    step multiplying by these matrices must at least spend streaming them through the CPU."""
    work = [(w, np.ones(w.shape[1], np.float32), np.empty(w.shape[0], np.float32)) for w in mats]

    def call():
        for w, v, o in work:
            np.dot(w, v, out=o)

    return call


def linear_mats(module) -> list[np.ndarray]:
    """The weights of ``module``'s ``nn.Linear`` layers (a Mamba step's floor: its depthwise convolution and scan
    are elementwise, not matrix products)."""
    from torch import nn

    return [m.weight.detach().numpy().copy() for m in module.modules() if isinstance(m, nn.Linear)]


def native_bench(b, path, n: int, rounds: int, *extra: str) -> dict[str, float]:
    """The native runner's own timing (``edgeseq-run PATH --bench n [extra...]``), the median of each figure it
    prints over ``rounds`` runs."""
    import json

    runs = [json.loads(subprocess.run([str(b.runner), str(path), "--bench", str(n), *extra], capture_output=True,
                                      text=True, env=b.env(), check=True).stdout) for _ in range(rounds)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0] if not isinstance(runs[0][k], bool)}


def native_us(b, path, n: int, rounds: int) -> tuple[float, float]:
    """The native runner on ``path`` (``edgeseq-run --bench n``), medians over ``rounds`` runs: (a bare
    ``Module::execute``, its ``es_push``) in µs per step."""
    d = native_bench(b, path, n, rounds)
    return d["execute_us"], d["push_us"]


def standard_args(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every docs-writing benchmark takes: --quick and --no-write (add more to the parser)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return ap


def single_thread_quiet() -> None:
    """One thread (the tables are per-core numbers), no toolchain warnings or logging, seed 0."""
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.manual_seed(0)


def write_section(path: Path, name: str, md: str) -> None:
    """Replace (or append) the ``<!-- name:start/end -->`` block of ``path`` with ``md``; the rest is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{md}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


def interleaved(fns: dict, n: int, rounds: int, warmup: int = 200, turn_warmup: int = 0) -> dict[str, float]:
    """µs per call of each function: rounds of ``n`` calls, the functions taking turns within each round (so a
    noisy neighbour slows all of them alike); the median over rounds. ``turn_warmup`` untimed calls open each turn:
    the first call after another model's turn finds its weights out of the cache, a cost that would otherwise fall
    on whichever function comes first after it (with few calls per turn, tens of µs a call for a Mamba step)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(turn_warmup):
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[k].append((time.perf_counter() - t0) / n * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}

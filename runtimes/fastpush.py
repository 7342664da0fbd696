"""The bound push step in one C call: ``native/fastpush.c``, a CPython extension compiled on first use.

A session bound to its :class:`~edgeseq.runtimes.arena.StepArena` steps a frame as: the frame copied into the
arena's free side, the runtime's bound call, and one finite check over that side (the frame, the output and the
next state). As numpy calls these cost 0.4-0.7 µs each right after a runtime call (its work evicts numpy's code
from the caches), more than the rest of ``push`` together on a small model; the C ``Side`` makes them one call
(benchmarks/peers.py: what ``push`` adds to the bare runtime call).

The extension is built with ``$CC``, else the C compiler Python was built with (``sysconfig``'s ``CC``), into
``$EDGESEQ_CACHE/fastpush`` (default ``~/.cache/edgeseq/fastpush``), once per source and Python version, in a
fraction of a second. Where it cannot be built (no compiler, no Python headers) or ``EDGESEQ_PURE_PYTHON=1`` is
set, :func:`side_step` returns None and the session runs the same step with numpy: the same results and
refusals, slower. :func:`status` says which one a process uses and why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

SOURCE = Path(__file__).parent / "native" / "fastpush.c"
FLAGS = ("-O3", "-shared", "-fPIC", "-fno-strict-aliasing")

_lock = threading.Lock()
_state: dict = {}  # "module": the loaded extension or None, "why": a line saying why not


def cache_dir() -> Path:
    return Path(os.environ.get("EDGESEQ_CACHE", Path.home() / ".cache" / "edgeseq")) / "fastpush"


def _compiler() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _target(source: bytes) -> Path:
    key = hashlib.sha256(source + sys.version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / f"edgeseq_fastpush-{key}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def _build(target: Path) -> None:
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise OSError(f"no Python headers ({include}/Python.h)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        # macOS links an extension against the interpreter at load time (its symbols are left undefined here)
        link = ["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else []
        cmd = [*_compiler(), *FLAGS, *link, f"-I{include}", str(SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f"{' '.join(cmd[:1])} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        os.replace(tmp, target)  # atomic: a process loading it at the same time sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load():
    """The extension module, built first where needed; None where it cannot be (see :func:`status`)."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        module, why = None, ""
        if os.environ.get("EDGESEQ_PURE_PYTHON"):
            why = "EDGESEQ_PURE_PYTHON is set"
        else:
            try:
                target = _target(SOURCE.read_bytes())
                if not target.is_file():
                    _build(target)
                spec = importlib.util.spec_from_file_location("edgeseq_fastpush", target)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except (OSError, ImportError, subprocess.SubprocessError) as exc:
                module, why = None, f"not built ({exc})"
        _state.update(module=module, why=why or f"built ({Path(module.__file__).name})")
        return module


def status() -> str:
    """One line: whether this process steps bound sessions through the C extension, and why not if not."""
    module = load()
    return ("C extension: " if module is not None else "numpy (no C extension): ") + _state["why"]


def side_step(frame: np.ndarray, call: Callable[[], None], side: np.ndarray) -> Callable[[object], bool] | None:
    """``step(x)``: x copied into ``frame`` (numpy's ``frame[...] = x`` where it is not a C-contiguous buffer of
    ``frame``'s length), ``call()`` run, and whether every float32 of ``side`` is finite; None where the extension
    is not built (the session then runs the same three parts with numpy). ``frame`` and ``side`` must be
    C-contiguous and stay alive and in place (the arena's views)."""
    module = load()
    return None if module is None else module.Side(frame, call, side)


def relay(ins, call: Callable[[], None], outs, keep=None) -> Callable[[], None] | None:
    """``relay()``: each ``(dst, src)`` array pair of ``ins`` copied, ``call()`` run, each pair of ``outs`` copied, in
    one C call (ExecuTorch's bound step: its fixed inputs in, its outputs out); None where the extension is not
    built. Every array C-contiguous, each pair of one length, in place; ``keep`` is held with them (what they belong
    to: tensors a program reads)."""
    module = load()
    if module is None:
        return None
    try:
        return module.Relay(tuple(ins), call, tuple(outs), keep)
    except (BufferError, ValueError, TypeError):  # a strided array or pairs of two lengths: numpy copies those
        return None

"""Runtime ``onnxruntime``: CPU execution provider, one intra-op thread by default (batch-1 streaming)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq.errors import ArtifactError, require
from edgeseq.manifest import io_names
from edgeseq.runtimes.base import Runtime, register_runtime
from edgeseq.step import StateSpec


def check_onnx(path: Path) -> None:
    """``onnx.checker`` on the file before onnxruntime loads it: a structurally broken graph is refused in one line
    naming what the checker found (onnxruntime's own load refuses most too; the checker says why more plainly)."""
    onnx = require("onnx", "onnx")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # onnx.checker.ValidationError, protobuf's DecodeError, ...
        line = " ".join(str(exc).split())[:200]
        raise ArtifactError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {line})") from None


class OrtBackend:
    def __init__(self, path: Path, spec: StateSpec, threads: int = 1, optimize: bool = True):
        ort = require("onnxruntime", "onnx")
        so = ort.SessionOptions()
        if not optimize:  # each node as written (a TensorRT file's Q/DQ pairs: their reference semantics)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 4  # fatal only: its error lines would add to the one-line errors edgeseq prints
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
        self.in_names, self.out_names = io_names(spec)
        self.path = path
        inner = getattr(self.sess, "_sess", None)  # the C++ session under onnxruntime's Python wrapper
        self._run = inner.run if inner is not None and callable(getattr(inner, "run", None)) else (
            lambda names, feeds, options: self.sess.run(names, feeds, options))

    def run(self, x: np.ndarray, state: list[np.ndarray]):
        feeds = dict(zip(self.in_names, [x, *state]))
        try:
            # the bindings' own run: InferenceSession.run checks the feed names and the ownership of OrtValues on
            # every call (4 us a call here), which feeds built from the manifest's names as numpy arrays never need
            out = self._run(self.out_names, feeds, None)
        except Exception as exc:  # onnxruntime's own exception types: a graph that loads but cannot run (a corrupt file)
            line = " ".join(str(exc).split())[:240]
            raise ArtifactError(f"{self.path}: onnxruntime failed running a step ({line})") from None
        return out[0], list(out[1:])

    def bind(self, arena):
        """The step as two calls bound to ``arena`` (runtimes/arena.py): ``steps[c]()`` reads the state on side ``c``
        and the frame on the other side, and writes the output and the next state there, through onnxruntime's I/O
        binding (the addresses are bound once, at open; a call is the C++ run alone). None where the bindings lack
        it (an onnxruntime before I/O binding had its Python methods)."""
        inner = getattr(self.sess, "_sess", None)
        run = getattr(inner, "run_with_iobinding", None)
        if run is None or not callable(getattr(self.sess, "io_binding", None)):
            return None
        steps = []
        for c in (0, 1):
            n = 1 - c
            io = self.sess.io_binding()
            for name, a in zip(self.in_names, (arena.x[n], *arena.state[c])):
                io.bind_input(name, "cpu", 0, a.dtype.type, a.shape, a.ctypes.data)
            for name, a in zip(self.out_names, (arena.y[n], *arena.state[n])):
                io.bind_output(name, "cpu", 0, np.float32, a.shape, a.ctypes.data)
            steps.append(self._bound_call(run, io))
        return tuple(steps)

    def _bound_call(self, run, io):
        binding, path = io._iobinding, self.path

        def step():
            try:
                run(binding, None)
            except Exception as exc:  # as in run: a graph that loads but cannot run
                line = " ".join(str(exc).split())[:240]
                raise ArtifactError(f"{path}: onnxruntime failed running a step ({line})") from None

        step.binding = io  # kept alive with the step
        return step


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    python_module = "onnxruntime"

    def verify(self, path: Path, manifest: dict) -> None:
        """A file opened with edgeseq.open goes through onnx.checker (the exporter's own validation, on the file it
        has just written, does not)."""
        check_onnx(path)

    def open_file(self, path: Path, manifest: dict, batch: int | None = None, threads: int = 1):
        optimize = manifest.get("runtime", {}).get("ort_optimization", "enabled") != "disabled"
        backend = OrtBackend(path, StateSpec.from_dict(manifest["state_spec"]), threads=threads, optimize=optimize)
        return self.session(backend, manifest, path, batch)

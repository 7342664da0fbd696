"""Runtime ``executorch``: loads a ``.pte`` through ``executorch.runtime`` (XNNPACK kernels are built in)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import numpy as np
import torch

from edgeseq.errors import ArtifactError, require
from edgeseq.runtimes import fastpush
from edgeseq.runtimes.arena import StepArena
from edgeseq.runtimes.base import Runtime, register_runtime


# XNNPACK may read up to XNN_EXTRA_BYTES (16 on CPUs, xnnpack.h) past the end of an input it is handed; the
# programs read their inputs in place (not memory-planned), so every input must have that much of its own
# buffer after it. Kept generous.
TAIL_BYTES = 64


def _tail_bytes(a: np.ndarray) -> int:
    """Bytes of ``a``'s owning numpy buffer after ``a``'s last byte, for a dense ``a`` (any dimension order; -1
    when the owner is not a numpy buffer)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.base is not None:
        return -1
    return root.__array_interface__["data"][0] + root.nbytes - a.__array_interface__["data"][0] - a.nbytes


_NP_DTYPES: dict[torch.dtype, np.dtype] = {}


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype not in _NP_DTYPES:
        _NP_DTYPES[dtype] = torch.empty(0, dtype=dtype).numpy().dtype
    return _NP_DTYPES[dtype]


def padded_copy(t: torch.Tensor, memory_format: torch.memory_format = torch.preserve_format) -> np.ndarray:
    """A copy of ``t`` as a numpy array in its own buffer with :data:`TAIL_BYTES` after it, in ``t``'s memory
    layout (or ``memory_format``)."""
    t = t.detach()
    if memory_format is not torch.preserve_format:
        t = t.contiguous(memory_format=memory_format)
    elif not (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
        t = t.contiguous()
    buf = np.empty(t.numel() * t.element_size() + TAIL_BYTES, np.uint8)
    a = np.ndarray(tuple(t.shape), _np_dtype(t.dtype), buffer=buf, strides=tuple(s * t.element_size() for s in t.stride()))
    torch.from_numpy(a).copy_(t)
    return a


def program_input(a: np.ndarray, channels_last: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """State array ``a`` as the program reads it: channels-last when the program takes that tensor so, C order
    otherwise, with :data:`TAIL_BYTES` of its buffer after it; ``a`` itself when it already is so, else a
    converted copy. Returns the array and its tensor (sharing memory). Without the layout conversion a
    channels-last program would read NCHW bytes as NHWC and compute something else without an error."""
    t = torch.from_numpy(a)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if t.is_contiguous(memory_format=fmt) and _tail_bytes(a) >= TAIL_BYTES:
        return a, t
    a = padded_copy(t, fmt)
    return a, torch.from_numpy(a)


class ProgramIO:
    """How a program's inputs and outputs map to the step's ``(x, state) -> (y, next state)``, from its manifest:
    the state tensors it takes channels-last (``runtime.channels_last_state``) and the next-state tensors it does
    not return because they are an input state unchanged (``runtime.passthrough_state``, ``{name: input name}``:
    a ring buffer's shift); those are passed along by reference, with no copy. Manifests written before either
    field: none.

    Call :meth:`inputs` then :meth:`outputs` once per program call. The state arrays :meth:`outputs` gives back
    already have the program's layout and tail, and are remembered (by position and identity) so that the next
    :meth:`inputs` hands them over without looking at them again. They come from a pool per output: an array is
    written again only once nothing outside this object refers to it or to its buffer any more (reference counts
    say so: a caller that keeps an old state, or a numpy view or a tensor of it, keeps it intact), so a stream
    settles on two or three arrays per state tensor and the per-call cost in Python is one copy per computed state
    tensor."""

    def __init__(self, manifest: dict):
        names = [t["name"] for t in manifest["state_spec"]["tensors"]]
        self.channels_last = channels_last_indices(manifest)
        passed = manifest.get("runtime", {}).get("passthrough_state") or {}
        unknown = [n for n in (*passed, *passed.values()) if n not in names]
        if unknown:
            raise ArtifactError(f"manifest: passthrough_state names {unknown[0]!r}, which is not a state tensor")
        self.passed = [(names.index(k), names.index(v)) for k, v in passed.items()]
        self.computed = [i for i in range(len(names)) if i not in dict(self.passed)]
        self.n_state = len(names)
        # (index, id(array)) -> [array, tensor, ...]: the arrays given back last call (and passed-through ones)
        self._known: dict[tuple[int, int], list] = {}
        self._given: list = []
        self._pools: list[list[list]] = [[] for _ in self.computed]  # per computed output: see _pool_entry
        self._frame: list | None = None  # the input frame's buffer: [array, tensor]

    def inputs(self, x: np.ndarray, state: list[np.ndarray]) -> list[torch.Tensor]:
        if len(state) != self.n_state:
            raise ArtifactError(f"program takes {self.n_state} state tensors, got {len(state)}")
        frame = self._frame
        if frame is None or frame[0].shape != x.shape or frame[0].dtype != x.dtype:
            a = padded_copy(torch.from_numpy(np.ascontiguousarray(x)), torch.contiguous_format)
            frame = self._frame = [a, torch.from_numpy(a)]
        np.copyto(frame[0], x)  # the program reads the frame only while it runs: one buffer serves every call
        known, cl = self._known, self.channels_last
        given: list = [frame]
        for i, a in enumerate(state):
            given.append(known.get((i, id(a))) or program_input(a, i in cl))
        self._given = given
        return [e[1] for e in given]

    def outputs(self, out) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(y, next state)`` from the outputs of the call whose :meth:`inputs` came last. The program's outputs
        live in its planned memory or, for outputs that are not planned, in buffers the bindings give them; both are
        overwritten by its next call: copied out (each in the layout the program gave
        it, a channels-last state stays so, with :data:`TAIL_BYTES` after it), into arrays nobody else holds."""
        if len(out) != 1 + len(self.computed):
            raise ArtifactError(f"program returned {len(out)} outputs; its manifest expects {1 + len(self.computed)}")
        new: list = [None] * self.n_state
        known = {}
        reuse = _refcounts_tell()
        for i, pool, t in zip(self.computed, self._pools, out[1:]):
            for e in pool if reuse else ():
                if sys.getrefcount(e[0]) == e[2] and sys.getrefcount(e[0].base) == e[3]:  # held by this pool only
                    break
            else:  # all held elsewhere (the caller keeps old states): a new array; forget held ones past a few
                e = _pool_entry(t)
                if reuse:
                    if len(pool) >= 4:
                        pool.clear()
                    pool.append(e)
            e[1].copy_(t)
            new[i] = e[0]
            known[i, id(e[0])] = e
        cl = self.channels_last
        for i, j in self.passed:
            e = self._given[1 + j]
            new[i] = e[0]
            if (i in cl) == (j in cl):
                known[i, id(e[0])] = e
        self._known = known
        return out[0].numpy().copy(), new


_REFCOUNTS_TELL: bool | None = None


def _refcounts_tell() -> bool:
    """Whether reference counts show a reference held elsewhere on this interpreter (checked once, on a scratch
    entry: a caller's reference and a view's must each change a count). Where they do not (a free-threaded build,
    an interpreter that defers counts), no output array is ever reused: a fresh one per call, correct but slower."""
    global _REFCOUNTS_TELL
    if _REFCOUNTS_TELL is None:
        ok = not (hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled())
        e = _pool_entry(torch.zeros(2, 3))
        holders = [e[0]]  # someone holds the array
        ok = ok and sys.getrefcount(e[0]) != e[2]
        holders[0] = e[0][0]  # someone holds a view of it instead
        ok = ok and sys.getrefcount(e[0]) == e[2] and sys.getrefcount(e[0].base) != e[3]
        holders.clear()
        _REFCOUNTS_TELL = ok and sys.getrefcount(e[0]) == e[2] and sys.getrefcount(e[0].base) == e[3]
    return _REFCOUNTS_TELL


def _pool_entry(t: torch.Tensor) -> list:
    """``[array, tensor on it, reference counts of the array and of its buffer when only the entry holds them]``
    for output ``t``. Both counts: a numpy view of the array refers to the buffer, not to the array."""
    a = padded_copy(t)
    e = [a, torch.from_numpy(a), 0, 0]
    del a
    e[2] = sys.getrefcount(e[0])  # the entry, the tensor and getrefcount's own argument
    e[3] = sys.getrefcount(e[0].base)  # the array and getrefcount's argument
    return e


def import_runtime():
    """``executorch.runtime`` without importing ``executorch.exir``, the compiler.

    The bindings module (``executorch.extension.pybindings.portable_lib``) imports ``executorch.exir._warnings``
    for one decorator, and Python imports the parent package first: all of ``executorch.exir`` and, through it,
    torch's dynamo and inductor, about 5 s of a 6.4 s ``edgeseq stream`` of a .pte here. ``_warnings.py`` is
    loaded under a placeholder parent that is removed again, so that a later ``import executorch.exir`` (an
    export in the same process) loads the real package."""
    require("executorch", "executorch")
    full = os.environ.get("EDGESEQ_ET_FULL_IMPORT")  # benchmarks/cli_startup.py: the import as it was before
    if full or "executorch.exir" in sys.modules or "executorch.runtime" in sys.modules:
        from executorch import runtime

        return runtime
    import importlib.util
    import types

    root = Path(list(importlib.util.find_spec("executorch").submodule_search_locations)[0])
    placeholder = types.ModuleType("executorch.exir")
    placeholder.__path__ = [str(root / "exir")]
    sys.modules["executorch.exir"] = placeholder
    try:
        import executorch.exir._warnings  # noqa: F401  (what the bindings need of exir)
        from executorch import runtime
    finally:
        if sys.modules.get("executorch.exir") is placeholder:
            del sys.modules["executorch.exir"]
            sys.modules.pop("executorch.exir._warnings", None)
            import executorch

            if getattr(executorch, "exir", None) is placeholder:
                del executorch.exir
    return runtime


class ExecuTorchBackend:
    def __init__(self, path: Path, io: ProgramIO, threads: int | None = 1, custom_ops=()):
        EtRuntime = import_runtime().Runtime
        if custom_ops:  # edgeseq's own operators (exported with custom_ops=True): their kernels registered first
            from edgeseq.runtimes.kernels import require as require_kernels

            require_kernels(custom_ops, path)

        self.io = io
        self._fixed = None  # (set_inputs, the fixed side's tensors) once bound
        with native_stderr_quiet():
            if threads is not None:
                set_threads(threads)
            try:
                self.method = EtRuntime.get().load_program(str(path)).load_method("forward")
                self._call = self.method._method  # the bindings' method: takes clone_outputs
            except Exception as exc:
                raise ArtifactError(
                    f"{path}: ExecuTorch cannot load it ({str(exc).splitlines()[0]}; EDGESEQ_DEBUG=1 shows its log)"
                ) from None

    def run(self, x: np.ndarray, state: list[np.ndarray]):
        # clone_outputs=False: the bindings would otherwise clone every output before ProgramIO copies it again
        try:
            return self.io.outputs(self._call(self.io.inputs(x, state), clone_outputs=False))
        finally:
            if self._fixed is not None:  # bound (see bind): the method's inputs back on the fixed side
                self._fixed[0](self._fixed[1])

    def bind(self, arena):
        """The step as two calls bound to ``arena`` (runtimes/arena.py), as ``OrtBackend.bind``. The program's
        inputs are set once, at bind, to a frame and a state of its own (a third side, ``self._fixed``), so a call
        is the bindings' ``execute`` alone, without the per-call conversion of every input that ``set_inputs``
        makes (3.6 us for a 1x8 GRU's two inputs, 15 us for a 4-layer Mamba's nine, this machine): the call for
        side ``c`` copies the frame and side ``c``'s state (one contiguous block) there, runs, and copies the outputs
        into the other side. Where the bindings put the outputs does not move between calls: a memory-planned
        output lives in the method's planned buffers and any other in a buffer the bindings allocate once per
        method (``PyMethod::allocate_output_storages`` in ExecuTorch's pybindings.cpp), so numpy views of them are
        made once too. :meth:`run` (the per-call path) points the inputs back at the fixed side after it runs. A
        program with memory-planned inputs (``set_inputs`` copies them into its memory) gets its inputs set on every
        call instead, from tensors on the side it reads. None where the program's I/O is not plain (a state taken
        channels-last or passed through, which ProgramIO handles)."""
        io = self.io
        call = self._call
        if io.channels_last or io.passed:
            return None
        execute, set_inputs = getattr(call, "execute", None), getattr(call, "set_inputs", None)
        try:
            meta = call.method_meta()
            shared = all(not meta.input_tensor_meta(i).is_memory_planned() for i in range(meta.num_inputs()))
        except Exception:
            shared = False
        # a planned input is copied into the program's memory by set_inputs (it does not read the caller's buffer
        # later): such a program gets its inputs set on every call, from the side it reads
        if shared and execute and set_inputs:
            fixed = StepArena(arena.x[0].shape, arena.y[0].shape, [a.shape for a in arena.state[0]], arena.x[0].dtype)
            sides = [[torch.from_numpy(a) for a in (fixed.x[0], *fixed.state[0])]]
        else:
            sides = [[torch.from_numpy(a) for a in (arena.x[1 - c], *arena.state[c])] for c in (0, 1)]
        try:
            first = call(sides[0], clone_outputs=False)
            again = call(sides[0], clone_outputs=False)  # leaves the method's inputs on sides[0]
        except Exception:  # a program that cannot run: the per-call path says why, in its own words
            return None
        if len(first) != 1 + io.n_state or [t.data_ptr() for t in first] != [t.data_ptr() for t in again]:
            return None
        outs = [t.numpy() for t in first]
        shapes = [(arena.y[0].shape, *(s.shape for s in arena.state[0]))]
        if [o.shape for o in outs] != list(shapes[0]) or any(o.dtype != np.float32 for o in outs):
            return None
        if len(sides) == 1:
            self._fixed = (set_inputs, sides[0])
        steps = []
        for c in (0, 1):
            n = 1 - c
            pairs = tuple(zip((arena.y[n], *arena.state[n]), outs))
            if len(sides) == 1:
                moves = ((fixed.x[0], arena.x[n]), (fixed.state_block[0], arena.state_block[c]))
                steps.append(self._fixed_call(execute, moves, pairs, (fixed, sides[0], outs)))
            else:
                steps.append(self._bound_call(call, sides[c], pairs, (sides[c], outs)))
        return tuple(steps)

    @staticmethod
    def _fixed_call(execute, moves, pairs, keep):
        # the copies in, execute and the copies out as one C call where the extension is built (runtimes/fastpush.py:
        # numpy's copyto costs 0.5-3 us a call right after a step, one call per array)
        fast = fastpush.relay(moves, execute, pairs, keep)
        if fast is not None:
            return fast
        copyto = np.copyto
        (x_dst, x_src), (s_dst, s_src) = moves

        def step():
            copyto(x_dst, x_src)
            copyto(s_dst, s_src)
            execute()
            for dst, src in pairs:
                copyto(dst, src)

        step.keep = keep  # the fixed side, the tensors on it and the views of the outputs, alive with the step
        return step

    @staticmethod
    def _bound_call(call, inputs, pairs, keep):
        fast = fastpush.relay((), functools.partial(call, inputs, clone_outputs=False), pairs, keep)
        if fast is not None:
            return fast
        copyto = np.copyto

        def step():
            call(inputs, clone_outputs=False)
            for dst, src in pairs:
                copyto(dst, src)

        step.keep = keep  # the tensors on the arena and the views of the outputs, alive with the step
        return step


@contextlib.contextmanager
def native_stderr_quiet():
    """Hide the ExecuTorch runtime's C++ info log (cpuinfo probing, thread-pool resets) while it loads.

    Set ``EDGESEQ_DEBUG=1`` (the CLI's ``--debug`` does) to keep it."""
    if os.environ.get("EDGESEQ_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured): nothing to hide
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def set_threads(n: int) -> None:
    """XNNPACK's thread pool size (process-wide in ExecuTorch's Python bindings)."""
    try:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != n:
            portable_lib._unsafe_reset_threadpool(n)
    except (ImportError, AttributeError):  # pragma: no cover - older executorch
        pass


# Programs known not to crash the runtime, by sha256: those edgeseq exported here (validated in-process when written)
# and those a probe process loaded and stepped once. ExecuTorch's own verification (InternalConsistency, the Python
# default) still lets some corrupted programs abort the process (SIGABRT in 2 of 20 programs with 8 random bytes
# changed, the manifest rewritten to match): such a file is first opened in a child process.
_TRUSTED: set[str] = set()
PROBE_ENV = "EDGESEQ_PROBE"  # set in the probe process itself


def _trust_dir() -> Path:
    return Path(os.environ.get("EDGESEQ_CACHE", Path.home() / ".cache" / "edgeseq")) / "verified"


def mark_trusted(sha256: str) -> None:
    _TRUSTED.add(sha256)
    with contextlib.suppress(OSError):
        d = _trust_dir()
        d.mkdir(parents=True, exist_ok=True)
        (d / sha256).touch()


def is_trusted(sha256: str) -> bool:
    return sha256 in _TRUSTED or (_trust_dir() / sha256).is_file()


_PROBE = r"""
import os, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import edgeseq
from edgeseq.errors import EdgeseqError
try:
    s = edgeseq.open(sys.argv[1])
    x = np.zeros((s.batch, 1), np.int64) if s.vocab_size else np.zeros((s.batch, s.d_in), np.float32)
    s.push(x)
except EdgeseqError as exc:
    print(" ".join(str(exc).split()))
    sys.exit(3)
"""


def probe(path: Path, manifest: dict) -> None:
    """Open ``path`` and run one step in a child process first, unless it is known (see ``_TRUSTED``): a program
    that aborts the runtime kills the child, not this process, and is refused with one line."""
    import signal
    import subprocess

    sha = manifest.get("file_sha256") or ""
    if os.environ.get(PROBE_ENV) or (sha and is_trusted(sha)):
        return
    r = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                       env={**os.environ, PROBE_ENV: "1"})
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name if -r.returncode in signal.Signals._value2member_map_ else str(-r.returncode)
        raise ArtifactError(f"{path}: the ExecuTorch runtime crashes on this program ({name} in a probe process); it "
                            "is not loaded here. Re-export it")
    if r.returncode == 3:
        raise ArtifactError((r.stdout.strip().splitlines() or [f"{path}: cannot be loaded"])[-1])
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArtifactError(f"{path}: the probe process failed ({last})")
    if sha:
        mark_trusted(sha)


@register_runtime
class ExecuTorchRuntime(Runtime):
    name = "executorch"
    python_module = "executorch.runtime"

    def verify(self, path: Path, manifest: dict) -> None:
        probe(path, manifest)

    def open_file(self, path: Path, manifest: dict, batch: int | None = None, threads: int | None = 1):
        custom_ops = manifest.get("runtime", {}).get("custom_ops") or ()
        return self.session(ExecuTorchBackend(path, ProgramIO(manifest), threads, custom_ops), manifest, path, batch)


def channels_last_indices(manifest: dict) -> frozenset[int]:
    """Which state inputs the program takes channels-last (manifest ``runtime.channels_last_state``; absent in
    manifests written before it: none)."""
    names = manifest.get("runtime", {}).get("channels_last_state") or []
    order = [t["name"] for t in manifest["state_spec"]["tensors"]]
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ArtifactError(f"manifest: channels_last_state names {unknown[0]!r}, which is not a state tensor")
    return frozenset(order.index(n) for n in names)

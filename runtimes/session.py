"""``StreamSession``: one streaming API over every runtime.

A session owns the recurrent state of ``batch`` independent streams. ``push(x_t)`` checks the input against
the manifest (shape, dtype, finite values) before the runtime sees it, runs one step and keeps the new
state. Numpy in gives numpy out; torch in gives torch out. ``state`` returns a :class:`StreamState` stamped
with the model's fingerprint, and assigning a state from another model is refused.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from edgeseq.errors import ArtifactError, ConcurrentUseError, InputError, NumericalError, ShapeError, StateMismatchError
from edgeseq.runtimes import fastpush
from edgeseq.runtimes.arena import StepArena
from edgeseq.step import StateSpec, check_token_ids


class Backend(Protocol):
    def run(self, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]: ...


@dataclass
class StreamState:
    """A snapshot of a session's state: tensors in ``StateSpec`` order, and the model fingerprint."""

    names: tuple[str, ...]
    tensors: tuple[np.ndarray, ...]
    fingerprint: str
    steps: int = 0

    def save(self, path: str | Path) -> None:
        """``.npz`` (numpy's format), or ``.esstate``: the native runtime's bytes (runtimes/native/edgeseq.h), which
        ``edgeseq-run --state-in`` and ``es_load_state`` read."""
        from edgeseq.fsutil import staging_dir
        import os

        path = Path(path)
        if path.suffix == ".esstate":
            with staging_dir(path.parent) as tmp:
                (tmp / "state").write_bytes(self.to_bytes())
                os.replace(tmp / "state", path)
            return
        with staging_dir(path.parent) as tmp:
            f = tmp / "state.npz"
            np.savez(
                f, __fingerprint__=np.array(self.fingerprint), __names__=np.array(list(self.names)),
                __steps__=np.array(self.steps), **{f"state_{n}": t for n, t in zip(self.names, self.tensors)},
            )
            os.replace(f, path)

    # the native state format (runtimes/native/edgeseq_runtime.cpp): "ESST", u32 version, u32 + fingerprint, i64
    # steps, u32 tensors; per tensor u32 + name, u32 dtype code, u32 rank, i64 dims, the values in C order
    _CODES = {"float32": 0, "float16": 1, "int8": 2, "int64": 3}

    def to_bytes(self) -> bytes:
        import struct

        fp = self.fingerprint.encode()
        out = [b"ESST", struct.pack("<II", 1, len(fp)), fp, struct.pack("<qI", self.steps, len(self.tensors))]
        for name, t in zip(self.names, self.tensors):
            a = np.ascontiguousarray(t)
            if a.dtype.name not in self._CODES:
                raise StateMismatchError(f"state tensor {name} of dtype {a.dtype} has no native code")
            nb = name.encode()
            out += [struct.pack("<I", len(nb)), nb, struct.pack("<II", self._CODES[a.dtype.name], a.ndim),
                    struct.pack(f"<{a.ndim}q", *a.shape), a.tobytes()]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "state") -> "StreamState":
        import struct

        from edgeseq.data.sizes import human

        dtypes = {v: k for k, v in cls._CODES.items()}
        try:
            if data[:4] != b"ESST" or struct.unpack_from("<I", data, 4)[0] != 1:
                raise ValueError("no ESST header")
            (flen,) = struct.unpack_from("<I", data, 8)
            at = 12 + flen
            fp = data[12:at].decode()
            steps, count = struct.unpack_from("<qI", data, at)
            at += 12
            names, tensors = [], []
            for _ in range(count):
                (nlen,) = struct.unpack_from("<I", data, at)
                name = data[at + 4:at + 4 + nlen].decode()
                at += 4 + nlen
                code, rank = struct.unpack_from("<II", data, at)
                if rank > 32:
                    raise ValueError(f"tensor {name!r} claims rank {rank}")
                dims = struct.unpack_from(f"<{rank}q", data, at + 8)
                at += 8 + 8 * rank
                dt = np.dtype(dtypes[code])
                if any(d < 0 for d in dims):
                    raise ValueError(f"tensor {name!r} claims shape {dims}")
                n = math.prod(dims) * dt.itemsize  # Python ints: a claim past int64 stays a claim, never wraps
                if at + n > len(data):
                    raise ValueError(f"tensor {name!r} claims {dims} {dt} ({human(n)}), but the file holds "
                                     f"{human(max(0, len(data) - at))} after its header: truncated")
                tensors.append(np.frombuffer(data[at:at + n], dtype=dt).reshape(dims).copy())
                names.append(name)
                at += n
            if at != len(data):
                raise ValueError("trailing bytes")
        except (ValueError, KeyError, struct.error, UnicodeDecodeError) as exc:
            raise StateMismatchError(f"{where}: not an edgeseq state file ({exc})") from None
        return cls(tuple(names), tuple(tensors), fp, int(steps))

    @classmethod
    def load(cls, path: str | Path) -> "StreamState":
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise StateMismatchError(f"{path}: cannot read it ({exc.strerror})") from None
        if head == b"ESST":
            from edgeseq.data.sizes import check_whole

            check_whole(Path(path), StateMismatchError, what="state file", factor=2)  # the bytes, then the tensors
            return cls.from_bytes(Path(path).read_bytes(), str(path))
        from edgeseq.data.sizes import check_npz
        from edgeseq.errors import InputError

        try:
            check_npz(Path(path))  # members' headers against their recorded sizes, before anything is allocated
        except InputError as exc:
            raise StateMismatchError(f"not an edgeseq state file: {exc}") from None
        try:
            with np.load(path, allow_pickle=False) as z:
                names = tuple(str(n) for n in z["__names__"])
                return cls(names, tuple(z[f"state_{n}"] for n in names), str(z["__fingerprint__"]), int(z["__steps__"]))
        except (OSError, KeyError, ValueError) as exc:
            raise StateMismatchError(f"{path}: not an edgeseq state file ({exc})") from None


class StreamSession:
    def __init__(
        self, backend: Backend, *, runtime: str, d_in: int, d_out: int, spec: StateSpec, batch: int,
        fingerprint: str, train_length: int | None = None, path: Path | None = None, vocab_size: int = 0,
    ):
        self._backend = backend
        self.runtime = runtime
        self.d_in, self.d_out = d_in, d_out
        self.spec = spec
        self.batch = batch
        self.fingerprint = fingerprint
        self.train_length = train_length
        self.path = path
        self.vocab_size = vocab_size  # > 0: inputs are token ids (batch, 1) int64
        self._warned_length = False
        self._busy = threading.Lock()  # held while a push runs: a second thread pushing at once is refused
        self._acquire, self._release = self._busy.acquire, self._busy.release  # no syscall uncontended
        self._warn_at = train_length + 1 if train_length else math.inf  # the step count that warns (once)
        # prepared once for the fast paths of push (a float32 numpy frame of the right shape): see _push
        self._names = spec.names
        self._shape = (batch, d_in)
        self._single_shape = (d_in,) if batch == 1 else None
        # token ids: a float frame is never the fast path's; a plain int is, at batch 1
        self._fast_shapes = {} if vocab_size else {self._shape: False,
                                                   **({self._single_shape: True} if batch == 1 else {})}
        self._token_fast = bool(vocab_size) and batch == 1
        self._arena: StepArena | None = None
        self._bound = None
        self.reset()
        self._float_state = tuple(i for i, t in enumerate(self._state) if t.dtype.kind == "f")
        self.backend = backend  # binds the fast path where the backend offers one (see the backend property)

    @property
    def backend(self):
        """The runtime backend under the session. Assigning one (a wrapper, say) binds the fast path anew: a
        backend with ``bind(arena)`` runs bound to the session's :class:`StepArena`, any other through ``run``."""
        return self._backend

    @backend.setter
    def backend(self, backend) -> None:
        self._backend = backend
        state = [t.copy() for t in self._state]
        self._arena, self._bound = None, None
        bind = getattr(backend, "bind", None)
        if bind is not None and StepArena.fits(np.float32, [t.dtype for t in state]):
            arena = StepArena((self.batch, 1) if self.vocab_size else self._shape, (self.batch, self.d_out),
                              [t.shape for t in state], np.int64 if self.vocab_size else np.float32)
            bound = bind(arena)
            if bound is not None:
                # per side c, what push needs, looked up once. The finite check is the side's sum, as a dot with
                # ones (0.33 us here, np.vdot 0.48, np.add.reduce 0.6): NaN and Inf carry through it, and a sum
                # (unlike a sum of squares) overflows only where the values themselves are near float32's limit;
                # x[...] = frame is the copy (0.4 us after a runtime call, np.copyto 0.6). Where the C extension is
                # built (runtimes/fastpush.py), the copy, the call and a check of the side's bits are one C call.
                ones = np.ones_like(arena.sides[0])
                self._sides = tuple(list(arena.state[c]) for c in (0, 1))
                self._bound = tuple(
                    (bound[c], arena.x[1 - c], arena.y[1 - c], arena.y[1 - c][0], arena.sides[1 - c].dot, ones,
                     1 - c, self._sides[1 - c], fastpush.side_step(arena.x[1 - c], bound[c], arena.sides[1 - c]))
                    for c in (0, 1))
                self._arena = arena
                self._cur = 0
        self._accept(state)

    @property
    def bound(self) -> bool:
        """Whether push runs bound to the session's arena (onnxruntime and ExecuTorch artifacts of float32 models:
        the runtime reads the frame and the state and writes the output and the next state in place)."""
        return self._arena is not None

    @property
    def delay(self) -> int:
        """Steps before the first valid output (0 for recurrent families)."""
        return self.spec.delay

    @property
    def ready(self) -> bool:
        """Whether the last output pushed out is valid: the first ``delay`` outputs of a stream are not (a
        continual network's output at step n is its offline output at step n - delay), nor, for a network with
        temporal strides, those between its outputs (``spec.output_stride``)."""
        return self.steps > 0 and self.spec.is_output(self.steps - 1)

    def reset(self) -> None:
        """Back to the initial state for every stream."""
        self._accept([t.numpy() for t in self.spec.init(self.batch)])
        self.steps = 0

    def _accept(self, new: list[np.ndarray]) -> None:
        """Make ``new`` the session's state: copied into the arena's other side, which becomes current (the side
        that was current, the state before, is left as it was), or kept as given where there is no arena."""
        if self._arena is None:
            self._state = new
            return
        n = 1 - self._cur
        for dst, src in zip(self._sides[n], new):
            np.copyto(dst, src)
        self._cur, self._state = n, self._sides[n]

    def push(self, x):
        """One step: ``x`` of shape (batch, d_in) (or (d_in,) when batch is 1), float32; returns y_t.

        Language models (``vocab_size > 0``) take token ids: integers of shape (batch, 1), (batch,) or a
        plain ``int`` when batch is 1.

        A session is one stream: pushed from two threads at once it raises :class:`ConcurrentUseError` (the two
        would interleave their frames in one state); use one session per thread. A non-finite value that appears
        in the output or the state (from finite inputs) raises :class:`NumericalError` naming the step and the
        state tensor, and the session keeps the state it had before that step.

        The fast path, inline here: a float32 numpy frame of the session's shape, for a model of features (or a
        plain ``int`` token id within the vocabulary, for a language model at batch 1), on a backend bound to the
        session's arena (runtimes/arena.py). Its checks are the slow path's
        (:meth:`_push_checked`), prepared at open: the frame is copied into the arena's free side (any strides),
        the runtime writes the output and the next state beside it, and one pass over that side is the finite check
        of all three: one C call for the three (runtimes/fastpush.py; numpy's where it is not built). Only when the
        side is not all finite are the arrays looked at one by one, to refuse the input (InputError) or name the
        state tensor that overflowed (NumericalError); the current side, the state before the step, is untouched
        until the step is accepted. Any other input (a torch tensor, token ids as an array, a frame of another dtype
        or shape) is checked one check at a time first (:meth:`_checked_frame`, each refusal its own message), then
        stepped the same way."""
        if not self._acquire(False):
            raise ConcurrentUseError(
                "push: this session is already running a step in another thread; a session is one stream (two "
                "threads feeding it interleave two streams): open one session per thread")
        try:
            bound = self._bound
            if bound is None:
                return self._push_arrays(x)
            as_torch = False
            if type(x) is not np.ndarray or x.dtype is not _F32:
                if type(x) is int and self._token_fast and 0 <= x < self.vocab_size:  # one token id, batch 1
                    single = True  # written by the broadcast below (the checked path names a bad id)
                else:  # checked one check at a time, then stepped bound as the fast path steps
                    x, single, as_torch = self._checked_frame(x)
            else:
                single = self._fast_shapes.get(x.shape)
                if single is None:
                    x, single, as_torch = self._checked_frame(x)
            # the step from side c (frame in, call, check: one C call), then the other side's frame, output, state
            call, xn, yn, y1, total, ones, n, new, step = bound[self._cur]
            if step is not None:
                finite = step(x)
            else:
                xn[...] = x
                call()
                finite = _isfinite(total(ones))
            if not finite:  # NaN or Inf somewhere in the frame, the output or the next state
                self._refuse_nonfinite(xn, yn, new)
            self._cur, self._state = n, new
            steps = self.steps = self.steps + 1
            if steps >= self._warn_at:
                self._length_warning(stacklevel=3)
            y = y1.copy() if single else yn.copy()
            return torch.from_numpy(y) if as_torch else y
        finally:
            self._release()

    def _push_arrays(self, x):
        """The fast path on a backend that is not bound to an arena (the eager runtime, a wrapped backend): the same
        checks as :meth:`push`'s, with the finite sums taken array by array."""
        if type(x) is not np.ndarray or x.dtype is not _F32 or self.vocab_size or not x.flags.c_contiguous:
            return self._push_checked(x)
        shape = x.shape
        if shape == self._shape:
            single = False
        elif shape == self._single_shape:
            x, single = x.reshape(self._shape), True
        else:
            return self._push_checked(x)
        y, new = self.backend.run(x, self._state)
        # sums of squares (one BLAS dot each): between two runtime calls np.add.reduce cost 4.7 us an array here,
        # np.vdot 1.8 us (a 1x8 GRU on onnxruntime; in a loop of its own either takes about 1 us)
        total = float(_vdot(x, x)) + float(_vdot(y, y))
        for i in self._float_state:
            a = new[i]
            total += float(_vdot(a, a))
        if total - total != 0.0:  # NaN or Inf somewhere (or a sum of squares past float32's range)
            self._refuse_nonfinite(x, y, new)
        self._accept(new)
        self.steps += 1
        if self.train_length and self.steps > self.train_length and not self._warned_length:
            self._length_warning()
        return y[0] if single else y

    def _refuse_nonfinite(self, arr: np.ndarray, y, new) -> None:
        """Raise for a NaN/Inf in the input (InputError) or one the step made (NumericalError); return when every
        value is finite after all (a sum that overflowed)."""
        if not self.vocab_size and not np.isfinite(arr).all():
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(arr))[:, 0]})
            raise InputError(f"push: input at step {self.steps} has NaN/Inf values (streams {bad[:5]})")
        bad = _first_nonfinite(y, new, self._names)
        if bad is not None:
            raise NumericalError(
                f"push: step {self.steps} made {bad} NaN/Inf from finite inputs (the model overflowed or diverged); "
                f"the session keeps its state from before this step (step {self.steps}): reset() starts over")

    def _length_warning(self, stacklevel: int = 4) -> None:
        self._warned_length = True
        self._warn_at = math.inf
        warnings.warn(f"stream passed the training length ({self.train_length} steps); outputs beyond it were never "
                      "trained", stacklevel=stacklevel)

    def _push_checked(self, x):
        """Every other input (a torch tensor, another dtype or shape, token ids, a strided array): checked one by
        one, each refusal with its own message."""
        arr, single, as_torch = self._checked_frame(x)
        y, new = self.backend.run(arr, self._state)
        bad = _first_nonfinite(y, new, self._names)
        if bad is not None:
            raise NumericalError(
                f"push: step {self.steps} made {bad} NaN/Inf from finite inputs (the model overflowed or diverged); "
                f"the session keeps its state from before this step (step {self.steps}): reset() starts over")
        self._accept(new)
        self.steps += 1
        if self.train_length and self.steps > self.train_length and not self._warned_length:
            self._length_warning()
        y = y[0] if single else y
        return torch.from_numpy(y) if as_torch else y

    def _checked_frame(self, x) -> tuple[np.ndarray, bool, bool]:
        """``x`` checked one check at a time (the refusals' own messages): the frame as a C-contiguous (batch, d_in)
        array, whether it came as one row (d_in,), and whether it came as a torch tensor."""
        as_torch = isinstance(x, torch.Tensor)
        if self.vocab_size and isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            x = np.array([x], dtype=np.int64)
        if as_torch:
            arr = x.detach().cpu().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
        else:
            raise ShapeError(f"push: expected a numpy array or a torch tensor, got {type(x).__name__}")
        if self.vocab_size:
            arr = self._token_ids(arr)
        elif arr.dtype != np.float32:
            hint = "x.float()" if as_torch else "x.astype(np.float32)"
            raise ShapeError(f"push: expected dtype float32, got {str(x.dtype).replace('torch.', '')} (use {hint})")
        single = arr.ndim == 1 and self.batch == 1
        if single:
            arr = arr[None]
        if arr.shape != (self.batch, self.d_in):
            alt = f" or ({self.d_in},)" if self.batch == 1 else ""
            raise ShapeError(f"push: expected shape ({self.batch}, {self.d_in}){alt}, got {tuple(x.shape)}")
        if not self.vocab_size and not np.isfinite(arr).all():
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(arr))[:, 0]})
            raise InputError(f"push: input at step {self.steps} has NaN/Inf values (streams {bad[:5]})")
        return np.ascontiguousarray(arr), single, as_torch

    def _token_ids(self, arr: np.ndarray) -> np.ndarray:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"push: this model takes token ids (integers), got {arr.dtype}")
        if arr.ndim == 1 and arr.shape[0] == self.batch and self.batch > 1:
            arr = arr[:, None]
        arr = arr.astype(np.int64, copy=False)
        check_token_ids(torch.from_numpy(arr), self.vocab_size, where="push: ", at=f" at step {self.steps}")
        return arr

    def run(self, xs):
        """Push every step of ``xs`` (T, batch, d_in) or (T, d_in); returns outputs stacked along T."""
        outs = [self.push(xs[t]) for t in range(len(xs))]
        return torch.stack(outs) if isinstance(xs, torch.Tensor) else np.stack(outs)

    @property
    def state(self) -> StreamState:
        return StreamState(self.spec.names, self._state_copy(), self.fingerprint, self.steps)

    @state.setter
    def state(self, value: StreamState) -> None:
        if not isinstance(value, StreamState):
            raise StateMismatchError(f"state must be a StreamState (from session.state), got {type(value).__name__}")
        if value.fingerprint != self.fingerprint:
            raise StateMismatchError(
                f"state belongs to another model (fingerprint {value.fingerprint[:12]}, this artifact {self.fingerprint[:12]})"
            )
        tensors = tuple(np.ascontiguousarray(t) for t in value.tensors)
        self.spec.validate(tuple(torch.from_numpy(t) for t in tensors), batch=self.batch)
        self._set_state(tensors, value.steps)
        self.steps = value.steps

    def _state_copy(self) -> tuple[np.ndarray, ...]:
        """The state's tensors, the caller's own copies."""
        return tuple(s.copy() for s in self._state)

    def _set_state(self, tensors: tuple[np.ndarray, ...], steps: int) -> None:
        """Make ``tensors`` (checked against the spec, C-contiguous) the state."""
        self._accept([t.copy() for t in tensors])


_reduce = np.add.reduce
_F32 = np.dtype(np.float32)
_vdot = np.vdot
_isfinite = math.isfinite


def _first_nonfinite(y: np.ndarray, state: list[np.ndarray], names: tuple[str, ...]) -> str | None:
    """Which of the state tensors (or the output) holds NaN/Inf, or None. The fast path adds every float array's sum
    into one Python float (NaN and Inf propagate; one reduction call per array, ~3 µs for an LSTM's four states and
    output); only when that total is not finite are the arrays looked at element-wise (a float32 sum of huge finite
    values can overflow: that is not a NaN/Inf in the arrays, and is not reported)."""
    arrays = [(f"state tensor {n!r}", np.asarray(t)) for n, t in zip(names, state)] + [("the output", np.asarray(y))]
    total = 0.0
    for _, a in arrays:
        if a.dtype.kind == "f" and a.size:
            total += float(_reduce(a, axis=None))
    if math.isfinite(total):
        return None
    for what, a in arrays:
        if a.dtype.kind == "f" and a.size and not bool(np.isfinite(a).all()):
            return what
    return None


def check_batch(manifest: dict, batch: int | None) -> int:
    fixed = manifest["batch"]
    if fixed == "dynamic":
        return 1 if batch is None else int(batch)
    if batch is not None and int(batch) != fixed:
        from edgeseq.manifest import rebatch_hint

        have, option = rebatch_hint(manifest, batch)
        raise ArtifactError(f"this {manifest['target']} artifact was exported for batch {have}; got batch {batch} "
                            f"(re-export with {option})")
    return int(fixed)

"""Many independent streams served by one batched runtime call per step: :class:`StreamPool`.

A pool holds ``slots`` streams in the rows of one batched state. Streams join (a free slot, its rows set to the
initial state) and leave (the slot freed; its state can be taken along as a batch-1 :class:`StreamState`) at any
step. A step takes frames for any subset of the active streams: the others' rows compute on a zero frame and are
then put back as they were, so a stream without a frame at a step is unchanged by it. Each stream's outputs are
exactly those of the same stream run alone (rows do not mix in any edgeseq family's step).

onnxruntime artifacts take any batch (dynamic): the call has ``slots`` rows. An ExecuTorch program has its batch
fixed at export; ``edgeseq export --batch 1,8,64`` writes one program per batch size, listed in one manifest, and
the pool runs the smallest of them with at least ``slots`` rows (rows past ``slots`` compute on zero frames and
are never read).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgeseq.errors import ConcurrentUseError, InputError, ShapeError, StateMismatchError
from edgeseq.runtimes.session import StreamState, _first_nonfinite, _isfinite


def pool_rows(path, slots: int) -> int:
    """Rows of the batched call for ``slots`` streams: ``slots`` for a dynamic batch (onnxruntime, eager), else the
    smallest batch the artifact has a program for that holds them."""
    from edgeseq import manifest as man
    from edgeseq.errors import ArtifactError

    if not isinstance(path, (str, Path)) or Path(path).is_dir():
        return slots
    _, _, data = man.resolve_artifact(path)
    have = man.batches(data)
    if have is None:
        return slots
    fits = [b for b in have if b >= slots]
    if not fits:
        listed, option = man.rebatch_hint(data, slots)
        raise ArtifactError(f"{path}: a pool of {slots} streams needs a program of batch >= {slots}; this "
                            f"{data['target']} artifact has batch {listed} (export with {option})")
    return fits[0]


class StreamPool:
    def __new__(cls, path=None, slots: int = 1, runtime: str | None = None):
        if cls is StreamPool and runtime == "native":  # the C runtime's pool (runtimes/inproc.py)
            from edgeseq.runtimes.inproc import NativePool

            return super().__new__(NativePool)
        return super().__new__(cls)

    def __init__(self, path: str | Path, slots: int, runtime: str | None = None):
        import edgeseq

        if slots < 1:
            raise ShapeError(f"a pool needs at least 1 slot, got {slots}")
        self._sess = edgeseq.open(path, runtime=runtime, batch=pool_rows(path, slots))
        s = self._sess
        self.slots, self.rows, self.d_in, self.d_out = slots, s.batch, s.d_in, s.d_out
        self.spec, self.fingerprint = s.spec, s.fingerprint
        if s.vocab_size:
            raise ShapeError("a pool of language models (token-id inputs) is not supported yet; use one session per stream")
        self._init = [np.asarray(t) for t in s.state.tensors]  # the initial state of every row
        self._active = np.zeros(self.rows, dtype=bool)
        self._active[slots:] = True  # rows past the slots: never free, never given a frame
        self._steps = [0] * self.rows  # a Python list: one += per frame is cheaper than a numpy index
        self._x = np.zeros((self.rows, self.d_in), np.float32)
        self._busy = threading.Lock()

    @property
    def _state(self) -> list[np.ndarray]:
        """The batched state: the session's (its arena's current side where it is bound)."""
        return self._sess._state

    # ------------------------------------------------------------------------------------------ membership
    def join(self, state: StreamState | None = None) -> int:
        """A free slot for a new stream, from the initial state or from ``state`` (a batch-1 state of this model,
        e.g. from :meth:`leave`). Returns the slot number."""
        free = np.flatnonzero(~self._active)
        if not len(free):
            raise ShapeError(f"all {self.slots} slots are taken; a stream must leave first")
        i = int(free[0])
        if state is not None:
            self._check_joining(state)
        for k, t in enumerate(self._state):
            t[i] = (self._init[k][i] if state is None else np.asarray(state.tensors[k])[0])
        self._active[i] = True
        self._steps[i] = 0 if state is None else state.steps
        return i

    def _check_joining(self, state: StreamState) -> None:
        """Refuse a state that is not a batch-1 state of this model."""
        if state.fingerprint != self.fingerprint:
            raise StateMismatchError(f"state belongs to another model (fingerprint {state.fingerprint[:12]})")
        if len(state.tensors) != len(self.spec.names) or any(np.asarray(t).shape[0] != 1 for t in state.tensors):
            raise StateMismatchError("join: expected a batch-1 state of this model (from leave or a batch-1 session)")

    def leave(self, slot: int) -> StreamState:
        """Free ``slot``; returns its state (batch 1), which :meth:`join` or a batch-1 session can resume."""
        self._check_slot(slot)
        st = StreamState(self.spec.names, tuple(t[slot:slot + 1].copy() for t in self._state), self.fingerprint,
                         int(self._steps[slot]))
        self._active[slot] = False
        return st

    @property
    def active(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self._active[: self.slots])]

    def steps(self, slot: int) -> int:
        self._check_slot(slot)
        return int(self._steps[slot])

    def ready(self, slot: int) -> bool:
        """Whether ``slot``'s last output is valid (as :attr:`StreamSession.ready`): not among the first ``delay``
        of its stream, nor, for a model with temporal strides, between its outputs (``spec.output_stride``)."""
        n = self.steps(slot)
        return n > 0 and self.spec.is_output(n - 1)

    def _check_slot(self, slot: int) -> None:
        if not (0 <= slot < self.slots) or not self._active[slot]:
            raise ShapeError(f"slot {slot} has no stream (active: {self.active})")

    # ------------------------------------------------------------------------------------------ stepping
    def step(self, frames: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """One batched call: ``frames`` maps slots to their frame (d_in,) float32; the other active streams wait
        (their state unchanged). Returns each given slot's output (d_out,)."""
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError("step: this pool is running a step in another thread; step it from one thread")
        try:
            return self._step(frames)
        finally:
            self._busy.release()

    def _step(self, frames: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """On a session bound to its arena (see StreamSession.push): the frames are written into the arena's free
        side (zeros in the rows without one), the runtime runs in place, one sum over that side checks the frames,
        the outputs and the next state at once, and the rows without a frame get their state back from the current
        side. Only a sum that is not finite looks further (:meth:`_refuse_nonfinite`), with every state kept."""
        if not frames:
            return {}
        sess = self._sess
        if sess._arena is None:
            return self._step_arrays(frames)
        call, xn, yn, _, total, ones, n, new, _ = sess._bound[sess._cur]
        partial = len(frames) != self.rows
        if partial:
            xn[...] = 0.0
        active, d_in, slots = self._active, self.d_in, self.slots
        for slot, f in frames.items():
            if not (type(slot) is int and 0 <= slot < slots and active[slot]):
                self._check_slot(slot)
            if type(f) is not np.ndarray or f.size != d_in:
                f = self._frame(slot, f)
            xn[slot] = f.reshape(d_in)
        call()
        if not _isfinite(total(ones)):
            self._refuse_nonfinite(frames, xn, yn, new)
        if partial:
            keep = np.ones(self.rows, dtype=bool)
            keep[list(frames)] = False
            for old, nxt in zip(sess._state, new):
                nxt[keep] = old[keep]
        sess._cur, sess._state = n, new
        steps = self._steps
        out = {}
        for slot in frames:
            steps[slot] += 1
            out[slot] = yn[slot].copy()
        return out

    def _frame(self, slot: int, f) -> np.ndarray:
        f = np.asarray(f, dtype=np.float32).reshape(-1)
        if f.shape != (self.d_in,):
            raise ShapeError(f"step: slot {slot}'s frame has {f.size} values; the model takes {self.d_in}")
        return f

    def _refuse_nonfinite(self, frames, x, y, new) -> None:
        """Raise for a frame with NaN/Inf (naming its slot) or a NaN/Inf the step made in a slot given a frame; return
        when the slots given frames are finite after all (a waiting row's throwaway step, a sum that overflowed)."""
        for slot in frames:
            if not np.isfinite(x[slot]).all():
                raise InputError(f"step: slot {slot}'s frame at its step {self._steps[slot]} has NaN/Inf values")
        given = np.zeros(self.rows, dtype=bool)
        given[list(frames)] = True
        bad = _first_nonfinite(y[given], [np.asarray(t)[given] for t in new], self.spec.names)
        if bad is not None:
            raise InputError(f"step: {bad} became NaN/Inf in one of slots {sorted(frames)}; their states are kept")

    def _step_arrays(self, frames: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """The same step on a session that is not bound to an arena: the backend's per-call run."""
        x = self._x
        x[:] = 0.0
        for slot, f in frames.items():
            self._check_slot(slot)
            f = self._frame(slot, f)
            if not np.isfinite(f).all():
                raise InputError(f"step: slot {slot}'s frame at its step {self._steps[slot]} has NaN/Inf values")
            x[slot] = f
        y, new = self._sess.backend.run(x, self._state)
        given = np.zeros(self.rows, dtype=bool)
        given[list(frames)] = True
        bad = _first_nonfinite(y[given], [np.asarray(t)[given] for t in new], self.spec.names)
        if bad is not None:
            raise InputError(f"step: {bad} became NaN/Inf in one of slots {sorted(frames)}; their states are kept")
        keep = ~given  # rows without a frame (waiting or free) keep their state
        out = []
        for old, nxt in zip(self._state, new):
            nxt = np.array(nxt, copy=True)
            if keep.any():
                nxt[keep] = old[keep]
            out.append(nxt)
        self._sess._accept(out)
        for slot in frames:
            self._steps[slot] += 1
        return {slot: y[slot].copy() for slot in frames}

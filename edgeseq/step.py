"""The step contract: ``y_t, state = step(x_t, state)`` with an explicit, constant-size state.

A :class:`StepModule` is an ``nn.Module`` whose ``forward(x_t, state)`` is a pure function of its
arguments: it never mutates ``state`` in place and keeps no hidden buffers between calls. Its
:class:`StateSpec` names every state tensor with its per-stream shape and dtype, so runtimes,
exporters and the manifest all describe the same state.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeseq.errors import InputError, ShapeError, StateMismatchError

State = tuple[torch.Tensor, ...]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
}


def dtype_name(dtype: torch.dtype) -> str:
    for name, dt in _DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"unsupported dtype {dtype}")


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(_DTYPES)}") from None


def check_token_ids(ids: torch.Tensor, vocab_size: int, *, where: str = "", at: str = "") -> None:
    """Raise :class:`InputError` for non-integer token ids or ids outside [0, vocab_size).

    ``where`` prefixes the message (``"push: "``); ``at`` follows the offending id (``" at step 7"``)."""
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise InputError(f"{where}token ids must be integers, got {str(ids.dtype).replace('torch.', '')}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise InputError(f"{where}token id {hi if hi >= vocab_size else lo}{at} is outside the vocabulary (0..{vocab_size - 1})")


@dataclass(frozen=True)
class StateTensor:
    """One state tensor: its name, its shape per stream (without the batch axis) and its dtype."""

    name: str
    shape: tuple[int, ...]  # per stream; the full tensor is (batch, *shape)
    dtype: str = "float32"
    fill: float = 0.0  # initial value of every element

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=torch_dtype(self.dtype)).element_size()


@dataclass(frozen=True)
class StateSpec:
    """The recurrent state of a step function.

    ``tensors`` are in the order the step takes and returns them. ``delay`` is the number of steps
    before the first valid output (0 for recurrent families; continual networks may have one): the output
    at step n is the parallel form's output at step n - delay. ``receptive_field`` is the number of input
    frames one output depends on (None: unbounded, as for recurrent families). ``output_stride``: a network
    with temporal strides (a continual CNN that downsamples time) gives a valid output every ``output_stride``
    steps: the output at step delay + k * output_stride is the parallel form's output k.
    """

    tensors: tuple[StateTensor, ...]
    delay: int = 0
    receptive_field: int | None = None
    output_stride: int = 1

    def is_output(self, n: int) -> bool:
        """Whether the step's output at step ``n`` (0-based) is a valid output of the parallel form."""
        return n >= self.delay and (n - self.delay) % self.output_stride == 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def bytes_per_stream(self) -> int:
        """Bytes of state one stream carries (constant in the stream's length)."""
        return sum(t.nbytes for t in self.tensors)

    def shapes(self, batch: int | str = "batch") -> list[tuple]:
        return [(batch, *t.shape) for t in self.tensors]

    def init(self, batch: int, device: torch.device | str | None = None) -> State:
        return tuple(
            torch.full((batch, *t.shape), t.fill, dtype=torch_dtype(t.dtype), device=device) for t in self.tensors
        )

    def validate(self, state: State, batch: int | None = None) -> None:
        """Raise :class:`StateMismatchError` unless ``state`` fits this spec."""
        if not isinstance(state, (tuple, list)) or len(state) != len(self.tensors):
            got = len(state) if isinstance(state, (tuple, list)) else type(state).__name__
            raise StateMismatchError(f"state has {got} tensors, this model expects {len(self.tensors)} ({', '.join(self.names)})")
        for spec, t in zip(self.tensors, state):
            b = t.shape[0] if t.dim() else None
            if tuple(t.shape[1:]) != spec.shape or (batch is not None and b != batch):
                want = (batch if batch is not None else "batch", *spec.shape)
                raise StateMismatchError(f"state tensor {spec.name!r}: expected shape {want}, got {tuple(t.shape)}")
            if t.dtype != torch_dtype(spec.dtype):
                raise StateMismatchError(f"state tensor {spec.name!r}: expected dtype {spec.dtype}, got {dtype_name(t.dtype)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay": self.delay,
            "receptive_field": self.receptive_field,
            "output_stride": self.output_stride,
            "bytes_per_stream": self.bytes_per_stream,
            "tensors": [
                {"name": t.name, "shape": ["batch", *t.shape], "dtype": t.dtype, "fill": t.fill, "bytes_per_stream": t.nbytes}
                for t in self.tensors
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StateSpec":
        tensors = []
        for t in d["tensors"]:
            shape = t["shape"]
            if not shape or shape[0] != "batch":
                raise ValueError(f"state tensor {t.get('name')!r}: shape must start with 'batch', got {shape}")
            tensors.append(StateTensor(t["name"], tuple(int(s) for s in shape[1:]), t["dtype"], float(t.get("fill", 0.0))))
        rf = d.get("receptive_field")
        return cls(tuple(tensors), int(d.get("delay", 0)), None if rf is None else int(rf), int(d.get("output_stride", 1)))


@dataclass(frozen=True)
class StepInfo:
    """What a step module records about where it came from (goes into the manifest)."""

    family: str
    config: dict[str, Any] = field(default_factory=dict)
    task: str = "sequence"
    train_length: int | None = None


class StepModule(nn.Module):
    """Base class of constant-memory step functions.

    Subclasses implement :meth:`_step` (pure: returns new tensors, never writes into ``state``) and set
    ``d_in``, ``d_out``, ``state_spec`` and ``info``. ``forward(x_t, state)`` checks shapes, then calls
    :meth:`step`. A step with ``vocab_size > 0`` takes token ids: x is (batch, 1) int64.
    """

    d_in: int
    d_out: int
    state_spec: StateSpec
    info: StepInfo
    vocab_size: int = 0
    # the dtype the state's own update arithmetic runs in when a scheme computes in another dtype (fp16): None
    # means the compute dtype. A step whose state is an unbounded running sum sets float32 (Aaren's u and w grow
    # with the stream: in float16 every increment below 2^-11 of the sum is lost, and 65,504 overflows)
    state_math_dtype: torch.dtype | None = None

    @property
    def input_dtype(self) -> str:
        return "int64" if self.vocab_size else "float32"

    def example_input(self, steps: int | None, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random inputs (steps, batch, d_in), or (batch, d_in) when ``steps`` is None: standard normal
        features, or token ids drawn uniformly from the vocabulary."""
        shape = (batch, self.d_in) if steps is None else (steps, batch, self.d_in)
        if self.vocab_size:
            return torch.randint(0, self.vocab_size, shape, generator=generator)
        return torch.randn(shape, generator=generator)

    def image_states(self) -> tuple[str, ...]:
        """Names of the state tensors that hold image frames (C, H, W): runtimes whose kernels work channels-last
        may store them so (the ExecuTorch exporter does). None by default; a 3D continual network's buffers."""
        return ()

    def init_state(self, batch: int = 1) -> State:
        """The initial state for ``batch`` independent streams."""
        device = next(iter(self.parameters()), torch.empty(0)).device
        return self.state_spec.init(batch, device=device)


    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:  # pragma: no cover - abstract
        """The family's step on float state; subclasses implement it."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """``y_t, state = step(x_t, state)`` without input checks (exporters trace this)."""
        # edgeseq.quant installs a ``precision`` submodule when the step computes in another dtype (fp16) or a state
        # precision policy stores some state tensors in another dtype: it maps the input and stored state to what
        # ``_step`` computes with, and the results back (quant/precision.py). Without one, ``_step`` runs as is.
        prec = self._modules.get("precision")
        if prec is None:
            return self._step(x, state)
        return prec(self._step, x, state)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if x.dim() != 2 or x.shape[1] != self.d_in:
            raise ShapeError(f"step input: expected shape (batch, {self.d_in}), got {tuple(x.shape)}")
        if self.vocab_size:
            check_token_ids(x, self.vocab_size)
        elif not x.is_floating_point():
            raise ShapeError(f"step input: expected floating-point features, got {str(x.dtype).replace('torch.', '')}")
        if not torch.compiler.is_compiling():
            self.state_spec.validate(state, batch=x.shape[0])
        return self.step(x, tuple(state))

    def fingerprint(self) -> str:
        """sha256 of the family, config and every weight (names, dtypes, shapes, bytes)."""
        h = hashlib.sha256()
        h.update(json.dumps({"family": self.info.family, "config": self.info.config}, sort_keys=True).encode())
        for name, t in sorted(self.state_dict().items()):
            t = t.detach().contiguous().cpu()
            h.update(f"{name}:{dtype_name(t.dtype)}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # (0-dim: a BatchNorm's count)
        return h.hexdigest()


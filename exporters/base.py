"""What every exporter shares: the flat step wrapper, the export flow, rollout validation, the manifest.

An exporter only knows how to write its file (:meth:`Exporter.write`); :func:`export` does the rest the same
way for every target: convert if needed, write under a temporary name, run the artifact on its runtime
against eager over a long rollout with the state fed back, record the error in the manifest, and move the
files into place only if the error is within tolerance.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgeseq._version import __version__
from edgeseq.checkpoint import check_finite
from edgeseq.errors import ConfigError, ParityError, ShapeError
from edgeseq.fsutil import commit_files, staging_dir
from edgeseq.flops import step_cost
from edgeseq.quant.api import quant_manifest
from edgeseq.manifest import SCHEMA_VERSION, SUFFIX, file_sha256, io_names, manifest_path_for
from edgeseq.parity import compare
from edgeseq.registry import Registry
from edgeseq.step import StepModule, check_token_ids

RNN_OPS = ("timed", "fused", "gates")  # how the onnx target writes recurrent cells (export's rnn_ops)
DEFAULT_TOLERANCE = 1e-4  # scaled error: abs error / max(1, |reference|), see edgeseq.parity


class FlatStep(nn.Module):
    """``forward(x, state) -> (y, *next_state)``: graph inputs flatten to ``x, state_0, ...``, outputs to ``y, ...``.

    ``drop``: indices of next-state tensors left out of the outputs (the passed-through ones, see
    :func:`passthrough_states`); the outputs are then ``y`` and the other next-state tensors in state order."""

    def __init__(self, step: StepModule, drop: frozenset[int] = frozenset()):
        super().__init__()
        self.inner = step
        self.drop = frozenset(drop)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        y, new = self.inner.step(x, tuple(state))
        return (y, *(t for i, t in enumerate(new) if i not in self.drop))


def passthrough_states(step: StepModule, batch: int = 1) -> dict[int, int]:
    """Next-state tensors that are an input state tensor unchanged: ``{next index: input index}``.

    A continual network's ring buffer shifts by renaming (``buf0' = buf1``): the step returns the very tensor it
    was given. A program that returns such a tensor makes its runtime copy it out (and in) every call for nothing;
    the ExecuTorch exporter leaves them out of the program's outputs and the runtime passes them along itself.
    Found by identity on one eager step (a pure step returns a given tensor for every input, or never)."""
    state = tuple(t.clone() for t in step.init_state(batch))
    with torch.no_grad():
        _, new = step.step(step.example_input(None, batch), state)
    where = {id(t): j for j, t in enumerate(state)}
    return {i: where[id(t)] for i, t in enumerate(new) if id(t) in where}


class Exporter:
    """One export target. Subclasses set the class attributes and implement :meth:`write`."""

    target: str = ""
    suffix: str = ""
    runtime: str = ""  # the runtime that validates and runs the artifact
    dynamic_batch: bool = False
    extra: str = ""  # the pip extra that provides the toolchain

    def write(self, step: StepModule, path: Path, batch: int, **options: Any) -> dict[str, Any]:
        """Write the artifact to ``path``; return manifest fields: ``runtime`` and ``graph``. ``options``: the
        target's own export options (the onnx target's ``rnn_ops``); a target ignores those it does not have."""
        raise NotImplementedError


EXPORTERS: Registry[Exporter] = Registry("export target")


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    EXPORTERS.register(cls.target, cls())
    return cls


@dataclass
class Artifact:
    path: Path
    manifest_path: Path
    manifest: dict[str, Any]

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest["parity"]


def resolve_out(out: str | Path, suffix: str) -> Path:
    out = Path(out)
    if out.suffix == suffix:
        return out
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / f"model{suffix}"
    return out.with_name(out.name + suffix)


def export(
    step: nn.Module,
    out: str | Path,
    target: str = "onnx",
    *,
    batch: int = 1,
    steps: int = 2000,
    tolerance: float | None = None,
    inputs: np.ndarray | torch.Tensor | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    more_batches: Sequence[int] = (),
    model: nn.Module | None = None,
    rnn_ops: str = "timed",
    custom_ops: bool = False,
) -> Artifact:
    """Export a step module (or a convertible model) to ``target`` and validate it.

    ``out`` is a path stem (``out/lstm`` -> ``out/lstm.onnx`` + ``out/lstm.onnx.edgeseq.json``), a file with the
    target's suffix, or an existing folder. ``batch`` fixes the batch of targets without a dynamic batch
    (ExecuTorch) and is the validation batch otherwise. The rollout uses ``inputs`` (T, batch, d_in) or, by
    default, ``steps`` standard-normal inputs drawn with ``seed``. Raises :class:`ParityError`, writing
    nothing, when the artifact's scaled error exceeds ``tolerance`` (default 1e-4; for a step quantized with
    ``edgeseq.quant.quantize_``, the scheme's own default: the artifact is checked against the eager quantized
    step, and its state outputs against the state precision policy). Where a step with int8 activations parts from
    the eager quantized step at a rounding (an activation on the other side of a boundary it lay within a few
    thousandths of a bin of; one int8 step of one activation can move a model's output past the tolerance), the
    artifact is run from the eager state at every step instead, and each step must agree within 1e-4 as computed or
    once such roundings are taken the other way (:mod:`edgeseq.quant.flips`; ``parity.stepwise`` in the manifest).

    ``more_batches``: for a target whose batch is fixed per program (ExecuTorch), one more program per batch size,
    each validated as the first and written beside it with its own manifest (``model.b8.pte`` +
    ``model.b8.pte.edgeseq.json``); the first manifest lists them (``batch_programs``), so that
    ``edgeseq.open(path, batch=8)`` and :class:`edgeseq.StreamPool` find them. All or nothing is written.

    ``model``: the model the step was converted from (implied when ``step`` is a model, converted here). Its own
    forward over the validation stream is then the reference of a second check, the artifact against the model
    (``model_parity`` in the manifest; enforced with the same tolerance for a float step, recorded for a quantized
    one). ``conversion_proof`` in the manifest is the step's proof at conversion (:mod:`edgeseq.proof`).

    ``rnn_ops`` (onnx target): how recurrent cells (LSTM, GRU, Elman, in any step) are written: ``"timed"`` writes
    both ONNX's fused LSTM/GRU/RNN ops and the cells' gates, runs both on onnxruntime and keeps the faster
    (``runtime.rnn_ops`` in the manifest records both times); ``"fused"`` or ``"gates"`` asks for one. The kept
    file is validated like any other.

    ``custom_ops`` (executorch target): the step calls edgeseq's own operators where it has one (a Mamba-1 or
    Mamba-2 layer's scan update, :mod:`edgeseq.ops`) and the program calls their kernels, ``edgeseq::*.out``
    (``runtime.custom_ops`` in the manifest). Faster, but the program then runs only where those kernels are
    registered: edgeseq's runtimes (``executorch`` compiles and loads them, ``native`` links them) or an app that
    links ``libedgeseq_kernels`` (docs/custom-ops.md). Validated against the step's own arithmetic, as any export.
    """
    from edgeseq.convert import convert

    exporter = EXPORTERS.get(target)
    note = progress or (lambda _msg: None)
    if not isinstance(step, StepModule):
        model = step if model is None else model
        step = convert(step)
    step = step.eval()
    quant = getattr(step, "quantization", None)
    if quant is not None:
        from edgeseq.quant.config import check_target

        scheme = check_target(quant, target)  # before any work: a scheme the target cannot run
        tolerance = scheme.tolerance if tolerance is None else tolerance
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    check_finite(dict(step.state_dict()), where="step module")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if rnn_ops not in RNN_OPS:
        raise ConfigError(f"rnn_ops must be {', '.join(RNN_OPS[:-1])} or {RNN_OPS[-1]}, got {rnn_ops!r}")
    if custom_ops and target != "executorch":
        raise ConfigError(f"custom_ops is an executorch option (edgeseq's ExecuTorch kernels); {target} artifacts "
                          "use their runtime's standard operators only")
    more = sorted({int(b) for b in more_batches} - {batch})
    if more and exporter.dynamic_batch:
        raise ConfigError(f"{target} artifacts take any batch: more batch sizes ({', '.join(map(str, more))}) are for "
                          "targets with a fixed batch (executorch)")
    if more and more[0] < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {more[0]}")
    x = _rollout_inputs(step, inputs, steps, batch, seed)

    path = resolve_out(out, exporter.suffix)
    man_path = manifest_path_for(path)
    with staging_dir(path.parent) as tmp:
        options = {"rnn_ops": rnn_ops, "custom_ops": custom_ops}
        manifest = _write_validated(step, exporter, tmp / path.name, batch, x, tolerance, note, inputs, seed, model,
                                    options)
        moves = [(tmp / path.name, path)]
        written = [manifest]
        if more:
            manifest["batch_programs"] = []
        for b in more:
            name = batch_program_name(path.name, exporter.suffix, b)
            xb = _rollout_inputs(step, None if inputs is None else _tile_rows(x, b), steps, b, seed)
            m = _write_validated(step, exporter, tmp / name, b, xb, tolerance, note, inputs, seed, model, options)
            (tmp / (name + SUFFIX)).write_text(_json(m))
            moves += [(tmp / name, path.with_name(name)), (tmp / (name + SUFFIX), path.with_name(name + SUFFIX))]
            manifest["batch_programs"].append({"batch": b, "file": name, "file_sha256": m["file_sha256"],
                                               "max_scaled_error": m["parity"]["max_scaled_error"]})
            written.append(m)
        (tmp / man_path.name).write_text(_json(manifest))
        commit_files(moves + [(tmp / man_path.name, man_path)])
    if exporter.runtime == "executorch":  # validated in this process: no probe when it is opened again
        from edgeseq.runtimes.et import mark_trusted

        for m in written:
            mark_trusted(m["file_sha256"])
    return Artifact(path, man_path, manifest)


def batch_program_name(main: str, suffix: str, batch: int) -> str:
    """``model.pte`` -> ``model.b8.pte``: the program for batch 8 beside the first one."""
    return f"{main[: -len(suffix)] if main.endswith(suffix) else main}.b{batch}{suffix}"


def _tile_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """The user's validation streams (T, b, d) repeated over ``rows`` rows."""
    reps = -(-rows // x.shape[1])
    return x.repeat(1, reps, 1)[:, :rows]


def _write_validated(step: StepModule, exporter: Exporter, tmp_model: Path, batch: int, x: torch.Tensor,
                     tolerance: float, note, inputs, seed: int, model: nn.Module | None = None,
                     options: dict | None = None) -> dict:
    """Write one program at ``batch`` to ``tmp_model``, run it beside the eager step over ``x`` (and the artifact's
    outputs against ``model``'s own, when given) and return its manifest with the parity; :class:`ParityError`
    past ``tolerance``."""
    from edgeseq.runtimes import RUNTIMES

    target, quant = exporter.target, getattr(step, "quantization", None)
    note(f"exporting to {target}" + (f" (batch {batch})" if not exporter.dynamic_batch and batch > 1 else ""))
    info = exporter.write(step, tmp_model, batch, **(options or {}))
    manifest = build_manifest(step, exporter, info, tmp_model.name, tmp_model, batch)
    if quant is not None:
        from edgeseq.quant.verify import enforce

        manifest["quantization"]["state_check"] = info.get("state_check")
        enforce(info.get("state_check") or [], target)
    note(f"validating on {exporter.runtime} over {x.shape[0]} steps")
    session = RUNTIMES.get(exporter.runtime).open_file(tmp_model, manifest, batch=x.shape[1])
    report, state_err, state_scaled, outputs = validate_rollout(step, session, x)
    err = report.max_scaled_error
    manifest["parity"] = {
        **report.summary(),
        "what": f"{target} on {exporter.runtime} vs eager {'quantized ' if quant is not None else ''}step",
        "final_state_max_abs_error": state_err,
        "final_state_max_scaled_error": state_scaled,
        "tolerance": tolerance,
        "inputs": "user-supplied" if inputs is not None else (
            f"uniform token ids, seed {seed}" if step.vocab_size else f"standard normal, seed {seed}"),
    }
    parted = not (err <= tolerance and state_scaled <= tolerance)
    audit = _rounding_audit(step, session, x, tolerance, note) if parted and quant is not None else None
    if audit is not None and audit.passed:
        # every step proven from the eager state; the free-running streams parted at a rounding (quant/flips.py)
        manifest["parity"]["free_running_within_tolerance"] = False
        manifest["parity"]["stepwise"] = audit.summary()
    elif parted:
        sens = float64_sensitivity(step, x) if quant is None else 0.0
        why = (f"; the eager step itself is that sensitive: float32 and float64 eager runs differ by {sens:.3g} (scaled) "
               "over the same stream, so the model amplifies rounding (chaotic on this input) and no runtime can "
               "match it step for step" if sens > tolerance else "")
        at = f" (the batch-{batch} program)" if not exporter.dynamic_batch and batch > 1 else ""
        if audit is not None:
            u = audit.unexplained
            why = (f"; run from the eager state at every step, it differs at step {u['step']} by {u['scaled_error']:.3g}, "
                   f"past {audit.tolerance:g}, and no activation rounded the other way explains it")
        raise ParityError(
            f"{target} artifact{at} disagrees with eager: scaled output error {err:.3g} (final state {state_scaled:.3g}) "
            f"over {x.shape[0]} steps exceeds tolerance {tolerance:g} (worst at step {report.worst_step}){why}; nothing written"
        )
    if model is not None:
        manifest["model_parity"] = _model_parity(model, step, x, outputs, target, exporter.runtime, tolerance,
                                                 enforce=quant is None)
    return manifest


def _rounding_audit(step: StepModule, session, x: torch.Tensor, tolerance: float, note):
    """For a step that rounds activations to int8 (QuantLinear): the artifact run from the eager state at every step
    of ``x``, each step within the float tolerance or explained by activations rounded the other way at a boundary
    (edgeseq.quant.flips). None for a step without such roundings (nothing to explain)."""
    from edgeseq.quant.flips import audit
    from edgeseq.quant.qlinear import QuantLinear

    if not any(isinstance(m, QuantLinear) for m in step.modules()):
        return None
    note(f"the free-running streams part: checking each of {x.shape[0]} steps from the eager state")
    return audit(step, session.backend.run, x, min(tolerance, DEFAULT_TOLERANCE))


def _model_parity(model: nn.Module, step: StepModule, x: torch.Tensor, outputs: np.ndarray, target: str,
                  runtime: str, tolerance: float, enforce: bool) -> dict:
    """The artifact's outputs (T, batch, d_out) over the validation stream x (T, batch, d_in) against the model's."""
    from edgeseq.proof import against_model

    report, (frame, row, index, ref, val) = against_model(
        model, step, x.transpose(0, 1), torch.from_numpy(outputs), what=f"{target} on {runtime} vs the model itself")
    extra = {}
    if enforce and not report.max_scaled_error <= tolerance:
        from edgeseq.proof import against_float64_model

        # where the model's own float32 forward is what drifts (a log-space scan whose sums grow without bound), the
        # artifact is held to the same model run in float64, as the proof at conversion does; kept and recorded
        off64 = against_float64_model(model, step, x.transpose(0, 1), torch.from_numpy(outputs))
        if off64 is not None and off64 <= tolerance:
            extra["against_float64_model"] = off64
    if enforce and not report.max_scaled_error <= tolerance and not extra:
        raise ParityError(
            f"{target} artifact disagrees with {type(model).__name__} itself: output [{index}] of stream {row} at step "
            f"{frame} is {val:.6g}, the model gives {ref:.6g} (scaled error {report.max_scaled_error:.3g} over "
            f"{x.shape[0]} steps > tolerance {tolerance:g}); nothing written")
    return {**report.summary(), "delay": step.state_spec.delay, "tolerance": tolerance,
            "enforced": enforce, **extra}


def _rollout_inputs(step: StepModule, inputs, steps: int, batch: int, seed: int) -> torch.Tensor:
    if inputs is None:
        return step.example_input(steps, batch, torch.Generator().manual_seed(seed))
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    x = x.long() if step.vocab_size else x.float()
    if x.dim() == 2:
        x = x[:, None, :]
    if x.dim() != 3 or x.shape[2] != step.d_in:
        raise ShapeError(f"validation inputs: expected (T, batch, {step.d_in}), got {tuple(x.shape)}")
    if step.vocab_size:
        check_token_ids(x, step.vocab_size)
    return x


def float64_sensitivity(step: StepModule, x: torch.Tensor) -> float:
    """Max scaled difference between the eager step in float32 and in float64 over ``x``: how much the model itself
    amplifies rounding. Used to explain a failed validation (0.0 when the step cannot run in float64)."""
    import copy

    try:
        s64 = copy.deepcopy(step).double()
        a, b = step.init_state(x.shape[1]), tuple(t.double() if t.is_floating_point() else t for t in step.init_state(x.shape[1]))
        worst = 0.0
        with torch.no_grad():
            for t in range(x.shape[0]):
                ya, a = step.step(x[t], a)
                yb, b = s64.step(x[t].double() if x.is_floating_point() else x[t], b)
                d = (ya.double() - yb).abs() / yb.abs().clamp_min(1.0)
                worst = max(worst, float(d.max()))
        return worst
    except Exception:  # a step with dtype-specific parts: no diagnosis, the failure stands as is
        return 0.0


def validate_rollout(step: StepModule, session, x: torch.Tensor):
    """Run eager and the runtime side by side over x: (T, batch, d_in), each feeding its own state back."""
    import warnings

    state = step.init_state(x.shape[1])
    ref, got = [], []
    xn = x.numpy()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the validation stream may pass the training length on purpose
        for t in range(x.shape[0]):
            y, state = step.step(x[t], state)
            ref.append(y.numpy())
            got.append(session.push(xn[t]))
    report = compare(np.stack(ref), np.stack(got), what="artifact vs eager", delay=step.state_spec.delay)
    final = session.state.tensors
    state_err, state_scaled = 0.0, 0.0
    for got_t, ref_t in zip(final, state):
        if got_t.size:
            ref_np = ref_t.numpy()
            diff = float(np.abs(got_t - ref_np).max())
            state_err = max(state_err, diff)
            state_scaled = max(state_scaled, diff / max(1.0, float(np.abs(ref_np).max())))
    return report, state_err, state_scaled, np.stack(got)


def build_manifest(step: StepModule, exporter: Exporter, info: dict, file_name: str, file_path: Path, batch: int) -> dict:
    spec = step.state_spec
    in_names, out_names = io_names(spec)
    b: Any = "dynamic" if exporter.dynamic_batch else batch
    inputs = [{"name": "x", "shape": ["batch", step.d_in], "dtype": step.input_dtype}] + [
        {"name": n, "shape": ["batch", *t.shape], "dtype": t.dtype} for n, t in zip(in_names[1:], spec.tensors)
    ]
    outputs = [{"name": "y", "shape": ["batch", step.d_out], "dtype": "float32"}] + [
        {"name": n, "shape": ["batch", *t.shape], "dtype": t.dtype} for n, t in zip(out_names[1:], spec.tensors)
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "edgeseq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "family": step.info.family,
        "config": step.info.config,
        "task": step.info.task,
        "train_length": step.info.train_length,
        "vocab_size": step.vocab_size or None,
        "target": exporter.target,
        "file": file_name,
        "file_sha256": file_sha256(file_path),
        "file_bytes": file_path.stat().st_size,
        "runtime": info["runtime"],
        "batch": b,
        "inputs": inputs,
        "outputs": outputs,
        "state_spec": spec.to_dict(),
        "quantization": quant_manifest(step),
        "pruning": getattr(step, "pruning", None),
        "fingerprint": step.fingerprint(),
        "graph": info.get("graph", {}),
        "cost": step_cost(step),
        "conversion_proof": getattr(step, "model_parity", None),
        "parity": None,
    }


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"

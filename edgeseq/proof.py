"""The proof every step carries out of :func:`edgeseq.convert`: the step, fed its own state back, against the model.

A rewrite that is wrong (a stream operation off by a frame, a module whose own ``forward`` was taken for its base
class's) must never leave the converter. :func:`prove` runs the step beside the model's own forward over

* the example the user gave (graph converter), in the model's layout, and
* a longer stream made from it: the example, then its frames tiled to ``delay + PROOF_FRAMES`` frames (at least
  twice the example) with seeded noise of its scale (so the stream is not periodic), beside a stream of noise of
  that scale; or, for a registered converter, ``REGISTERED_FRAMES`` frames of the step's own example input
  (standard normal features, uniform token ids),

and raises :class:`~edgeseq.errors.ParityError` naming the worst output element, its frame and the error when the
scaled error (abs error / max(1, |model output| at that frame), see :mod:`edgeseq.parity`) passes ``tolerance``.
The summary is kept on the step (``step.model_parity``) and written into every manifest exported from it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from edgeseq.errors import ParityError, ShapeError
from edgeseq.parity import compare, rollout
from edgeseq.step import StepModule

PROOF_FRAMES = 256  # frames of the longer proof stream after the delay
REGISTERED_FRAMES = 128  # a registered converter's proof stream (each family also has its own long parity tests)
PROOF_TOLERANCE = 1e-4  # float32: scaled error (edgeseq.parity); the exporters' default tolerance as well


def model_outputs(model: nn.Module, step: StepModule, x: torch.Tensor) -> torch.Tensor:
    """The model's own outputs on step inputs x: (batch, T, d_in), laid out as the step's (batch, T, d_out)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a stream may pass the training length on purpose
            if callable(getattr(step, "frames_of", None)):  # a traced model: its own layout in and out
                return step.outputs_of(model(step.inputs_of(x)))
            from edgeseq.converters import reference_outputs

            return reference_outputs(model, x)
    finally:
        model.train(was)


def against_model(model: nn.Module, step: StepModule, x: torch.Tensor, got: torch.Tensor, *, what: str):
    """(report, worst) of step outputs ``got`` (T, batch, d_out) against the model's on step inputs x (batch, T, d_in):
    the step's output at ``delay + k * stride`` is the model's output k. ``worst``: (frame, batch row, output index,
    model value, step value) of the largest scaled error."""
    # one stream at a time: a program exported at batch 1 (a .pt2 with a fixed h0) takes no other batch
    ref = torch.cat([model_outputs(model, step, x[i:i + 1]) for i in range(x.shape[0])])  # (B, T_out, d_out)
    delay, stride = step.state_spec.delay, step.state_spec.output_stride
    got = got[delay::stride]
    if ref.shape[1] < got.shape[0] or ref.shape[0] != got.shape[1] or ref.shape[2] != got.shape[2]:
        raise ShapeError(f"{what}: the model gave outputs of shape {tuple(ref.shape)} (batch, T, d); the step "
                         f"{tuple(got.transpose(0, 1).shape)} after its delay {delay}")
    ref = ref[:, : got.shape[0]].transpose(0, 1)  # (T, B, d)
    finite = torch.isfinite(ref).reshape(ref.shape[0], -1).all(dim=1)
    overflow = None
    if not bool(finite.all()):
        # the model itself overflows (a state that grows without bound): nothing past its first non-finite output
        # can be compared, so the proof covers the frames before it and says so
        overflow = int((~finite).nonzero()[0, 0])
        ref, got = ref[:overflow], got[:overflow]
    report = compare(ref, got, what=what)
    report.model_overflow_frame = None if overflow is None else overflow * stride + delay
    r, g = ref.double().numpy(), got.double().numpy()
    scaled = np.abs(r - g) / np.maximum(np.abs(r).reshape(r.shape[0], -1).max(axis=1), 1.0)[:, None, None]
    scaled = np.where(np.isnan(scaled), np.inf, scaled)
    t, b, i = np.unravel_index(int(np.argmax(scaled)), scaled.shape) if scaled.size else (0, 0, 0)
    worst = (int(t) * stride + delay, int(b), int(i), float(r[t, b, i]) if r.size else 0.0, float(g[t, b, i]) if g.size else 0.0)
    if scaled.size and not np.isfinite(g).all():
        report.max_scaled_error = report.max_abs_error = float("inf")
    return report, worst


def proof_stream(step: StepModule, example: torch.Tensor | None, seed: int = 0) -> tuple[str, torch.Tensor, int]:
    """(what, the proof stream as step inputs (batch, T, d_in), the example's length or 0). With an example: row 0
    is the example followed by its frames tiled with noise, row 1 seeded noise of the example's scale, one rollout
    for both (a step costs the same for two rows as for one)."""
    g = torch.Generator().manual_seed(seed)
    delay, stride = step.state_spec.delay, step.state_spec.output_stride
    if example is None or not callable(getattr(step, "frames_of", None)):
        length = delay + REGISTERED_FRAMES * stride
        kind = "uniform token ids" if step.vocab_size else "standard normal inputs"
        return f"{length} frames of {kind}", step.example_input(length, 1, g).transpose(0, 1).contiguous(), 0
    frames = step.frames_of(example[:1].detach().float())  # (1, T, d_in)
    T = frames.shape[1]
    length = max(delay + PROOF_FRAMES * stride, 2 * T)
    mean, scale = frames.mean(dim=1, keepdim=True), frames.std(dim=1, keepdim=True).clamp_min(1e-3)
    tiled = frames.repeat(1, math.ceil(length / T), 1)[:, :length]
    tiled = tiled + 0.25 * scale * torch.randn(tiled.shape, generator=g)
    tiled[:, :T] = frames
    noise = mean + scale * torch.randn(tiled.shape, generator=g)
    return (f"a {length}-frame stream (the example, then its frames tiled with noise; and noise of its scale)",
            torch.cat([tiled, noise]), T)


def prove(model: nn.Module, step: StepModule, example: torch.Tensor | None = None, *,
          tolerance: float = PROOF_TOLERANCE) -> dict:
    """Run ``step`` against ``model`` over the proof streams (see the module doc) and return the summary kept as
    ``step.model_parity``; :class:`ParityError` when they differ past ``tolerance``."""
    step.eval()
    what, x, T = proof_stream(step, example)
    got = rollout(step, x.transpose(0, 1).contiguous())  # (L, rows, d_out)
    checks = []
    if T:  # the example by itself: the model on exactly what the user gave
        delay, stride = step.state_spec.delay, step.state_spec.output_stride
        seen = max(0, (T - delay + stride - 1) // stride) * stride + delay
        checks.append((f"the example ({T} frames)", x[:1, :T], got[:seen, :1]))
    checks.append((what, x, got))
    done = []
    for label, xs, ys in checks:
        report, (frame, row, index, ref, val) = against_model(model, step, xs, ys, what=f"step vs model on {label}")
        done.append({**report.summary(), "frames": int(xs.shape[1]), "streams": int(xs.shape[0])})
        if report.model_overflow_frame is not None:
            done[-1]["model_overflows_at_frame"] = report.model_overflow_frame
            warnings.warn(f"convert: {type(model).__name__} itself gives NaN/Inf at frame {report.model_overflow_frame} "
                          f"of {label}; its step is proven over the frames before it", stacklevel=3)
        if not report.max_scaled_error <= tolerance:
            from edgeseq.exporters.base import float64_sensitivity

            sens = float64_sensitivity(step, xs.transpose(0, 1).contiguous())
            if sens > tolerance and math.isfinite(report.max_scaled_error):
                # the model amplifies rounding (chaotic on this input): its own float32 and float64 runs part the
                # same way, so the difference says nothing about the rewrite; kept, recorded, and said
                warnings.warn(f"convert: {type(model).__name__} amplifies rounding on {label}: its step differs from it "
                              f"by {report.max_scaled_error:.3g} (scaled), as much as its own float32 and float64 runs "
                              f"differ ({sens:.3g}); no float32 runtime can match it step for step", stacklevel=3)
                done[-1]["float64_sensitivity"] = sens
                continue
            off64 = against_float64_model(model, step, xs, ys)
            if off64 is not None and off64 <= tolerance:
                # the model's own float32 forward is the one that drifts (a log-space scan whose running sums grow
                # without bound): the step matches the same model run in float64; kept, recorded, and said
                warnings.warn(f"convert: {type(model).__name__}'s own float32 forward drifts on {label}: its step "
                              f"differs from it by {report.max_scaled_error:.3g} (scaled) but from the model run in "
                              f"float64 by {off64:.3g}", stacklevel=3)
                done[-1]["against_float64_model"] = off64
                continue
            name = type(model).__name__
            at = _element(step, index)
            raise ParityError(
                f"convert: the step of {name} disagrees with {name} itself on {label}" + (f", stream {row}" if xs.shape[0] > 1 else "")
                + f": output {at} at frame {frame} is {val:.6g}, the model gives {ref:.6g} (scaled error "
                f"{report.max_scaled_error:.3g} > tolerance {tolerance:g}; delay {step.state_spec.delay}). The rewrite is "
                f"wrong for this model ({step.info.family} step, ops: {_ops(step)}); no step was made. Please report it "
                "with the model's code"
            )
    return {"what": "step vs the model itself, at conversion", "tolerance": tolerance,
            "max_abs_error": max(c["max_abs_error"] for c in done),
            "max_scaled_error": max(c["max_scaled_error"] for c in done),
            "checks": [{k: c[k] for k in ("what", "frames", "streams", "max_abs_error", "max_scaled_error", "worst_step",
                                          "float64_sensitivity", "model_overflows_at_frame", "against_float64_model")
                       if k in c} for c in done]}


def against_float64_model(model: nn.Module, step: StepModule, xs: torch.Tensor, ys: torch.Tensor) -> float | None:
    """The step's scaled error against the model run in float64 (a copy), or None where it cannot run so."""
    import copy

    try:
        report, _ = against_model(copy.deepcopy(model).double(), step, xs.double(), ys.double(), what="float64")
    except Exception:  # a model with dtype-specific parts (or outputs of another shape): no second opinion
        return None
    return None if report.model_overflow_frame is not None else report.max_scaled_error


def _element(step: StepModule, index: int) -> str:
    """Output element ``index`` of the step's flat output, in the model's own layout where the step knows it."""
    frame = getattr(step, "out_frame", None)
    if frame:
        return "[" + ", ".join(str(int(i)) for i in np.unravel_index(index, frame)) + "] (without batch and time)"
    return f"[{index}]"


def _ops(step: StepModule) -> str:
    ops = (step.info.config or {}).get("ops") if isinstance(step.info.config, dict) else None
    if not ops:
        return "none"
    return ", ".join(f"{k} ({v})" for k, v in list(ops.items())[:6]) + (" ..." if len(ops) > 6 else "")

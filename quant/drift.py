"""Drift evaluation: a quantized step (eager or an exported artifact) against its float step over long rollouts
on real data, each feeding its own state back.

Reports, per step, the output error (max |y_q - y_f| over features, and relative: ||y_q - y_f|| over the mean ||y_f||
of the whole rollout, so that steps where the float output passes near zero do not read as spikes) and the
state error (max |s_q - s_f| over every state tensor, relative to max |s_f|), the task metric of both (accuracy of
the test split streamed series by series, or its MSE), and whether the error grows: the mean relative output error
over the last third of the rollout against the third after step ``steps // 10``. ``budget`` (relative output error)
turns the report into a verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseq.step import StepModule

GROWTH_LIMIT = 1.5  # late/early mean error ratio above which drift counts as growing


@dataclass
class DriftReport:
    steps: int
    data: str
    output_max_abs: list[float] = field(repr=False)
    output_rel: list[float] = field(repr=False)
    state_rel: list[float] = field(repr=False)
    metric: dict[str, float]
    budget: float | None = None

    @property
    def max_output_rel(self) -> float:
        return float(np.max(self.output_rel))

    @property
    def growth(self) -> float:
        """Mean relative output error of the last third over that of the third starting at step steps // 10."""
        n = self.steps
        a, b = n // 10, n // 10 + n // 3
        early = float(np.mean(self.output_rel[a:b])) if b > a else 0.0
        late = float(np.mean(self.output_rel[n - n // 3:]))
        return late / early if early > 0 else (0.0 if late == 0 else float("inf"))

    @property
    def bounded(self) -> bool:
        return self.growth <= GROWTH_LIMIT

    @property
    def within_budget(self) -> bool:
        return self.budget is None or self.max_output_rel <= self.budget

    def summary(self) -> dict[str, Any]:
        n = self.steps
        at = {str(k): self.output_rel[k - 1] for k in (1, 10, 100, 1000, 10000) if k <= n}
        return {
            "steps": n, "data": self.data,
            "output_max_abs_error": float(np.max(self.output_max_abs)),
            "output_rel_error_max": self.max_output_rel,
            "output_rel_error_mean": float(np.mean(self.output_rel)),
            "output_rel_error_at_step": at,
            "state_rel_error_max": float(np.max(self.state_rel)) if self.state_rel else None,
            "state_rel_error_final": self.state_rel[-1] if self.state_rel else None,
            "growth_late_over_early": self.growth, "bounded": self.bounded,
            "metric": self.metric, "budget": self.budget, "within_budget": self.within_budget,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "per_step": {k: v for k, v in asdict(self).items() if k in ("output_max_abs", "output_rel", "state_rel")}}

    def plot_svg(self, title: str = "quantized vs float32") -> str:
        from edgeseq.svgplot import line_plot

        xs = list(range(1, self.steps + 1))
        series = {"output (relative)": (xs, self.output_rel)}
        if self.state_rel:
            series["state (relative)"] = (xs, self.state_rel)
        return line_plot(series, title=f"Drift over {self.steps:,} steps on {self.data}: {title}",
                         xlabel="step", ylabel="error", logy=True)


def _float_state(step_or_none, tensors) -> list[np.ndarray]:
    """State tensors as float32 (int8-stored tensors multiplied by their scale)."""
    prec = getattr(step_or_none, "precision", None) if step_or_none is not None else None
    out = []
    for i, t in enumerate(tensors):
        a = np.asarray(t)
        if prec is not None and prec.storage[i] == "int8":
            a = a.astype(np.float32) * prec.scales[i]
        out.append(a.astype(np.float32))
    return out


def evaluate(
    float_step: StepModule, quantized, data="japanese-vowels", steps: int = 10_000, *,
    budget: float | None = None, progress: Callable[[int, int], None] | None = None,
) -> DriftReport:
    """Roll ``float_step`` and ``quantized`` (a quantized StepModule, or an artifact path run on its runtime) over
    ``steps`` frames of ``data``'s test split (series concatenated, repeated to length), and stream the test split
    series by series through both for the task metric. ``data``: a bundled name, a data file or folder, or a
    SequenceDataset; without labels only the drift is measured."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rollout passes the training length on purpose
        return _evaluate(float_step, quantized, data, steps, budget, progress)


def _evaluate(float_step, quantized, data, steps, budget, progress) -> DriftReport:
    import edgeseq
    from edgeseq.data import check_fits, load
    from edgeseq.pipeline import real_stream
    from edgeseq.train import stream_outputs

    ds = load(data)
    task = getattr(float_step.info, "task", None)
    # the metric follows the model's task; data without labels still gives the drift (no metric)
    check_fits(ds, float_step.d_in, d_out=float_step.d_out, task=task if ds.task != "unlabeled" else None,
               what="evaluation data")
    eager_q = quantized if isinstance(quantized, StepModule) else None
    sess_q = edgeseq.open(quantized) if eager_q is not None else edgeseq.open(Path(quantized))
    sess_f = edgeseq.open(float_step)
    x = real_stream(ds.test, steps)
    out_abs, out_rel, st_rel, norms = [], [], [], []
    for t in range(steps):
        yf = sess_f.push(x[t:t + 1])
        yq = sess_q.push(x[t:t + 1])
        d = np.abs(yq - yf)
        out_abs.append(float(d.max()))
        out_rel.append(float(np.linalg.norm(yq - yf)))
        norms.append(float(np.linalg.norm(yf)))
        sf = [np.asarray(s, dtype=np.float32) for s in sess_f.state.tensors]
        sq = _float_state(eager_q, sess_q.state.tensors) if eager_q is not None or not _has_int8(sess_q) else None
        if sq is not None:
            num = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(sq, sf))
            den = max(float(np.abs(b).max()) if b.size else 0.0 for b in sf)
            st_rel.append(num / max(den, 1e-12))
        if progress is not None and (t + 1) % 500 == 0:
            progress(t + 1, steps)
    scale = max(float(np.mean(norms)), 1e-12)
    out_rel = [e / scale for e in out_rel]
    metric: dict[str, float] = {}
    if ds.task == "classify" and task == "classify":
        yf_all = stream_outputs(sess_f, ds.test)
        yq_all = stream_outputs(sess_q, ds.test)
        metric = {"accuracy_float": float((yf_all.argmax(-1) == ds.test.y).mean()),
                  "accuracy_quantized": float((yq_all.argmax(-1) == ds.test.y).mean())}
        metric["accuracy_change_points"] = 100 * (metric["accuracy_quantized"] - metric["accuracy_float"])
    return DriftReport(steps, ds.name, out_abs, out_rel, st_rel, metric, budget)


def _has_int8(sess) -> bool:
    return any(t.dtype == "int8" for t in sess.spec.tensors)

"""Scans in log space (edgeseq.graph.scans) and branches on the sequence length (edgeseq.graph.branches):
``logcumsumexp`` along time is a running log-sum-exp; Heinsen's form of h_t = a_t h_(t-1) + b_t streams as that
recurrence (checked against the recurrence run in float64, where the literal float32 form drifts); a branch on the
length converts when every length from 2 frames takes it, and is refused naming its line when lengths disagree."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import edgeseq
from edgeseq.errors import EdgeseqError
from extras import need  # tests/extras.py


class RunningLSE(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)

    def forward(self, x):  # (B, T, 3)
        return torch.logcumsumexp(self.proj(x), dim=1)


def test_logcumsumexp_along_time_is_a_running_log_sum_exp():
    torch.manual_seed(0)
    model = RunningLSE().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    assert step.state_spec.names == ("logcumsumexp.total",)
    x = torch.randn(1, 2000, 3)
    with torch.no_grad():
        ref = np.log(np.cumsum(np.exp(model.proj(x)[0].double().numpy()), axis=0))  # float64, by definition
    got = _rollout(step, x)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


class HeinsenGate(nn.Module):
    """A gated linear recurrence written as in minGRU's appendix B: h_t = (1 - z_t) h_(t-1) + z_t v_t in log space."""

    def __init__(self):
        super().__init__()
        self.gate, self.value = nn.Linear(2, 3), nn.Linear(2, 3)

    def forward(self, x):  # (B, T, 2)
        z = self.gate(x)
        log_a = -F.softplus(z)  # log(1 - sigmoid(z))
        log_b = -F.softplus(-z) + torch.log(F.softplus(self.value(x)))  # log(sigmoid(z) * v), v > 0
        a_star = log_a.cumsum(dim=1)
        log_h = a_star + (log_b - a_star).logcumsumexp(dim=1)
        return log_h.exp()


def _rollout(step, x):
    state, ys = step.init_state(1), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = step.step(x[:, t], state)
            ys.append(y)
    return torch.cat(ys).double().numpy()


def test_heinsen_scan_streams_as_the_recurrence_and_stays_accurate_where_the_literal_form_drifts():
    torch.manual_seed(0)
    model = HeinsenGate().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 2))
    assert step.state_spec.names == ("log_linear_scan.log_h",)
    T = 20_000
    x = torch.randn(1, T, 2)
    with torch.no_grad():  # the recurrence itself, in float64, frame by frame: the reference
        z = model.gate(x)[0].double()
        a, b = torch.sigmoid(-z), torch.sigmoid(z) * F.softplus(model.value(x)[0].double())
        h, ref = torch.zeros(3, dtype=torch.float64), []
        for t in range(T):
            h = a[t] * h + b[t]
            ref.append(h)
        ref = torch.stack(ref).numpy()
        literal = model(x)[0].double().numpy()  # the model's own float32 parallel form
    err_step = np.abs(_rollout(step, x) - ref).max()
    err_literal = np.abs(literal - ref).max()
    assert err_step <= 1e-5 * max(1.0, np.abs(ref).max())
    assert err_literal > 10 * err_step  # what streaming the literal cumsum + logcumsumexp would inherit


@pytest.mark.parametrize("cls", ["minGRU", "minLSTM"])
def test_min_gru_and_min_lstm_unedited_branch_on_length_and_heinsen_scan(cls):
    """minGRU-pytorch's minGRU and minLSTM (expansion 1.5, an output projection): `if seq_len == 1:` their own
    sequential step, else the log-space parallel scan."""
    need("minGRU_pytorch", "libraries")
    import importlib

    torch.manual_seed(0)
    model = getattr(importlib.import_module(f"minGRU_pytorch.{cls}"), cls)(8, expansion_factor=1.5).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 8))
    assert step.info.config["ops"]["log_linear_scan"] == "LogLinearScanOp"
    x = torch.randn(1, 2000, 8)
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(x.double())[0].numpy()
        ref32 = model(x)[0].double().numpy()
    got = _rollout(step, x)
    scale = max(1.0, np.abs(ref64).max())
    assert np.abs(got - ref64).max() <= 1e-5 * scale  # the model's own float32 is further off: 1e-4 here
    assert np.abs(got - ref32).max() <= 1e-3 * scale


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_min_gru_exports_over_2000_steps_checked_against_the_model_in_float64(target, tmp_path):
    """Export compares the artifact with the model too: where the model's own float32 drifts (minGRU's log-space
    scan, 1.3e-4 off its float64 run by step 1,525), the artifact is checked against the model in float64, kept and
    recorded; over 2,000 frames it streams within 1e-5 of the float64 model."""
    need("minGRU_pytorch", "libraries")
    need(target if target == "executorch" else "onnxruntime", target)
    from minGRU_pytorch import minGRU

    torch.manual_seed(0)
    model = minGRU(8).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 32, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target=target, steps=2000, model=model)
    mp = art.manifest["model_parity"]
    assert mp["max_scaled_error"] > 1e-4 and mp["against_float64_model"] <= 1e-5, mp
    x = torch.randn(1, 2000, 8)
    sess = edgeseq.open(art.path)
    got = np.concatenate([sess.push(f[None]) for f in x[0].numpy()])
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(x.double())[0].numpy()
    assert np.abs(got - ref64).max() <= 1e-5 * max(1.0, np.abs(ref64).max())


class _Flips(nn.Module):
    def forward(self, x):
        if x.shape[1] > 16:
            return x * 2
        return x


class _OwnStep(nn.Module):
    """A one-frame branch of its own (as minGRU has): lengths from 2 on all take the other."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        if x.shape[1] == 1:
            return self.lin(x)
        return torch.cumsum(self.lin(x), 1)


def test_a_branch_on_the_length_converts_when_every_length_takes_it():
    torch.manual_seed(0)
    model = _OwnStep().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    x = torch.randn(1, 2000, 3)
    with torch.no_grad():
        ref = model(x)[0].double().numpy()
    assert np.abs(_rollout(step, x) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_a_branch_that_flips_between_lengths_is_refused_naming_its_line():
    with pytest.raises(EdgeseqError, match=r"branch on the sequence length at test_scans\.py:\d+ \(if x\.shape\[1\] > 16:\) "
                                           r"goes one way at some lengths and another at others \(only for 17 <= T\)"):
        edgeseq.convert(_Flips(), example=torch.randn(1, 20, 3))


def test_where_the_models_own_float32_drifts_the_step_is_proven_against_it_in_float64():
    """A long example (3,000 frames, so a 6,000-frame proof stream): the literal form's own float32 forward is off by
    ~1e-3 there, more than the proof's tolerance; the step matches the model run in float64, and is kept, saying so."""
    torch.manual_seed(0)
    model = HeinsenGate().eval()
    with pytest.warns(UserWarning, match=r"HeinsenGate's own float32 forward drifts .* from the model run in float64"):
        step = edgeseq.convert(model, example=torch.randn(1, 3000, 2))
    long = step.model_parity["checks"][1]
    assert long["max_scaled_error"] > 1e-4 and long["against_float64_model"] <= 1e-5

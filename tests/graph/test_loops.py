"""Loops over time (edgeseq.graph.loops): a forward that steps a cell in a Python loop converts into a step that
equals the model's own forward over 2,000 frames, exports and streams; a loop that cannot be one step is refused,
naming the line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import edgeseq
from edgeseq.errors import EdgeseqError
from extras import need  # tests/extras.py

T = 2000


class CellLoop(nn.Module):
    """A hand-written loop over nn.LSTMCell / GRUCell / RNNCell: a projection over the whole sequence first, the
    state kept as a list, the outputs appended and stacked, a head over the stack."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.inp = nn.Linear(3, 8)
        self.cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](8, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):  # (B, T, 3)
        B = x.shape[0]
        state = [x.new_zeros(B, 16), x.new_zeros(B, 16)]
        u = self.inp(x)
        outs = []
        for t in range(x.shape[1]):
            if self.kind == "lstm":
                state = list(self.cell(u[:, t], (state[0], state[1])))
            else:
                state[0] = self.cell(u[:, t], state[0])
            outs.append(state[0])
        return self.head(torch.stack(outs, 1))


class LiquidCell(nn.Module):
    """An ODE-style cell of a user's own: several explicit Euler unfolds per frame, a tuple returned."""

    def __init__(self, d_in: int, d_h: int, unfolds: int = 3):
        super().__init__()
        self.w_in, self.w_h = nn.Linear(d_in, d_h), nn.Linear(d_h, d_h, bias=False)
        self.tau = nn.Parameter(torch.rand(d_h) + 0.5)
        self.unfolds = unfolds

    def forward(self, x, h):
        dt = 1.0 / self.unfolds
        for _ in range(self.unfolds):
            f = torch.tanh(self.w_in(x) + self.w_h(h))
            h = h + dt * (f - h / F.softplus(self.tau))
        return h, f


class LiquidNet(nn.Module):
    """The cell over x.unbind(1), from a learned initial state; each output unsqueezed and torch.cat'ed."""

    def __init__(self):
        super().__init__()
        self.cell = LiquidCell(4, 12)
        self.out = nn.Linear(12, 3)
        self.h0 = nn.Parameter(torch.randn(12))

    def forward(self, x):  # (B, T, 4)
        h = self.h0.expand(x.shape[0], -1)
        ys = []
        for x_t in x.unbind(1):
            h, f = self.cell(x_t, h)
            ys.append(self.out(h + f).unsqueeze(1))
        return torch.cat(ys, dim=1)


def _rollout_error(model: nn.Module, step, x: torch.Tensor) -> float:
    """Max over frames of |step - model| / max(1, |model|): the step fed one frame at a time with its state fed
    back, against the model's own forward (its Python loop) over the whole of x."""
    state, ys = step.init_state(1), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = step.step(x[:, t], state)
            ys.append(y)
        ref = model(x)
    ref = (ref[0] if isinstance(ref, tuple) else ref)[0].numpy()
    got = torch.cat(ys).numpy()
    return float((np.abs(got - ref).max(1) / np.maximum(1.0, np.abs(ref).max(1))).max())


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_loop_over_torch_cells_is_one_step_equal_to_the_model(kind):
    torch.manual_seed(0)
    model = CellLoop(kind).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    n = 2 if kind == "lstm" else 1
    assert step.state_spec.names == tuple(f"cell.carry{i}" for i in range(n))  # named after the cell's module path
    assert all(t.shape == (16,) for t in step.state_spec.tensors)  # constant memory: the cell's (h, c) and no more
    assert _rollout_error(model, step, torch.randn(1, T, 3)) <= 1e-5


def test_a_users_ode_cell_with_unfolds_and_a_learned_initial_state():
    torch.manual_seed(0)
    model = LiquidNet().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 16, 4))
    assert step.state_spec.names == ("cell.carry0",) and step.state_spec.tensors[0].shape == (12,)
    # the first output comes from h0 (kept in the step as the state's offset), not from zeros
    x = torch.randn(1, T, 4)
    assert _rollout_error(model, step, x) <= 1e-5
    with torch.no_grad():
        zero_start = model.cell(x[:, 0], torch.zeros(1, 12))
        assert (model.out(zero_start[0] + zero_start[1]) - model(x[:, :1])[0, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_a_cell_loop_exports_in_one_partition_and_streams_like_the_model(target, tmp_path):
    need(target if target == "executorch" else "onnxruntime", target)
    torch.manual_seed(0)
    model = CellLoop("lstm").eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "loop", target=target, steps=T, model=model)
    assert art.manifest["model_parity"]["max_scaled_error"] <= 1e-5
    if target == "executorch":  # torch's lstm_cell (a chunk) is run as the rnn family's cell: all delegated
        assert art.manifest["graph"]["partitions"] == 1 and art.manifest["graph"]["non_delegated_ops"] == 0
    x = torch.randn(T, 3)
    sess = edgeseq.open(art.path)
    got = np.concatenate([sess.push(f[None]) for f in x.numpy()])
    with torch.no_grad():
        ref = model(x[None])[0].numpy()
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("cls", ["CfC", "LTC"])
def test_ncps_liquid_and_cfc_models_unedited(cls):
    """ncps (Hasani et al.'s liquid time-constant and closed-form continuous-time networks): forward loops over
    time in Python and returns (outputs, final state); the LTC cell unfolds its ODE 6 times per frame."""
    ncps = need("ncps.torch", "libraries")
    torch.manual_seed(0)
    model = getattr(ncps, cls)(3, 8, batch_first=True).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    assert step.state_spec.names[0] == "rnn_cell.carry0"
    assert _rollout_error(model, step, torch.randn(1, T, 3)) <= 1e-5


def test_ncps_cfc_exports_to_executorch_in_one_partition(tmp_path):
    ncps = need("ncps.torch", "libraries")
    need("executorch", "executorch")
    torch.manual_seed(0)
    model = ncps.CfC(3, 8, batch_first=True).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "cfc", target="executorch", steps=T, model=model)
    assert art.manifest["graph"]["partitions"] == 1
    assert art.manifest["model_parity"]["max_scaled_error"] <= 1e-5 and art.manifest["model_parity"]["steps"] == T


# ------------------------------------------------------------------------------------------------- refusals
class _Loop(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(4, 6), nn.GRUCell(4, 6)])
        self.body = body

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 6)
        outs = []
        for t in range(x.shape[1]):
            h = self.body(self, x, h, t)
            outs.append(h)
        return torch.stack(outs, 1) + 0 * h.unsqueeze(1) if self.body is _last_state else torch.stack(outs, 1)


def _alternating(self, x, h, t):
    return self.cells[t % 2](x[:, t], h)  # a different module at every other step


def _step_number(self, x, h, t):
    return self.cells[0](x[:, t] * t, h)  # the frame scaled by its number: a constant that grows


def _last_state(self, x, h, t):
    return self.cells[0](x[:, t], h)


@pytest.mark.parametrize("body,match", [
    (_alternating, r"body differs between iterations 0 and 1 at test_loops\.py:\d+ .*a different module"),
    (_step_number, r"body differs between iterations \d and \d at test_loops\.py:\d+ .*a constant \d becomes \d"),
    (_last_state, r"last state is used after the loop at test_loops\.py:\d+"),
], ids=["alternating-modules", "step-number", "last-state"])
def test_loops_that_are_not_one_step_are_refused_naming_the_line(body, match):
    with pytest.raises(EdgeseqError, match=match):
        edgeseq.convert(_Loop(body).eval(), example=torch.randn(1, 12, 4))

"""Family rnn: the step form against PyTorch's own full-sequence forward over 10,000 steps."""

import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.exporters import FlatStep
from edgeseq.models.rnn import RNNModel

T = 10_000
TOL = 1e-5

CASES = {
    "lstm-1": lambda: nn.LSTM(6, 16),
    "lstm-3-batch_first": lambda: nn.LSTM(6, 16, num_layers=3, batch_first=True),
    "lstm-nobias": lambda: nn.LSTM(6, 16, num_layers=2, bias=False),
    "lstm-proj": lambda: nn.LSTM(6, 16, num_layers=2, proj_size=5, batch_first=True),
    "gru-2": lambda: nn.GRU(6, 16, num_layers=2),
    "gru-nobias-batch_first": lambda: nn.GRU(6, 12, bias=False, batch_first=True),
    "rnn-tanh-2": lambda: nn.RNN(6, 16, num_layers=2),
    "rnn-relu": lambda: nn.RNN(6, 16, nonlinearity="relu", batch_first=True),
}


def _scale_relu(m: nn.Module) -> None:
    # keep a ReLU recurrence contractive so 10,000 steps stay finite (random init can grow without bound)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.5 / torch.linalg.matrix_norm(p, ord=2))


@pytest.mark.parametrize("name", list(CASES))
def test_torch_module_parity_10k_steps(name):
    mod = CASES[name]()
    if name.startswith("rnn-relu"):
        _scale_relu(mod)
    step = edgeseq.convert(mod)
    x = torch.randn(2, T, mod.input_size)
    report = edgeseq.check_parity(mod, step, x)
    assert report.steps == T and report.per_step_abs.shape == (T,)
    assert report.max_abs_error <= TOL, report.summary()
    # independent check of the reference itself: the module's own output, in its own layout
    with torch.no_grad():
        own = mod(x if mod.batch_first else x.transpose(0, 1))[0]
    own = own if mod.batch_first else own.transpose(0, 1)
    state = step.init_state(2)
    with torch.no_grad():
        for t in range(50):
            y, state = step(x[:, t], state)
            assert torch.allclose(y, own[:, t], atol=1e-6)


@pytest.mark.parametrize("task", ["sequence", "classify"])
def test_whole_model_with_head_parity(task):
    model = edgeseq.build("rnn", d_in=4, d_out=3, cell="gru", d_hidden=16, num_layers=2, task=task)
    step = edgeseq.convert(model)
    x = torch.randn(3, T, 4)
    report = edgeseq.check_parity(model, step, x)
    assert report.max_abs_error <= TOL
    # classify: the last step output of the stream is the parallel form's prediction
    state = step.init_state(3)
    short = x[:, :40]
    with torch.no_grad():
        for t in range(40):
            y, state = step(short[:, t], state)
        ref = model(short)
    ref_last = ref if task == "classify" else ref[:, -1]
    assert torch.allclose(y, ref_last, atol=1e-6)


def test_classify_uses_lengths():
    model = edgeseq.build("rnn", d_in=2, d_out=4, task="classify", d_hidden=8)
    x = torch.randn(2, 10, 2)
    lengths = torch.tensor([10, 4])
    with torch.no_grad():
        y = model(x, lengths)
        assert torch.allclose(y[1], model(x[1:, :4])[0])


def test_from_module_wraps_user_model():
    lstm, head = nn.LSTM(3, 8, num_layers=2), nn.Linear(8, 2)
    model = RNNModel.from_module(lstm, head, task="classify")
    x = torch.randn(2, 30, 3)
    with torch.no_grad():
        ref = head(lstm(x.transpose(0, 1))[0].transpose(0, 1))[:, -1]
        assert torch.allclose(model(x), ref, atol=1e-6)


def test_gates_are_matmuls_not_fused_cells():
    for cell in ("lstm", "gru", "rnn_tanh"):
        step = edgeseq.convert(edgeseq.build("rnn", d_in=4, d_out=2, cell=cell, d_hidden=8, num_layers=2))
        ep = torch.export.export(FlatStep(step), (torch.zeros(1, 4), step.init_state(1)))
        ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert not any("lstm_cell" in o or "gru_cell" in o or "rnn_tanh_cell" in o for o in ops), ops
        assert any("linear" in o for o in ops)


def test_refusals():
    with pytest.raises(UnsupportedModuleError, match="bidirectional"):
        edgeseq.convert(nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(UnsupportedModuleError, match="register_converter"):
        edgeseq.convert(nn.Conv2d(1, 1, 3))
    with pytest.raises(ConfigError, match="cell must be one of"):
        edgeseq.build("rnn", d_in=3, cell="transformer")
    with pytest.raises(ConfigError, match="unknown field"):
        edgeseq.build("rnn", d_in=3, hidden=5)
    with pytest.raises(ConfigError, match="proj_size"):
        edgeseq.build("rnn", d_in=3, cell="gru", proj_size=2)
    with pytest.raises(edgeseq.EdgeseqError, match="unknown family 'mamba2x'"):
        edgeseq.build("mamba2x", d_in=3)

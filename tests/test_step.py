import math

import pytest
import torch

import edgeseq
from edgeseq.errors import ShapeError, StateMismatchError
from edgeseq.step import StateSpec, StateTensor


@pytest.mark.parametrize(
    "cfg, per_layer",
    [
        (dict(cell="lstm", d_hidden=32, num_layers=3), lambda c: 2 * c["d_hidden"]),
        (dict(cell="lstm", d_hidden=32, num_layers=2, proj_size=8), lambda c: c["d_hidden"] + c["proj_size"]),
        (dict(cell="gru", d_hidden=24, num_layers=2), lambda c: c["d_hidden"]),
        (dict(cell="rnn_tanh", d_hidden=7, num_layers=4), lambda c: c["d_hidden"]),
    ],
)
def test_state_bytes_equal_analytic_size(cfg, per_layer):
    step = edgeseq.convert(edgeseq.build("rnn", d_in=3, **cfg))
    analytic = cfg["num_layers"] * per_layer(cfg) * 4  # float32
    assert step.state_spec.bytes_per_stream == analytic
    state = step.init_state(batch=5)
    assert sum(t.numel() * t.element_size() for t in state) == 5 * analytic
    assert all(torch.count_nonzero(t) == 0 for t in state)


def test_step_is_pure_and_checks_shapes(tiny_lstm):
    step = edgeseq.convert(tiny_lstm)
    state = tuple(torch.randn_like(t) for t in step.init_state(2))
    before = tuple(t.clone() for t in state)
    x = torch.randn(2, 5)
    y1, s1 = step(x, state)
    y2, s2 = step(x, state)
    assert all(torch.equal(a, b) for a, b in zip(state, before)), "step mutated its input state"
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert y1.shape == (2, 3)
    with pytest.raises(ShapeError, match=r"expected shape \(batch, 5\), got \(2, 4\)"):
        step(torch.randn(2, 4), state)
    with pytest.raises(StateMismatchError, match="h0"):
        step(x, step.init_state(3))
    with pytest.raises(StateMismatchError, match="expects 4"):
        step(x, state[:2])


def test_statespec_roundtrip_and_validate():
    spec = StateSpec((StateTensor("m", (4, 2), fill=-1e30), StateTensor("u", (3,))), delay=2)
    again = StateSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec.bytes_per_stream == (8 + 3) * 4
    init = spec.init(2)
    assert init[0].shape == (2, 4, 2) and float(init[0][0, 0, 0]) == pytest.approx(-1e30)
    with pytest.raises(StateMismatchError, match="dtype"):
        spec.validate((init[0].double(), init[1]))


def test_fingerprint_tracks_weights(tiny_lstm):
    a = edgeseq.convert(tiny_lstm)
    b = edgeseq.convert(tiny_lstm)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    with torch.no_grad():
        b.head.bias[0] += 1e-6
    assert a.fingerprint() != b.fingerprint()
    assert math.isclose(a.state_spec.bytes_per_stream, 2 * 2 * 16 * 4)

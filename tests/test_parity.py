import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ShapeError
from edgeseq.parity import compare


def test_check_parity_catches_a_wrong_step(tiny_lstm):
    step = edgeseq.convert(tiny_lstm)
    x = torch.randn(1, 500, 5)
    good = edgeseq.check_parity(tiny_lstm, step, x)
    with torch.no_grad():
        step.layers[1].gates.bias[3] += 0.5  # corrupt one gate bias of the second layer
    bad = edgeseq.check_parity(tiny_lstm, step, x)
    assert good.max_abs_error < 1e-5
    assert bad.max_abs_error > 1e-3
    assert not bad.passes(1e-4) and good.passes(1e-4)


def test_compare_per_step_and_relative():
    ref = np.ones((4, 2, 3))
    ref[2] *= 10.0
    got = ref.copy()
    got[2, 1, 0] += 0.5
    r = compare(ref, got, what="t")
    assert r.steps == 4 and r.batch == 2
    np.testing.assert_allclose(r.per_step_abs, [0, 0, 0.5, 0])
    np.testing.assert_allclose(r.per_step_rel, [0, 0, 0.05, 0])
    assert r.worst_step == 2 and r.max_abs_error == 0.5 and r.max_rel_error == pytest.approx(0.05)
    delayed = compare(ref, got, what="t", delay=3)
    assert delayed.max_abs_error == 0.0


def test_check_parity_rejects_bad_shapes(tiny_lstm):
    with pytest.raises(ShapeError, match=r"\(batch, T, 5\)"):
        edgeseq.check_parity(tiny_lstm, edgeseq.convert(tiny_lstm), torch.randn(10, 5))

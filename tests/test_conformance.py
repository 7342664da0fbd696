"""Conformance: every registered family x every export target, built tiny, converted, exported, streamed.

A family without a tiny config fails here, so no family ships untested.
"""

import warnings

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.convert import reference_outputs
from edgeseq.exporters import EXPORTERS
from edgeseq.families import FAMILIES

FAMILY_NAMES = FAMILIES.keys()
TARGETS = EXPORTERS.keys()
T = 1500


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_has_tiny_config(family):
    assert FAMILIES.get(family).tiny, f"family {family!r} registers no tiny config for the conformance suite"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_target_stream_matches_parallel_form(family, target, tmp_path):
    torch.manual_seed(0)
    model = edgeseq.build(family, d_in=4, d_out=3, **dict(FAMILIES.get(family).tiny))
    step = edgeseq.convert(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / family, target=target, steps=1000)
    assert art.parity["max_abs_error"] <= 1e-5
    x = torch.randn(1, T, 4)
    ref = reference_outputs(model, x)[0].numpy()  # parallel form, (T, d_out)
    sess = edgeseq.open(art.path)
    got = np.stack([sess.push(x[0, t].numpy()) for t in range(T)])
    delay = step.state_spec.delay
    err = np.abs(got[delay:] - ref[: T - delay]).max()  # output n of the step = parallel output n - delay
    assert err <= 1e-5, f"{family} on {target}: max abs error {err:.3g} over {T} steps"

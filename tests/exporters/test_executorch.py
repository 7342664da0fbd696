import warnings

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ArtifactError
from edgeseq.manifest import read
from edgeseq.step import StateSpec, StateTensor, StepInfo, StepModule


def test_pte_is_delegated_and_validated(artifacts):
    art = artifacts["executorch"]
    assert art.path.suffix == ".pte" and art.path.read_bytes()[4:8] == b"ET12"
    m = read(art.manifest_path)
    g = m["graph"]
    assert m["runtime"]["backend"] == "xnnpack" and m["batch"] == 1
    assert g["partitions"] >= 1 and g["delegated_fraction"] >= 0.9, g
    assert "linear" in g["delegated"] and not any("lstm" in k for k in g["delegated"] | g["non_delegated"])
    assert m["parity"]["steps"] == 1000 and m["parity"]["max_abs_error"] < 1e-5
    # inputs and outputs outside the plan (the runtime's buffers): what is planned is the program's own scratch;
    # the outputs are y (3 floats here) and the next state of every layer
    assert m["runtime"]["planned_outputs"] is False and g["planned_arena_bytes"] >= 0
    assert g["unplanned_output_bytes"] == m["state_spec"]["bytes_per_stream"] + 4 * 3, g  # 4 (16,) fp32 + y


def test_executorch_stream_matches_parallel_form(artifacts):
    sess = edgeseq.open(artifacts["executorch"].path)
    x = torch.randn(1, 2000, 5)
    with pytest.warns(UserWarning):
        got = np.stack([sess.push(x[0, t].numpy()) for t in range(2000)])  # (T, d_out) for 1-D input
    with torch.no_grad():
        ref = artifacts["model"](x)[0].numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


def test_fixed_batch_is_enforced(artifacts):
    with pytest.raises(ArtifactError, match="exported for batch 1; got batch 2"):
        edgeseq.open(artifacts["executorch"].path, batch=2)


class _PreviousFrame(StepModule):
    """y = W (x - previous x); the state is the previous input frame itself (an output that is a graph input)."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.d_in, self.d_out = d, 3
        self.state_spec = StateSpec((StateTensor("prev", (d,)),))
        self.info = StepInfo("custom")
        self.lin = torch.nn.Linear(d, 3)

    def _step(self, x, state):
        return self.lin(x - state[0]), (x,)


def test_an_output_that_is_the_input_frame_keeps_inputs_planned(tmp_path):
    """ExecuTorch reads unplanned inputs in place, but gives back a wrong tensor for an output that is an unplanned
    input unchanged (export validation then refused it: scaled error 1.28 over 500 steps). A step whose next state
    is the input frame itself keeps its inputs planned, and streams exactly; a ring buffer's shift (state -> state)
    is passed through instead."""
    from edgeseq.exporters.base import passthrough_states

    torch.manual_seed(0)
    step = _PreviousFrame().eval()
    assert passthrough_states(step) == {}  # x -> state is not a state passed through
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "prev", target="executorch", steps=500)
    assert art.manifest["runtime"]["planned_inputs"] is True and art.parity["max_abs_error"] <= 1e-6

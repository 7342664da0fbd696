"""The self-proof at conversion (edgeseq.proof): a step that disagrees with the model never leaves convert, and
what it measured travels into the manifest, beside the artifact's own error against the model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import ParityError
from edgeseq.graph.ops import STREAM_OPS, Build, GraphOp, Timing
from edgeseq.step import StateTensor


class RunningSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 5)

    def forward(self, x):  # (B, T, 3)
        return torch.cumsum(self.proj(x), 1)


class LateSum(GraphOp):
    """A deliberately wrong stream form of cumsum: frame n gets the sum of frames 0 .. n - 1 (one frame late)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def states(self):
        return (StateTensor("total", (1, self.width)),)

    def step(self, args, kwargs, state, t):
        x = args[0]
        return state[0], (state[0] + x,)


def _late_sum(ctx):
    return Build(LateSum(ctx.env[ctx.node].shape[-1]), Timing(span=None))


def test_a_rewrite_off_by_one_frame_is_refused_naming_output_frame_and_error(monkeypatch):
    torch.manual_seed(0)
    model = RunningSum().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))  # the registered (right) stream form
    assert step.model_parity["max_scaled_error"] <= 1e-5
    assert [c["frames"] for c in step.model_parity["checks"]] == [20, 256]  # the example, then a longer stream
    monkeypatch.setitem(STREAM_OPS._items, torch.cumsum, _late_sum)
    x = torch.randn(1, 20, 3)
    with torch.no_grad():  # what the wrong step gives, computed here: the model's output one frame late
        ref = model(x)[0]
    late = torch.cat([torch.zeros(1, 5), ref[:-1]])
    scaled = (late - ref).abs().max(1).values / ref.abs().max(1).values.clamp_min(1.0)
    frame = int(scaled.argmax())
    with pytest.raises(ParityError, match=rf"disagrees with RunningSum itself on the example \(20 frames\): output "
                                          rf"\[\d\] .*at frame {frame} is .* the model gives .*scaled error "
                                          rf"{float(scaled.max()):.3g} > tolerance 0.0001.*no step was made"):
        edgeseq.convert(model, example=x)


def test_a_subclass_with_its_own_forward_is_not_taken_for_its_base():
    """A Conv1d subclass that pads in its forward (the causal TCN libraries' way) is traced through, not converted
    as the plain nn.Conv1d it derives from (which has a registered converter)."""

    class CausalConv(nn.Conv1d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (2 * self.dilation[0], 0)))

    torch.manual_seed(0)
    conv = CausalConv(4, 6, 3, dilation=2).eval()
    step = edgeseq.convert(conv, example=torch.randn(1, 4, 30), time_axis=-1)
    assert step.info.family == "graph" and step.state_spec.delay == 0
    assert edgeseq.check_parity(conv, step, torch.randn(1, 4, 2000)).max_scaled_error <= 1e-5


def test_registered_families_are_proven_too():
    step = edgeseq.convert(nn.GRU(4, 8, batch_first=True))
    assert step.model_parity["checks"][0]["frames"] == 128 and step.model_parity["max_scaled_error"] <= 1e-5


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_the_manifest_records_the_artifact_against_the_model(target, tmp_path):
    from extras import need  # tests/extras.py

    need(target if target == "executorch" else "onnxruntime", target)
    torch.manual_seed(0)
    model = RunningSum().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 20, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target=target, steps=400, model=model)
    mp, proof = art.manifest["model_parity"], art.manifest["conversion_proof"]
    assert mp["steps"] == 400 and mp["max_scaled_error"] <= 1e-5 and mp["enforced"] is True
    assert proof["max_scaled_error"] <= 1e-5 and proof["checks"][0]["frames"] == 20
    # the artifact against the model, recomputed here on the export's own stream (standard normal, seed 0)
    x = step.example_input(400, 1, torch.Generator().manual_seed(0)).transpose(0, 1)
    got = edgeseq.open(art.path).run(x[0].numpy())
    with torch.no_grad():
        ref = model(x)[0].numpy()
    err = np.abs(got - ref).max(axis=1) / np.maximum(1.0, np.abs(ref).max(axis=1))
    assert err.max() <= 1e-5 and abs(err.max() - mp["max_scaled_error"]) <= 1e-6


def test_a_model_given_to_export_is_its_reference(tmp_path):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(nn.LSTM(3, 6, batch_first=True), tmp_path / "lstm", target="onnx", steps=300)
    assert art.manifest["model_parity"]["steps"] == 300 and art.manifest["model_parity"]["max_scaled_error"] <= 1e-5


class Growing(nn.Module):
    """A running product that doubles every frame: float32 overflows to Inf at frame 127 (2**128 > 3.4e38; frame 0 is 2)."""

    def forward(self, x):  # (B, T, 2)
        return torch.cumprod(torch.full_like(x, 2.0), 1) * (1.0 + 0.0 * x)


def test_a_model_that_overflows_by_itself_is_proven_over_the_frames_before_it(monkeypatch):
    """Where the model itself gives Inf, nothing past it can be compared; the proof covers the frames before it,
    says where the model overflowed, and a wrong step is still refused there."""
    model = Growing().eval()
    x = torch.randn(1, 20, 2)
    with pytest.warns(UserWarning, match=r"Growing itself gives NaN/Inf at frame 127 of a 256-frame stream"):
        step = edgeseq.convert(model, example=x)
    with torch.no_grad():
        assert not torch.isfinite(model(torch.randn(1, 256, 2))[0, 127]).any()  # 2**128: the overflow is real
    long = step.model_parity["checks"][1]
    assert long["frames"] == 256 and long["model_overflows_at_frame"] == 127 and long["max_scaled_error"] <= 1e-5
    assert "model_overflows_at_frame" not in step.model_parity["checks"][0]  # the 20-frame example is finite
    monkeypatch.setitem(STREAM_OPS._items, torch.cumprod, _late_sum)  # a running sum, one frame late: wrong
    with pytest.raises(ParityError, match=r"disagrees with Growing itself on the example"):
        edgeseq.convert(model, example=x)

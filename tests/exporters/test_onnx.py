import numpy as np
import onnx
import pytest
import torch

import edgeseq
from edgeseq.convert import reference_outputs
from edgeseq.errors import ParityError
from edgeseq.manifest import read


def test_named_io_dynamic_batch_and_checker(artifacts):
    art = artifacts["onnx"]
    assert art.path.name == "lstm.onnx" and art.manifest_path.name == "lstm.onnx.edgeseq.json"
    model = onnx.load(str(art.path))
    onnx.checker.check_model(model, full_check=True)
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    assert names_in == ["x", "state_h0", "state_c0", "state_h1", "state_c1"]
    assert names_out == ["y", "next_state_h0", "next_state_c0", "next_state_h1", "next_state_c1"]
    for v in list(model.graph.input) + list(model.graph.output):
        d0 = v.type.tensor_type.shape.dim[0]
        assert d0.dim_param and not d0.dim_value, f"{v.name}: batch axis is not dynamic"


def test_manifest_records_parity_and_contract(artifacts):
    m = read(artifacts["onnx"].manifest_path)
    step = artifacts["step"]
    assert m["family"] == "rnn" and m["target"] == "onnx" and m["batch"] == "dynamic"
    assert m["runtime"]["opset"] == 18 and m["fingerprint"] == step.fingerprint()
    assert m["state_spec"]["bytes_per_stream"] == step.state_spec.bytes_per_stream
    assert m["parity"]["steps"] == 1000 and m["parity"]["max_abs_error"] < 1e-5
    assert m["train_length"] == 50 and m["quantization"] is None


def test_onnxruntime_batch_of_streams_matches_parallel_form_over_3000_steps(artifacts):
    sess = edgeseq.open(artifacts["onnx"].path, batch=3)
    x = torch.randn(3, 3000, 5)
    with pytest.warns(UserWarning, match="training length"):
        got = sess.run(x.transpose(0, 1).contiguous().numpy())  # (T, 3, d_out)
    ref = reference_outputs(artifacts["model"], x).transpose(0, 1).numpy()  # the parallel form
    assert np.abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("path", ["per-call run", "bound step"])
def test_runtime_that_disagrees_fails_export_and_writes_nothing(tmp_path, tiny_lstm, monkeypatch, path):
    """A silent mismatch, as a bad lowering would produce, on either path a session steps through: the backend's
    per-call run (a session not bound to an arena) or the step bound to the arena (what push runs)."""
    from edgeseq.runtimes import ort

    real_run, real_bind = ort.OrtBackend.run, ort.OrtBackend.bind

    def drifting(self, x, state):
        y, new = real_run(self, x, state)
        return y + 1e-3, new

    def drifting_bind(self, arena):
        steps = real_bind(self, arena)

        def wrap(c):
            def step():
                steps[c]()
                y = arena.y[1 - c]  # the output the step wrote, off
                y += 1e-3

            return step

        return wrap(0), wrap(1)

    if path == "per-call run":
        monkeypatch.setattr(ort.OrtBackend, "run", drifting)
        monkeypatch.setattr(ort.OrtBackend, "bind", lambda self, arena: None)
    else:
        monkeypatch.setattr(ort.OrtBackend, "bind", drifting_bind)
    with pytest.raises(ParityError, match="nothing written"):
        edgeseq.export(edgeseq.convert(tiny_lstm), tmp_path / "bad", target="onnx", steps=1000)
    assert list(tmp_path.iterdir()) == []


def test_chaotic_model_failure_says_why(tmp_path):
    """An Elman RNN with a recurrent gain of 4 is chaotic: rounding differences grow until trajectories part. The
    export refuses, and says the eager step itself disagrees with its float64 run (no runtime could match it)."""
    from edgeseq.exporters.base import float64_sensitivity

    torch.manual_seed(0)
    rnn = torch.nn.RNN(4, 64, nonlinearity="tanh")
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.randn(64, 64) * 4 / 8)
    step = edgeseq.convert(rnn)
    x = torch.randn(600, 1, 4)
    assert float64_sensitivity(step, x) > 1e-2
    with pytest.raises(ParityError, match="float32 and float64 eager runs differ by"):
        edgeseq.export(step, tmp_path / "m", target="onnx", inputs=x)
    assert not list(tmp_path.iterdir())
    # a stable model: the sensitivity is rounding-sized
    calm = edgeseq.convert(torch.nn.RNN(4, 64, nonlinearity="tanh"))
    assert float64_sensitivity(calm, x) < 1e-5

"""Family continual: temporal CNN steps against the offline model on the whole sequence (shifted by the delay),
and against continual-inference's own forward_step."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.models.continual import Residual

T = 2000


def _check(net, d_in, expect_delay=None, tol=1e-5):
    net = net.eval()
    step = edgeseq.convert(net)
    if expect_delay is not None:
        assert step.state_spec.delay == expect_delay
    report = edgeseq.check_parity(net, step, torch.randn(2, T, d_in))
    assert report.steps == T - step.state_spec.delay
    assert report.max_abs_error <= tol, report.summary()
    return step


@pytest.mark.parametrize("padding", ["causal", "same"])
@pytest.mark.parametrize("pool", ["none", "avg", "max"])
def test_family_step_matches_offline_model(padding, pool):
    model = edgeseq.build("continual", d_in=3, d_out=4, channels=(8, 8, 6), kernel_size=3, padding=padding, pool=pool)
    span = 2 * (1 + 2 + 4) + (2 if pool != "none" else 0)  # (K-1) * dilation per level, + the pooling
    step = _check(model, 3, expect_delay=0 if padding == "causal" else span // 2)
    assert step.state_spec.receptive_field == span + 1


def test_plain_sequential_with_same_padding_dilation_groups_and_batchnorm():
    net = nn.Sequential(
        nn.Conv1d(4, 8, 5, padding=2), nn.BatchNorm1d(8), nn.GELU(),
        nn.Conv1d(8, 8, 3, dilation=3, padding="same", groups=2), nn.ReLU(), nn.Dropout(0.1),
        nn.Conv1d(8, 6, 3),  # "valid": delay 2, the offline output is 2 frames shorter
        nn.MaxPool1d(3, stride=1, padding=1), nn.AvgPool1d(2, stride=1),
        nn.Conv1d(6, 2, 1),
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    _check(net, 4, expect_delay=2 + 3 + 2 + 1 + 1)


def test_residual_delays_its_skip_path():
    net = nn.Sequential(nn.Conv1d(3, 6, 1), Residual(nn.Sequential(nn.Conv1d(6, 6, 5, padding=2), nn.Tanh())),
                        Residual(nn.Sequential(nn.ConstantPad1d((4, 0), 0.0), nn.Conv1d(6, 6, 3, dilation=2))))
    step = _check(net, 3, expect_delay=2)
    assert "1.skip.line" in step.state_spec.names  # the skip of the non-causal residual waits 2 frames


def test_matches_continual_inference_forward_step():
    co = pytest.importorskip("continual", reason="continual-inference is part of the [importers] extra that CI installs")
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, 5, padding=1)  # continual-inference supports no temporal dilation
    co_conv = co.Conv1d(3, 5, 5, padding=1)
    co_conv.load_state_dict(conv.state_dict())
    x = torch.randn(1, 3, 300)
    theirs = []
    with torch.no_grad():
        for t in range(300):
            y = co_conv.forward_step(x[:, :, t])  # a placeholder, not a tensor, until its delay has passed
            if isinstance(y, torch.Tensor):
                theirs.append(y)
    theirs = torch.stack(theirs, -1)
    step = edgeseq.convert(conv)
    assert step.state_spec.delay == co_conv.delay
    state, ours = step.init_state(1), []
    with torch.no_grad():
        for t in range(300):
            y, state = step(x[:, :, t], state)
            ours.append(y)
    ours = torch.stack(ours, -1)
    d = co_conv.delay
    assert theirs.shape[-1] == 300 - d
    assert (ours[..., d:] - theirs).abs().max().item() <= 1e-5


def test_export_streams_with_delay(tmp_path):
    model = edgeseq.build("continual", d_in=3, d_out=2, channels=(8, 8), padding="same", pool="avg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arts = {t: edgeseq.export(model, tmp_path / "tcn", target=t) for t in ("onnx", "executorch")}
    delay = edgeseq.convert(model).state_spec.delay
    x = torch.randn(1, 300, 3)
    with torch.no_grad():
        ref = model.forward_steps(x)[0].numpy()
    for art in arts.values():
        assert art.parity["max_abs_error"] <= 1e-5 and art.manifest["state_spec"]["delay"] == delay
        sess = edgeseq.open(art.path)
        outs = []
        for t in range(300):
            y = sess.push(x[0, t].numpy())
            assert sess.ready == (t >= delay)
            outs.append(y)
        assert np.abs(np.stack(outs)[delay:] - ref[: 300 - delay]).max() <= 1e-5
    assert arts["executorch"].manifest["graph"]["delegated_fraction"] >= 0.5


def test_unsupported_layers_and_non_streaming_padding_are_refused():
    with pytest.raises(UnsupportedModuleError, match=r"1 \(LSTM\): no continual converter for torch.nn.modules.rnn.LSTM.*register_layer"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 2, 3), nn.LSTM(2, 2)))
    with pytest.raises(ConfigError, match="padding_mode='reflect'.*cannot do that"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect")))
    with pytest.raises(ConfigError, match="stride 2 is not supported"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 2, 3, stride=2)))
    with pytest.raises(ConfigError, match="left padding 5 exceeds its receptive span 2"):
        edgeseq.convert(nn.Sequential(nn.ConstantPad1d((5, 0), 0.0), nn.Conv1d(2, 2, 3)))
    with pytest.raises(ConfigError, match="stride 2 is not supported.*default stride is its kernel size"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 2, 3), nn.AvgPool1d(2)))


def test_cli_stream_drops_outputs_that_are_not_ready(tmp_path):
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    model = edgeseq.build("continual", d_in=2, d_out=3, channels=(4,), padding="same", kernel_size=5)
    edgeseq.save(model, tmp_path / "tcn")
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = runner.invoke(app, ["export", str(tmp_path / "tcn"), "--target", "onnx", "--out", str(tmp_path / "art"), "--steps", "300"])
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["stream", str(tmp_path / "art.onnx"), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 0 and "dropped the first 2 outputs: not ready" in r.output, r.output
    with torch.no_grad():
        ref = model.forward_steps(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref[:48]).max() <= 1e-5

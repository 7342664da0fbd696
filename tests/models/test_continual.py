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

from extras import need  # tests/extras.py

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
    co = need("continual", "importers", "continual-inference is the oracle of this test")
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
    with pytest.raises(ConfigError, match=r"temporal stride 2 inside Residual 1 is not supported"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 2, 1), Residual(nn.Sequential(nn.Conv1d(2, 2, 2, stride=2)))))
    with pytest.raises(ConfigError, match="left padding 5 exceeds its receptive span 2"):
        edgeseq.convert(nn.Sequential(nn.ConstantPad1d((5, 0), 0.0), nn.Conv1d(2, 2, 3)))


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


# ---------------------------------------------------------------- clip (3D) and window (Transformer) models
def _bn3d(c):
    bn = nn.BatchNorm3d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn


def x3d_like(c_in=3, classes=5):
    """An X3D-shaped clip classifier without temporal padding: spatial stem, temporal depthwise conv, a bottleneck
    residual block with a 3x3x3 depthwise conv, pooling, 1x1x1 expansion, global pool, linear head."""
    return nn.Sequential(
        nn.Conv3d(c_in, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), _bn3d(8), nn.ReLU(),
        nn.Conv3d(8, 8, (3, 1, 1), groups=8), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv3d(8, 16, 1), _bn3d(16), nn.ReLU(),
                               nn.Conv3d(16, 16, (3, 3, 3), padding=(0, 1, 1), groups=16), _bn3d(16), nn.SiLU(),
                               nn.Conv3d(16, 8, 1), _bn3d(8))),
        nn.AvgPool3d((2, 1, 1), stride=1), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Conv3d(8, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(32, classes),
    ).eval()


def test_x3d_like_clip_model_streams_like_the_clip_model_on_every_window():
    from edgeseq.models.continual import OfflineModel

    model = OfflineModel(x3d_like(), frame_shape=(3, 8, 8), window=8)
    step = edgeseq.convert(model)
    assert (step.d_in, step.d_out) == (3 * 8 * 8, 5)
    assert step.state_spec.delay == 7 and step.state_spec.receptive_field == 8
    x = torch.randn(1, T, 3 * 8 * 8)
    report = edgeseq.check_parity(model, step, x)  # the oracle runs the clip model on all 1,993 windows
    assert report.steps == T - 7
    assert report.max_abs_error <= 1e-5, report.summary()
    # the oracle itself: one window by hand
    clip = x[:, 100:108].reshape(1, 8, 3, 8, 8).movedim(1, 2)
    with torch.no_grad():
        assert torch.allclose(model.forward_steps(x[:, :120])[:, 100], model.net(clip)[0], atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_window_model_streams_with_single_output_attention(norm_first):
    from edgeseq.models.continual import OfflineModel

    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), layer, nn.Linear(16, 3)).eval()
    model = OfflineModel(net, frame_shape=6, window=16, layout="btc")
    step = edgeseq.convert(model)
    assert step.state_spec.names == ("2.k", "2.v") and step.state_spec.delay == 15
    report = edgeseq.check_parity(model, step, torch.randn(2, T, 6))
    assert report.steps == T - 15 and report.max_abs_error <= 1e-5, report.summary()


def test_window_transformer_matches_continual_inference_single_output_layer():
    co = need("continual", "importers", "continual-inference is the oracle of this test")
    from edgeseq.importers.continual_inference import to_co_single_output_layer
    from edgeseq.models.continual import OfflineModel

    W, D = 8, 16
    ours = nn.TransformerEncoderLayer(D, 4, 32, dropout=0.0, batch_first=True).eval()
    theirs = to_co_single_output_layer(ours, W)
    assert isinstance(theirs, co.Sequential)
    step = edgeseq.convert(OfflineModel(nn.Sequential(ours), D, window=W, layout="btc"))
    x = torch.randn(1, 300, D)
    got = edgeseq.parity.rollout(step, x.transpose(0, 1).contiguous())[W - 1:, 0]  # (300 - W + 1, D)
    with torch.no_grad():
        ref = theirs.forward_steps(x.transpose(1, 2))  # (1, D, 300 - W + 1): their outputs once W frames are in
    assert ref.shape[-1] == got.shape[0]
    assert (ref[0].T - got).abs().max().item() <= 1e-5


def test_clip_and_window_models_that_cannot_stream_are_refused():
    from edgeseq.models.continual import OfflineModel

    padded = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ConfigError, match=r"0 \(Conv3d\): temporal padding inside a clip / window model pads every window"):
        edgeseq.convert(OfflineModel(padded, (2, 4, 4), window=8))
    with pytest.raises(ConfigError, match=r"AdaptiveAvgPool1d\): a global temporal pool over a whole sequence cannot stream"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 4, 3), nn.AdaptiveAvgPool1d(1)))
    with pytest.raises(ConfigError, match="window is too short"):
        edgeseq.convert(OfflineModel(nn.Sequential(nn.Conv3d(2, 4, (5, 1, 1)), nn.AdaptiveAvgPool3d(1)), (2, 4, 4), window=4))
    with pytest.raises(ConfigError, match=r"Conv3d\): temporal stride 2 inside a clip / window model is not supported"):
        edgeseq.convert(OfflineModel(nn.Sequential(nn.Conv3d(2, 4, 3, stride=2)), (2, 4, 4), window=8))
    layer = lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)  # noqa: E731
    with pytest.raises(ConfigError, match=r"1 \(TransformerEncoderLayer\): comes after the single-output attention layer 0"):
        edgeseq.convert(OfflineModel(nn.Sequential(layer(), layer()), 8, window=8, layout="btc"))
    with pytest.raises(ConfigError, match="2 encoder layers"):
        edgeseq.convert(OfflineModel(nn.TransformerEncoder(layer(), 2, enable_nested_tensor=False), 8, window=8, layout="btc"))
    with pytest.raises(ConfigError, match="attention over a whole sequence has no constant-memory step"):
        edgeseq.convert(OfflineModel(nn.Sequential(layer()), 8, layout="btc"))
    with pytest.raises(ConfigError, match=r"Linear\): Linear acts on the last axis, which is time"):
        edgeseq.convert(nn.Sequential(nn.Conv1d(2, 4, 3), nn.Linear(4, 4)))
    with pytest.raises(UnsupportedModuleError, match="frame shape is not known.*OfflineModel"):
        edgeseq.convert(nn.Sequential(nn.Conv3d(2, 4, 3)))


def test_flops_per_step_and_per_offline_window_match_the_formula():
    from edgeseq.flops import step_cost

    net = nn.Sequential(nn.ConstantPad1d((4, 0), 0.0), nn.Conv1d(4, 8, 3, dilation=2), nn.ReLU(), nn.Conv1d(8, 2, 1))
    cost = step_cost(edgeseq.convert(net))
    per_frame = 2 * (4 * 8 * 3) + 2 * (8 * 2 * 1)  # 2 FLOPs per multiply-add, one output frame
    assert cost["flops_per_step"] == per_frame
    # recomputing the offline model over its receptive field (5 frames) gives 5 outputs for the 1 needed
    assert cost["offline_frames"] == 5 and cost["offline_flops_per_output"] == 5 * per_frame
    assert cost["offline_over_step"] == 5.0


def test_clip_model_cost_is_in_the_manifest_and_inspect(tmp_path):
    from typer.testing import CliRunner

    from edgeseq.cli.main import app
    from edgeseq.models.continual import OfflineModel

    step = edgeseq.convert(OfflineModel(x3d_like(), frame_shape=(3, 8, 8), window=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "x3d", target="onnx", steps=300)
    cost = art.manifest["cost"]
    assert cost["offline_frames"] == 8 and cost["offline_flops_per_output"] > 3 * cost["flops_per_step"] > 0
    r = CliRunner().invoke(app, ["inspect", str(art.path)])
    assert r.exit_code == 0, r.output
    assert "per step; recomputing the offline model over its 8 frames for each output" in " ".join(r.output.split())


def padded_clip_model():
    """A clip model that pads time (as X3D does): read with padding='stream' (Continual 3D CNNs)."""
    return nn.Sequential(
        nn.Conv3d(3, 8, (3, 3, 3), padding=(1, 1, 1), stride=(1, 2, 2)), _bn3d(8), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0)), _bn3d(8), nn.ReLU())),
        nn.Conv3d(8, 8, (5, 1, 1), padding=(2, 0, 0)), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def test_padded_clip_model_streams_with_padding_from_the_stream():
    from edgeseq.models.continual import OfflineModel

    model = OfflineModel(padded_clip_model(), (3, 8, 8), window=6, padding="stream")
    step = edgeseq.convert(model)
    # delay: 1 + 1 + 2 from the "same" temporal padding, + 5 for the sliding pool over the clip's 6 frames
    assert step.state_spec.delay == 9 and step.state_spec.receptive_field == 14
    report = edgeseq.check_parity(model, step, torch.randn(1, T, 3 * 64))
    assert report.steps == T - 9 and report.max_abs_error <= 1e-5, report.summary()
    # the oracle is not the clip model per window: at a window whose edges the clip model zero-pads, they differ
    clip = OfflineModel(model.net, (3, 8, 8), window=6)
    x = torch.randn(1, 40, 3 * 64)
    with torch.no_grad():
        assert (clip.forward_steps(x)[:, 10] - model.forward_steps(x)[:, 12]).abs().max() > 1e-3


def test_transformer_window_flops_match_the_formula():
    """Counted from the graph, PyTorch's fused encoder fast path included: D = 16, F = 32, W = 8 frames."""
    from edgeseq.flops import step_cost
    from edgeseq.models.continual import OfflineModel

    D, F, W = 16, 32, 8
    layer = nn.TransformerEncoderLayer(D, 4, F, dropout=0.0, batch_first=True)
    cost = step_cost(edgeseq.convert(OfflineModel(nn.Sequential(layer).eval(), D, window=W, layout="btc")))
    per_token = 2 * (D * 3 * D + D * D + D * F + F * D)  # in-projection, out-projection, feed-forward
    attention = 2 * (D * W) * 2  # scores and weighted values of one query over W keys
    norms = 2 * 2 * (2 * D)  # the step writes each LayerNorm's two means as products with a 1/D column
    assert cost["flops_per_step"] == per_token + attention + norms
    assert cost["offline_flops_per_output"] == W * per_token + W * attention  # every query of the window


@pytest.mark.parametrize("reduce", ["sum", "cat"])
def test_parallel_branches_with_different_delays_and_lengths(reduce):
    from edgeseq.models.continual import Branches

    branches = Branches(
        nn.Sequential(nn.Conv1d(6, 6, 3, padding=1), nn.ReLU()),  # "same": delay 1, same length
        nn.Sequential(nn.Conv1d(6, 6, 5, dilation=2)),  # valid: delay 8, 8 frames shorter
        nn.Sequential(nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(6, 6, 3), nn.MaxPool1d(3, stride=1, padding=1)),
        reduce=reduce,
    )
    net = nn.Sequential(nn.Conv1d(3, 6, 1), branches, nn.Conv1d(6 * (3 if reduce == "cat" else 1), 2, 3, padding=1))
    # aligned at the latest frames, the valid branch crops the others by 8 frames at the start; the "same" branch's
    # output for the combined frame m is its frame m + 8, ready at m + 8 + 1: delay 9; the last conv adds 1
    step = _check(net, 3, expect_delay=10)
    names = step.state_spec.names
    assert "1.b1.line" in names and "1.b0.line" not in names  # the valid branch is one frame early: it waits
    assert step.d_out == 2


def test_branches_in_a_3d_clip_model_per_window():
    from edgeseq.models.continual import Branches, OfflineModel

    net = nn.Sequential(
        nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)),
        Branches(nn.Conv3d(4, 4, (3, 1, 1)), nn.Sequential(nn.Conv3d(4, 4, 1), nn.ReLU()), reduce="cat"),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    model = OfflineModel(net, (2, 5, 5), window=6)
    step = edgeseq.convert(model)
    report = edgeseq.check_parity(model, step, torch.randn(1, T, 50))
    assert step.state_spec.delay == 5 and report.max_abs_error <= 1e-5, report.summary()


def test_temporally_dilated_3d_layers_stream_and_lower_to_one_partition(tmp_path):
    """Conv3d and MaxPool3d dilated in time (dense and grouped): the step equals the clip model on every window,
    and ExecuTorch delegates the whole step in one partition (the dilated frames are picked by a reshape and a
    contiguous slice, the pool's maximum is a chain of elementwise maxima; a strided slice and amax over the time
    axis were left outside XNNPACK: 3 partitions with 2 slice_copy ops outside, 2 with amax outside)."""
    from edgeseq.models.continual import OfflineModel

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(2, 8, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
        nn.Conv3d(8, 8, (3, 1, 1), dilation=(2, 1, 1)), nn.ReLU(),
        nn.Conv3d(8, 8, (2, 3, 3), dilation=(3, 1, 1), padding=(0, 1, 1), groups=2), nn.ReLU(),
        nn.MaxPool3d((2, 1, 1), stride=1, dilation=(2, 1, 1)),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    model = OfflineModel(net, (2, 6, 6), window=10)
    step = edgeseq.convert(model)
    assert step.state_spec.delay == 9  # 4 + 3 + 2 frames of temporal reach
    x = torch.randn(1, T, 72)
    report = edgeseq.check_parity(model, step, x)
    assert report.steps == T - 9 and report.max_abs_error <= 1e-5, report.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "dil", target="executorch", steps=T)
    g = art.manifest["graph"]
    assert g["partitions"] == 1 and g["non_delegated_ops"] == 0, g
    from edgeseq.convert import reference_outputs

    got = edgeseq.open(art.path).run(x[0].numpy())  # the artifact against the offline network itself
    ref = reference_outputs(model, x)[0].numpy()
    assert np.abs(got[9:] - ref[: T - 9]).max() <= 1e-5


def test_3d_buffers_are_per_frame_state_taken_channels_last_by_executorch(tmp_path):
    """A padded X3D-like clip model (residual block, BatchNorms after the convolutions, global pool): each buffered
    frame is its own state tensor (no concatenation or slicing in the program), the BatchNorms are folded into the
    convolutions, and ExecuTorch takes the (C, H, W) buffers channels-last (the manifest lists them). The whole
    step is one XNNPACK partition and equals the eager step over 2,000 steps, from an init state given NCHW.
    Fed NCHW bytes without the conversion, the same program computes something else without an error."""
    from executorch.runtime import Runtime

    from edgeseq.models.continual import OfflineModel
    from edgeseq.models.continual_step import Affine, ConvStep, Folded
    from edgeseq.runtimes.et import ProgramIO, channels_last_indices, padded_copy

    torch.manual_seed(0)
    model = OfflineModel(padded_clip_model(), (3, 8, 8), window=6, padding="stream")
    step = edgeseq.convert(model)
    assert not any(isinstance(m, Affine) for m in step.modules())  # both BatchNorms folded
    assert sum(isinstance(m, Folded) for m in step.modules()) == 2
    assert sum(isinstance(m, ConvStep) for m in step.modules()) == 3
    tensors = {t.name: t.shape for t in step.state_spec.tensors}
    assert tensors["0.buf0"] == tensors["0.buf1"] == (3, 8, 8)  # the 3x3x3 stem: two frames, one tensor each
    # names follow the offline stack's indices: 3 the residual (its skip's delay line), 4 the 5-frame conv
    assert [n for n in tensors if n.startswith("3.")] == ["3.body.0.buf0", "3.body.0.buf1", "3.skip.line0"]
    assert [n for n in tensors if n.startswith("4.")] == [f"4.buf{i}" for i in range(4)]
    assert tensors["5.buf0"] == (8,)  # the global pool buffers spatially pooled frames
    report = edgeseq.check_parity(model, step, torch.randn(1, T, 3 * 64))
    assert report.max_abs_error <= 1e-5, report.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "x3d", target="executorch", steps=T)
    man = art.manifest
    assert man["parity"]["steps"] == T and man["parity"]["max_abs_error"] <= 1e-5, man["parity"]
    g = man["graph"]
    assert g["partitions"] == 1 and g["non_delegated_ops"] == 0, g
    assert "cat" not in g["delegated"] and "slice_copy" not in g["delegated"], g["delegated"]
    cl = man["runtime"]["channels_last_state"]
    assert cl == [n for n, shape in tensors.items() if len(shape) == 3 and shape[1] * shape[2] > 1] and len(cl) >= 8
    # a ring buffer shifts by renaming: the program leaves those next-state tensors out, the runtime passes them on
    passed = man["runtime"]["passthrough_state"]
    rings: dict[str, int] = {}
    for n in tensors:
        if ".buf" in n:
            head, k = n.rsplit(".buf", 1)
            rings[head] = max(rings.get(head, 0), int(k))
    # buf k takes buf k+1; the last (the entering frame) is computed; delay lines keep their one frame computed
    assert passed == {f"{h}.buf{k}": f"{h}.buf{k + 1}" for h, last in rings.items() for k in range(last)}, passed
    meta = Runtime.get().load_program(str(art.path)).load_method("forward").metadata
    assert meta.num_outputs() == 1 + len(tensors) - len(passed)
    assert man["runtime"]["planned_inputs"] is False and not meta.input_tensor_meta(1).is_memory_planned()
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    r = CliRunner().invoke(app, ["inspect", str(art.path)])
    assert man["runtime"]["planned_outputs"] is False and not meta.output_tensor_meta(1).is_memory_planned()
    assert r.exit_code == 0 and (f"state I/O: inputs read in place, outputs written where the caller says; "
                                 f"{len(passed)} of {len(tensors)} state tensors "
                                 f"passed along by the runtime") in " ".join(r.output.split()), r.output
    state0 = [torch.randn(t.shape)[None] for t in step.state_spec.tensors]
    with torch.no_grad():
        _, nxt = step.step(torch.randn(1, 3 * 64), tuple(s.clone() for s in state0))
    names = list(tensors)
    for a, b in passed.items():  # numerically what the names say, on a random state
        assert torch.equal(nxt[names.index(a)], state0[names.index(b)])
    # a state from mid-stream (channels-last arrays, as the program gives them back) and the same values NCHW
    sess = edgeseq.open(art.path)
    xs = np.random.default_rng(0).standard_normal((50, 1, 3 * 64)).astype(np.float32)
    sess.run(xs[:40])
    state = [np.asarray(s) for s in sess.backend.run(xs[40], [t.numpy() for t in step.init_state(1)])[1]]
    for x in xs[:40]:
        _, state = sess.backend.run(x, state)
    idx = channels_last_indices(man)
    assert all(state[i].strides != np.ascontiguousarray(state[i]).strides for i in idx)  # really channels-last
    nchw = [np.ascontiguousarray(s) for s in state]
    y_cl, _ = sess.backend.run(xs[41], state)
    y_nchw, _ = sess.backend.run(xs[41], nchw)  # converted by ProgramIO.inputs: the same
    np.testing.assert_array_equal(y_cl, y_nchw)
    with torch.no_grad():
        y_ref, _ = step.step(torch.from_numpy(xs[41]), [torch.from_numpy(s) for s in nchw])
    assert np.abs(y_cl - y_ref.numpy()).max() <= 1e-5
    method = Runtime.get().load_program(str(art.path)).load_method("forward")
    raw = method.execute([torch.from_numpy(padded_copy(torch.from_numpy(a))) for a in (xs[41], *nchw)])[0].numpy()
    assert np.abs(raw - y_ref.numpy()).max() > 1e-3  # the silent failure ProgramIO.inputs prevents
    ok = method.execute(ProgramIO(man).inputs(xs[41], nchw))[0].numpy()
    assert np.abs(ok - y_ref.numpy()).max() <= 1e-5


def test_channels_last_state_names_come_from_the_manifest():
    from edgeseq.errors import ArtifactError
    from edgeseq.runtimes.et import channels_last_indices

    man = {"state_spec": {"tensors": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "runtime": {"channels_last_state": ["c", "a"]}}
    assert channels_last_indices(man) == {0, 2}
    # the step says which of its states are image frames; a Mamba-2 state is (heads, head dim, state dim): not one
    mamba2 = edgeseq.convert(edgeseq.build("mamba", variant="mamba2", d_model=16, head_dim=8, n_groups=2, d_in=3, d_out=2))
    assert any(len(t.shape) == 3 for t in mamba2.state_spec.tensors) and mamba2.image_states() == ()
    assert channels_last_indices({"state_spec": man["state_spec"], "runtime": {}}) == frozenset()  # older manifests
    with pytest.raises(ArtifactError, match="'d', which is not a state tensor"):
        channels_last_indices({"state_spec": man["state_spec"], "runtime": {"channels_last_state": ["d"]}})


def test_temporal_strides_give_one_output_every_product_of_strides(tmp_path):
    """A TCN that downsamples time (strided conv, AvgPool1d with its default stride = kernel): the step gives the
    offline output k at frame delay + k * 4 and marks the frames between as not ready."""
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    net = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 4, stride=2, padding=1), nn.ReLU(),
                        nn.AvgPool1d(2), nn.Conv1d(8, 8, 3, dilation=2, padding=2), nn.MaxPool1d(3, stride=1, padding=1),
                        nn.Conv1d(8, 2, 1))
    step = edgeseq.convert(net.eval())
    spec = step.state_spec
    # delays in each layer's own input frames, times the rate it runs at: 1 + 2*1 + 1*2 + 2*4 + 1*4
    assert (spec.delay, spec.output_stride, spec.receptive_field) == (17, 4, 32)
    report = edgeseq.check_parity(net, step, torch.randn(2, T, 3))
    assert report.steps == len(range(17, T, 4)) and report.max_abs_error <= 1e-5, report.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arts = [edgeseq.export(step, tmp_path / "strided", target=t, steps=400) for t in ("onnx", "executorch")]
    assert all(a.manifest["state_spec"]["output_stride"] == 4 for a in arts)
    sess = edgeseq.open(arts[1].path)
    ready = []
    for x in np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32):
        sess.push(x[None])
        ready.append(sess.ready)
    assert [i for i, r in enumerate(ready) if r] == [17, 21, 25, 29]
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((41, 3)).astype(np.float32))
    r = CliRunner().invoke(app, ["stream", str(arts[0].path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    assert "kept 6 of 41 outputs: the model gives one output every 4 frames after a delay of 17 frames" in " ".join(r.output.split())
    assert np.load(tmp_path / "y.npy").shape == (6, 2)

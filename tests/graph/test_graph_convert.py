"""The graph converter on users' own models: each streamed 2,000 frames against the model itself (fp32, max abs
error <= 1e-5), its state named after module paths, its delay and receptive field; refusals before any step
exists, naming the operation and the source line."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeseq
from edgeseq.errors import EdgeseqError, ShapeError
from edgeseq.graph import GraphStep

import user_models as M  # tests/graph/user_models.py

T = 2000


def _convert_and_check(model, example, long, time_axis=1):
    model.eval()
    step = edgeseq.convert(model, example=example, time_axis=time_axis)
    assert isinstance(step, GraphStep)
    report = edgeseq.check_parity(model, step, long)
    assert report.steps == T - step.state_spec.delay and report.max_abs_error <= 1e-5, report.summary()
    return step


def test_keyword_model_conv_gru_linear():
    torch.manual_seed(0)
    step = _convert_and_check(M.KeywordNet(), torch.randn(2, 40, 10), torch.randn(1, T, 10))
    assert step.state_spec.names == ("conv.buf", "gru.h0") and step.state_spec.delay == 0
    assert step.state_spec.receptive_field is None  # a recurrence: unbounded
    assert [t.shape for t in step.state_spec.tensors] == [(10, 4), (32,)]  # 4 past frames of 10 channels; h


def test_chomp_tcn_on_channels_time_layout():
    torch.manual_seed(0)
    step = _convert_and_check(M.ChompTCN(), torch.randn(2, 4, 40), torch.randn(1, 4, T), time_axis=-1)
    spec = step.state_spec
    assert spec.delay == 0 and spec.receptive_field == 1 + 2 * (1 + 2 + 4) * 2  # two k=3 convs per level, d = 1, 2, 4
    assert spec.names == tuple(f"blocks.{i}.conv{j}.buf" for i in range(3) for j in (1, 2))


def test_per_frame_subnetwork_folded_into_batch_then_lstm():
    """Time folded into the batch for a per-frame front-end (reflect padding and a strided convolution inside the
    frame, magnitudes, a mean over the frame), unfolded, an LSTM with batch_first=False, 2 layers and proj_size."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch: "LSTM with projections is not supported with oneDNN"
        step = _convert_and_check(M.AudioFrontLSTM(), torch.randn(2, 40, 64), torch.randn(1, T, 64))
    assert step.state_spec.names == ("lstm.h0", "lstm.c0", "lstm.h1", "lstm.c1")
    assert [t.shape for t in step.state_spec.tensors] == [(12,), (24,), (12,), (24,)]
    # the per-frame LayerNorms, the reflect padding and the mean over the frame run in their delegate-friendly forms
    # (edgeseq.graph.frame; within the 1e-5 above)
    kinds = sorted(step.info.config["ops"].values())
    assert kinds.count("FrameModule") == 2 and kinds.count("LastAxisMean") == kinds.count("FramePad") == 1, kinds


def test_non_causal_same_convolution_becomes_a_delay_and_the_skip_waits():
    torch.manual_seed(0)
    model = M.SameConvResidual()
    model.norm.running_mean.normal_()
    model.norm.running_var.uniform_(0.5, 2.0)
    step = _convert_and_check(model, torch.randn(2, 6, 40), torch.randn(1, 6, T), time_axis=-1)
    assert step.state_spec.delay == 2 and step.state_spec.receptive_field == 5
    assert step.state_spec.names == ("conv.buf", "x.delay.line")  # the residual's skip path delayed 2 frames


def test_previous_frame_differences_and_running_reductions():
    torch.manual_seed(0)
    step = _convert_and_check(M.Context(), torch.randn(2, 40, 5), torch.randn(1, T, 5) * 0.1)
    # one delay line for the previous frame, read twice; the running sum and product
    assert step.state_spec.names == ("getitem.delay.line", "cumsum.total", "cumprod.total")
    assert step.state_spec.tensors[2].fill == 1.0


def test_spectrogram_conv2d_with_time_on_the_last_axis():
    """Conv2d over (freq, time): the dilated causal kernel streams with a ring buffer of 4 frames of
    (channels, freq); the 'same' padding along time is a delay of 1; stride and groups act inside the frame."""
    torch.manual_seed(0)
    step = _convert_and_check(M.SpectrogramCNN(), torch.randn(2, 30, 16), torch.randn(1, T, 16))
    spec = step.state_spec
    assert spec.delay == 1 and spec.receptive_field == 1 + 4 + 2
    assert spec.names == tuple(f"c1.buf{i}" for i in range(4)) + ("c2.buf0", "c2.buf1")
    assert [t.shape for t in spec.tensors[:1] + spec.tensors[4:5]] == [(1, 16, 1), (4, 14, 1)]  # (C, F, unit)


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_video_conv3d_with_time_on_any_spatial_axis(axis):
    torch.manual_seed(0)
    step = _convert_and_check(M.VideoConv(axis), torch.randn(1, 10, 2, 5, 6), torch.randn(1, T, 2, 5, 6))
    # (channels, the two other spatial axes in their order): what one frame of the clip holds, whichever axis is time
    assert step.state_spec.delay == 1 and [t.shape for t in step.state_spec.tensors] == [(2, 5, 6)] * 2


def test_functional_conv1d_with_the_models_own_weight():
    torch.manual_seed(0)
    step = _convert_and_check(M.FunctionalConv(), torch.randn(2, 3, 20), torch.randn(1, 3, T), time_axis=-1)
    assert step.state_spec.names == ("conv1d.buf",) and step.state_spec.receptive_field == 7


def test_running_mean_max_min_and_per_frame_pairs():
    torch.manual_seed(0)
    step = _convert_and_check(M.RunningStats(), torch.randn(2, 20, 3), torch.randn(1, T, 3))
    spec = step.state_spec
    assert spec.names == ("cumsum.total", "arange.count", "cumsum_1.total", "arange_1.count", "cummax.total",
                          "cummin.total")
    assert [t.fill for t in spec.tensors][1:] == [1.0, 0.0, 0.0, np.finfo(np.float32).min, np.finfo(np.float32).max]


class _LookAhead(nn.Module):
    def forward(self, x):
        nxt = F.pad(x, (0, 0, 0, 1))[:, 1:]  # the next frame: one frame of look-ahead
        return x * nxt


def test_look_ahead_by_slicing_is_a_delay():
    torch.manual_seed(0)
    step = _convert_and_check(_LookAhead(), torch.randn(1, 20, 3), torch.randn(1, T, 3))
    assert step.state_spec.delay == 1 and step.state_spec.receptive_field == 2


class _WithRegistered(nn.Module):
    """An edgeseq family model used as a sub-module: its registered converter becomes a leaf of the graph."""

    def __init__(self, family, **kw):
        super().__init__()
        self.proj = nn.Linear(7, 12)
        self.core = edgeseq.build(family, d_in=12, d_out=5, **kw)

    def forward(self, x):
        return self.core(torch.tanh(self.proj(x))) * 2.0


@pytest.mark.parametrize("family,kw", [("aaren", dict(d_model=16, n_layers=1)), ("mamba", dict(d_model=16, n_layers=2))],
                         ids=["aaren", "mamba"])
def test_registered_model_inside_a_users_model_is_a_leaf(family, kw):
    torch.manual_seed(0)
    step = _convert_and_check(_WithRegistered(family, **kw), torch.randn(2, 40, 7), torch.randn(1, T, 7))
    alone = edgeseq.convert(edgeseq.build(family, d_in=12, d_out=5, **kw))
    assert step.state_spec.names == tuple(f"core.{n}" for n in alone.state_spec.names)


def test_registered_types_keep_their_own_converters():
    lstm = nn.LSTM(3, 8, batch_first=True)
    step = edgeseq.convert(lstm, example=torch.randn(1, 10, 3))
    assert not isinstance(step, GraphStep) and step.info.family == "rnn"


def test_a_model_without_converter_and_without_example_is_told_how():
    with pytest.raises(EdgeseqError, match=r"no converter for KeywordNet.*pass example="):
        edgeseq.convert(M.KeywordNet())


# ------------------------------------------------------------------------------------------------- refusals
class _Net(nn.Module):
    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _bidir(self, x):
    return self.gru(x)[0]


def _mean_over_time(self, x):
    return x - x.mean(dim=1, keepdim=True)


def _flip(self, x):
    return torch.flip(x, dims=[1])


def _upsampled(self, x):
    return x.repeat_interleave(2, dim=1)


def _out_of_phase(self, x):  # the convolution's frame j is ready at input frame 2j + 1, x[:, 2::2]'s at 2j + 2
    return self.conv(x.transpose(1, 2)).transpose(1, 2)[:, :-1] + x[:, 2::2]


def _final_state(self, x):
    out, h = self.gru(x)
    return out + h.transpose(0, 1)


def _two_outputs(self, x):
    return x * 2, x


def _data_dependent(self, x):
    if x.sum() > 0:
        return x
    return -x


def _last_frame(self, x):
    return x[:, -1]


def _cummax_indices(self, x):
    return x.cummax(1).indices.float()


def _max_over_time(self, x):
    return x - x.max(dim=1, keepdim=True)[0]


def _count_from_the_end(self, x):
    return x * torch.arange(x.size(1), 0, -1).reshape(1, -1, 1)


REFUSALS = [
    (_bidir, dict(gru=nn.GRU(4, 4, batch_first=True, bidirectional=True)), r"self\.gru \(GRU\) at .*is bidirectional"),
    (_mean_over_time, {}, r"\.mean\(\) at test_graph_convert\.py:\d+ .*reduces over the time axis|mixes frames"),
    (_flip, {}, r"torch\.flip at test_graph_convert\.py:\d+ .*mixes frames"),
    (_upsampled, {}, r"\.repeat_interleave\(\) at .*its length by a factor that is no whole fraction"),
    (_out_of_phase, dict(conv=nn.Conv1d(4, 4, 2, stride=2)), r"\+ at .*frames come at different phases"),
    (_final_state, dict(gru=nn.GRU(4, 4, batch_first=True)), r"final state \(h_n\) is used"),
    (_two_outputs, {}, r"returns tuple, not one tensor"),
    (_data_dependent, {}, r"cannot trace _Net\.forward.*control flow"),
    (_last_frame, {}, r"selects single frames"),
    (_cummax_indices, {}, r"\.cummax\(\) at test_graph_convert\.py:\d+ .*its indices are used"),
    (_max_over_time, {}, r"\.max\(\) at .*reduces over the time axis"),
    (_count_from_the_end, {}, r"torch\.arange at .*counts from a start that depends on the sequence length"),
]


@pytest.mark.parametrize("fn,mods,match", REFUSALS, ids=[r[0].__name__.strip("_") for r in REFUSALS])
def test_refusals_name_the_operation_and_line(fn, mods, match):
    with pytest.raises(EdgeseqError, match=match):
        edgeseq.convert(_Net(fn, **mods), example=torch.randn(1, 12, 4))


def test_bad_examples_are_refused():
    model = M.KeywordNet()
    with pytest.raises(ShapeError, match="fails on the example of shape"):
        edgeseq.convert(model, example=torch.randn(1, 20, 7))  # 7 features, the model takes 10
    with pytest.raises(ShapeError, match="batch and a time axis"):
        edgeseq.convert(model, example=torch.randn(20))
    with pytest.raises(ShapeError, match="time_axis 0 is the batch axis"):
        edgeseq.convert(model, example=torch.randn(1, 20, 10), time_axis=0)


# ------------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_exported_user_model_streams_like_the_model(target, tmp_path):
    """The generic step exports like the families' (validated over 2,000 steps before anything is written); its
    session, fed the model's frames, gives the model's own outputs; ExecuTorch runs it in one XNNPACK partition."""
    from extras import need  # tests/extras.py

    need(target if target == "executorch" else "onnxruntime", target)
    torch.manual_seed(0)
    model = M.KeywordNet().eval()
    step = edgeseq.convert(model, example=torch.randn(2, 40, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "kws", target=target)
    x = torch.randn(1, 1000, 10)
    got = edgeseq.open(art.path).run(x[0].numpy())
    with torch.no_grad():
        ref = model(x)[0].numpy()
    assert np.abs(got - ref).max() <= 1e-5
    assert art.manifest["family"] == "graph" and [t["name"] for t in art.manifest["state_spec"]["tensors"]] == ["conv.buf", "gru.h0"]
    if target == "executorch":
        g = art.manifest["graph"]
        assert g["partitions"] == 1 and g["non_delegated_ops"] == 0, g
        # the model's transposes only move the length-1 time axis: on one frame they are no ops (graph.ops.Flat)
        assert "permute_copy" not in g["delegated"] and g["delegated"].get("view_copy", 0) <= 2, g["delegated"]


def test_per_frame_norms_and_means_stay_in_one_xnnpack_partition(tmp_path):
    """nn.LayerNorm and a mean over the frame, as written, fall outside ExecuTorch's XNNPACK partition
    (native_layer_norm, mean); rewritten (edgeseq.graph.frame) the audio model runs in one partition."""
    from extras import need  # tests/extras.py

    need("executorch", "executorch")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = edgeseq.convert(M.AudioFrontLSTM().eval(), example=torch.randn(2, 40, 64))
        art = edgeseq.export(step, tmp_path / "audio", target="executorch", steps=500)
    g = art.manifest["graph"]
    assert g["partitions"] == 1 and g["non_delegated_ops"] == 0, g
    assert art.parity["max_abs_error"] <= 1e-5


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("n, pad", [(64, (4, 4)), (576, (0, 64)), (300, (7, 5))])
def test_padding_within_a_frame_is_exact_as_a_product_or_a_gather(n, pad, mode):
    """edgeseq.graph.frame.FramePad: a short frame's padding as a product with a 0/1 matrix (delegated with its
    neighbours), a long one's as an index_select; either way every sample equals F.pad's."""
    from edgeseq.graph.frame import FramePad

    op = FramePad(n, pad, mode)
    assert op.gather == (n * (n + sum(pad)) > FramePad.MATRIX_MAX)
    x = torch.randn(3, 2, n)
    y, state = op.step((x,), {}, (), 0)
    assert state == () and torch.equal(y, F.pad(x, pad, mode=mode))

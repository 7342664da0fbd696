"""continual-inference (co) networks: translated to plain torch.nn layers, converted, and compared with the
library's own forward_steps (an independent streaming implementation)."""

import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import UnsupportedModuleError

from extras import need  # tests/extras.py

co = need("continual", "importers", "continual-inference is the oracle of these tests")


def _randomise_bn(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_co_1d_network_converts_and_matches_its_own_forward_steps():
    net = _randomise_bn(co.Sequential(
        co.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
        co.Residual(co.Conv1d(8, 8, 5, padding=2, dilation=1)),
        co.Lambda(nn.Tanh()),
        co.AvgPool1d(2, stride=1), co.MaxPool1d(3, stride=1),
        co.Linear(8, 4, channel_dim=1),
    ))
    step = edgeseq.convert(net)  # 1D: the frame shape comes from the first convolution
    assert step.state_spec.delay == net.delay
    report = edgeseq.check_parity(net, step, torch.randn(2, 2000, 3))  # reference: co's forward_steps
    assert report.steps == 2000 - net.delay
    assert report.max_abs_error <= 1e-5, report.summary()


def test_co_3d_network_with_sliding_global_pool_matches_its_own_forward_steps():
    net = _randomise_bn(co.Sequential(
        co.Conv3d(3, 8, (3, 3, 3), padding=(1, 1, 1), stride=(1, 2, 2)), nn.BatchNorm3d(8), nn.ReLU(),
        co.Residual(co.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0))),
        co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=4),
        co.Linear(8, 5, channel_dim=1),
    ))
    model = edgeseq.from_continual(net, frame_shape=(3, 6, 6))
    step = edgeseq.convert(model)
    assert step.state_spec.delay == net.delay and step.d_out == 5
    T = 400
    x = torch.randn(1, T, 3 * 36)
    got = edgeseq.parity.rollout(step, x.transpose(0, 1).contiguous())[net.delay:, 0]
    with torch.no_grad():
        ref = net.forward_steps(x.reshape(1, T, 3, 6, 6).movedim(1, 2), pad_end=False)  # (1, 5, T - delay, 1, 1)
    assert (ref[0, :, :, 0, 0].T - got).abs().max().item() <= 1e-5
    # and the same step against our translation's offline form over 2,000 frames
    report = edgeseq.check_parity(model, step, torch.randn(1, 2000, 3 * 36))
    assert report.max_abs_error <= 1e-5, report.summary()


def test_co_modules_without_a_translation_are_named():
    layer = co.SingleOutputTransformerEncoderLayer(8, 2, 16, dropout=0.0, sequence_len=4)
    with pytest.raises(UnsupportedModuleError, match=r"module\.1\.0: co\.BroadcastReduce with reduce sum_last_pairs.*nn\.TransformerEncoderLayer"):
        edgeseq.from_continual(co.Sequential(co.Conv1d(8, 8, 1), layer))
    with pytest.raises(UnsupportedModuleError, match=r"module\.1: co\.Lambda\('<lambda>'\) is not a known frame-wise function"):
        edgeseq.convert(co.Sequential(co.Conv1d(2, 2, 1), co.Lambda(lambda x: x * 2)))
    with pytest.raises(UnsupportedModuleError, match=r"module\.1: co\.BroadcastReduce with reduce reduce_mul"):
        edgeseq.convert(co.Sequential(co.Conv1d(2, 2, 1), co.BroadcastReduce(co.Conv1d(2, 2, 1), co.Conv1d(2, 2, 1), reduce="mul")))


def test_padded_clip_model_read_with_stream_padding_equals_the_co_network():
    """OfflineModel(..., padding="stream") is continual-inference's reading of a clip model that pads time."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from test_continual import padded_clip_model

    from edgeseq.models.continual import OfflineModel

    net = padded_clip_model()
    theirs = co.Sequential(
        co.Conv3d(3, 8, (3, 3, 3), padding=(1, 1, 1), stride=(1, 2, 2)), net[1], nn.ReLU(),
        co.Residual(co.Sequential(co.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0)), net[3].body[1], nn.ReLU())),
        co.Conv3d(8, 8, (5, 1, 1), padding=(2, 0, 0)), co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=6),
        co.Linear(8, 4, channel_dim=1),
    ).eval()
    for mine, other in ((net[0], theirs[0]), (net[3].body[0], theirs[3][1][0]), (net[4], theirs[4]), (net[7], theirs[6])):
        other.load_state_dict(mine.state_dict())
    step = edgeseq.convert(OfflineModel(net, (3, 8, 8), window=6, padding="stream"))
    x = torch.randn(1, 300, 3 * 64)
    got = edgeseq.parity.rollout(step, x.transpose(0, 1).contiguous())[step.state_spec.delay:, 0]
    with torch.no_grad():
        ref = theirs.forward_steps(x.reshape(1, 300, 3, 8, 8).movedim(1, 2), pad_end=False)[0, :, :, 0, 0].T
    assert theirs.delay == step.state_spec.delay
    assert (ref - got).abs().max().item() <= 1e-5


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_co_parallel_branches_match_their_forward_steps(reduce):
    net = co.Sequential(
        co.Conv1d(3, 4, 1),
        co.BroadcastReduce(co.Conv1d(4, 4, 3, padding=1), co.Sequential(co.Conv1d(4, 4, 5, padding=2), nn.ReLU()),
                           co.Conv1d(4, 4, 1), reduce=reduce),
        co.Conv1d(4 if reduce == "sum" else 12, 2, 3, padding=1),
    ).eval()
    step = edgeseq.convert(net)
    assert step.state_spec.delay == net.delay
    report = edgeseq.check_parity(net, step, torch.randn(2, 2000, 3))
    assert report.max_abs_error <= 1e-5, report.summary()

"""Multi-rate steps: strided convolutions, pools and ``x[:, ::k]`` along time stream as a step that takes one input
frame and gives a valid output every k-th step (``state_spec.output_stride``); the session, the pool, the native
runner and the manifest read the rate from the state manifest. Every check compares with the model's own forward
on the whole sequence: its output k is the step's output at ``delay + k * stride``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import edgeseq
from edgeseq.errors import EdgeseqError
from extras import need  # tests/extras.py


class Subsampling(nn.Module):
    """A speech front-end: a causal stride-2 Conv1d (left padding of its own), then a GRU and a head."""

    def __init__(self, c=8, h=16, k=3):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(c, h, k, stride=2)
        self.gru = nn.GRU(h, h, batch_first=True)
        self.out = nn.Linear(h, 4)

    def forward(self, x):
        y = self.conv(F.pad(x.transpose(1, 2), (self.k - 1, 0))).transpose(1, 2)
        z, _ = self.gru(torch.relu(y))
        return self.out(z)


class Eightfold(nn.Module):
    """Three stride-2 convolutions (symmetric padding: the right half only adds frames at the end)."""

    def __init__(self, c=4, h=8):
        super().__init__()
        self.c1 = nn.Conv1d(c, h, 3, stride=2, padding=2)
        self.c2 = nn.Conv1d(h, h, 3, stride=2, padding=2)
        self.c3 = nn.Conv1d(h, h, 4, stride=2, padding=3)
        self.head = nn.Linear(h, 3)

    def forward(self, x):
        y = self.c3(torch.tanh(self.c2(torch.tanh(self.c1(x.transpose(1, 2))))))
        return self.head(y.transpose(1, 2))


class Pooled(nn.Module):
    """MaxPool1d(2), then an AvgPool1d(3, stride 2, padding 1): 4x."""

    def __init__(self, c=6):
        super().__init__()
        self.mp, self.ap, self.head = nn.MaxPool1d(2), nn.AvgPool1d(3, stride=2, padding=1), nn.Linear(c, 2)

    def forward(self, x):
        return self.head(self.ap(self.mp(x.transpose(1, 2))).transpose(1, 2))


class EveryThird(nn.Module):
    """``x[:, ::3]`` into a GRU, with a skip of the same frames."""

    def __init__(self, c=6):
        super().__init__()
        self.gru = nn.GRU(c, 8, batch_first=True)

    def forward(self, x):
        z, _ = self.gru(x[:, ::3])
        return z + x[:, ::3, :1]


class Residual(nn.Module):
    """A 2x downsampling, then a causal convolution with a residual around it (a chomp) and the previous frame
    (``F.pad(y, (1, 0))[:, :, :-1]``): delay lines at half the rate."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv1d(4, 8, 2, stride=2)
        self.conv = nn.Conv1d(8, 8, 3, padding=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.down(x.transpose(1, 2))
        y = y + self.conv(y)[:, :, :-2]
        y = y + F.pad(y, (1, 0))[:, :, :-1]
        return self.head(y.transpose(1, 2))


class Spectrogram(nn.Module):
    """(B, 1, F, T): Conv2d with stride 2 in time and frequency, BatchNorm2d, MaxPool2d(2, 2), a GRU over the
    frequency-folded channels: 4x, time on the last axis in and out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, (3, 3), stride=(2, 2), padding=(1, 0))
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d((2, 2))
        self.gru = nn.GRU(8, 8, batch_first=True)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = self.pool(torch.relu(self.bn(self.conv(F.pad(x, (2, 0))))))
        z, _ = self.gru(y.flatten(1, 2).transpose(1, 2))
        return z.transpose(1, 2).unsqueeze(1)


def _outputs(model, step, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(the step's outputs at delay + k * stride, the model's outputs k), both (n, d_out), over the same frames."""
    frames = step.frames_of(x)[0]
    state, ys = step.init_state(1), []
    with torch.no_grad():
        for f in frames:
            y, state = step.step(f[None], state)
            ys.append(y[0])
        ref = step.outputs_of(model(x))[0].numpy()
    spec = step.state_spec
    got = torch.stack(ys).numpy()[spec.delay::spec.output_stride]
    n = min(len(got), len(ref))
    assert n >= len(frames) // spec.output_stride - 2, (len(got), len(ref))
    return got[:n], ref[:n]


def _scaled_error(got, ref) -> float:
    return float((np.abs(got - ref).max(1) / np.maximum(1.0, np.abs(ref).max(1))).max())


def test_a_strided_front_end_streams_one_output_every_second_frame_over_2000_frames():
    torch.manual_seed(0)
    model = Subsampling().eval()
    step = edgeseq.convert(model, example=torch.randn(2, 40, 8))
    assert (step.state_spec.output_stride, step.state_spec.delay) == (2, 0)
    assert "frames" in step.state_spec.names  # the counter that tells the GRU which steps bring a frame
    got, ref = _outputs(model, step, torch.randn(1, 2000, 8))
    assert len(ref) == 1000
    assert _scaled_error(got, ref) <= 1e-5


@pytest.mark.parametrize("make,shape,axis,stride,delay", [
    (Eightfold, (1, 40, 4), 1, 8, 0),
    (Pooled, (1, 40, 6), 1, 4, 3),
    (EveryThird, (1, 40, 6), 1, 3, 0),
    (Residual, (1, 40, 4), 1, 2, 1),
    (Spectrogram, (1, 1, 8, 40), -1, 4, 2),
], ids=["conv-8x", "pools-4x", "slice-3x", "residual-2x", "conv2d-pool2d-4x"])
def test_strided_and_pooled_time_axes_stream_at_their_rate(make, shape, axis, stride, delay):
    torch.manual_seed(0)
    model = make().eval()
    step = edgeseq.convert(model, example=torch.randn(*shape), time_axis=axis)
    assert (step.state_spec.output_stride, step.state_spec.delay) == (stride, delay)
    long = list(shape)
    long[axis] = 960
    got, ref = _outputs(model, step, torch.randn(*long))
    assert _scaled_error(got, ref) <= 1e-5
    assert step.model_parity["max_scaled_error"] <= 1e-5  # the proof at conversion saw the same


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_a_strided_spectrogram_model_exports_and_the_session_and_pool_keep_its_outputs(target, tmp_path):
    need(target if target == "executorch" else "onnxruntime", target)
    from edgeseq.runtimes.pool import StreamPool

    torch.manual_seed(0)
    model = Spectrogram().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 1, 8, 40), time_axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "spec", target=target, steps=400, model=model,
                             **({"more_batches": (2,)} if target == "executorch" else {}))
    assert art.manifest["state_spec"]["output_stride"] == 4 and art.manifest["state_spec"]["delay"] == 2
    if target == "executorch":  # the fresh-frame mask (floor, not remainder) and the pools' maxima: all delegated
        g = art.manifest["graph"]
        assert g["partitions"] == 1 and g["non_delegated_ops"] == 0, g
    x = torch.randn(1, 1, 8, 400)
    with torch.no_grad():
        ref = step.outputs_of(model(x))[0].numpy()
    frames = step.frames_of(x)[0].numpy()
    sess, pool = edgeseq.open(art.path), StreamPool(art.path, 2)
    a, b = pool.join(), pool.join()
    kept, pooled = [], []
    for i, f in enumerate(frames):
        y = sess.push(f[None])
        if sess.ready:
            kept.append(y[0])
        out = pool.step({a: f, b: frames[-1 - i]})
        if pool.ready(a):
            pooled.append(out[a])
    assert len(kept) == len(pooled) == 100 and len(ref) == 100
    for got in (np.stack(kept), np.stack(pooled)):
        assert _scaled_error(got, ref) <= 1e-5


def test_the_native_runner_keeps_the_outputs_of_a_strided_step(tmp_path):
    need("executorch", "executorch")
    from extras import need_tool

    need_tool("g++", "g++")
    from edgeseq.runtimes import native

    torch.manual_seed(0)
    model = Subsampling().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 40, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "sub", target="executorch", steps=300, model=model)
    x = torch.randn(1, 300, 8)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    got = native.run(native.build("x86_64"), art.path, x[0].numpy(), all_steps=False)  # the ready steps only
    assert got.shape == ref.shape == (150, 4)
    assert _scaled_error(got, ref) <= 1e-5


def test_a_wrong_rate_is_refused_by_the_proof():
    """A stride the plan took for stride 1 (its rate check turned off) gives a step the proof refuses (twice the
    model's outputs): the runs at two lengths and the proof each stand between a wrong step and the user."""
    from edgeseq.graph import step as graph_step

    torch.manual_seed(0)
    model = Subsampling().eval()
    check = graph_step._check_rate
    conv = graph_step.find_builder

    def stride_one(gm, node):
        build = conv(gm, node)
        if build is None or node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.Conv1d):
            return build

        def at_rate_one(ctx):
            b = build(ctx)
            from dataclasses import replace

            return replace(b, timing=replace(b.timing, rate=1))
        return at_rate_one

    try:
        graph_step._check_rate = lambda node, timing: None
        graph_step.find_builder = stride_one
        with pytest.raises(EdgeseqError, match=r"the model gave outputs of shape \(1, 20, 4\).*the step \(1, 40, 4\)"):
            edgeseq.convert(model, example=torch.randn(1, 40, 8))
    finally:
        graph_step._check_rate, graph_step.find_builder = check, conv


class _Strides(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(2, 2, 1, stride=4) for _ in range(n))

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


def test_a_stride_product_past_the_limit_is_refused_in_one_line():
    with pytest.raises(EdgeseqError, match="strides multiply to 16384"):  # 4 ** 7
        edgeseq.convert(_Strides(7), example=torch.randn(1, 2, 64), time_axis=-1)


class _Phases(nn.Module):
    """Even frames plus odd frames: two stride-2 axes that start one frame apart."""

    def forward(self, x):
        return x[:, ::2] + x[:, 1::2]


class _OddFrames(nn.Module):
    def forward(self, x):
        return 2 * x[:, 1::2]


def test_strided_values_at_different_phases_are_refused_and_a_late_start_is_a_delay():
    with pytest.raises(EdgeseqError, match=r"test_rates\.py:\d+ .*different phases \(one frame every 2 input frames, "
                                           r"1 apart\)"):
        edgeseq.convert(_Phases(), example=torch.randn(1, 32, 3))
    step = edgeseq.convert(_OddFrames(), example=torch.randn(1, 32, 3))  # a start of 1 is the first output's delay
    assert (step.state_spec.delay, step.state_spec.output_stride) == (1, 2)
    x = torch.randn(1, 2001, 3)
    assert edgeseq.check_parity(_OddFrames(), step, x).max_abs_error == 0.0  # exact: 2 * x, frame for frame

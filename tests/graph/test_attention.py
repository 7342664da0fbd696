"""Causal attention over a window of the last W frames (edgeseq.graph.attention): F.scaled_dot_product_attention
and nn.MultiheadAttention with a band mask built from torch.arange stream with a ring buffer of W keys and values,
equal to the model over 2,000 frames; full causal attention and masks that are not a causal band are refused."""

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

T = 2000


def band(n: int, w: int, additive: bool = False):
    i = torch.arange(n)
    allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < w)
    return torch.zeros(n, n).masked_fill(~allowed, float("-inf")) if additive else allowed


class SDPA(nn.Module):
    """Multi-head attention written by hand: fused q, k, v projection chunked, heads, SDPA with a band mask."""

    def __init__(self, d=16, heads=2, window=8, additive=False, mask=band):
        super().__init__()
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.heads, self.window, self.additive, self.mask = heads, window, additive, mask

    def forward(self, x):  # (B, T, d)
        B, n, d = x.shape
        q, k, v = (z.reshape(B, n, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(n, self.window, self.additive))
        return self.out(y.transpose(1, 2).reshape(B, n, d))


class MHA(nn.Module):
    def __init__(self, d=16, window=6):
        super().__init__()
        self.inp, self.attn, self.head, self.window = nn.Linear(4, d), nn.MultiheadAttention(d, 4, batch_first=True), \
            nn.Linear(d, 3), window

    def forward(self, x):  # (B, T, 4)
        z = self.inp(x)
        blocked = ~band(x.shape[1], self.window)  # nn.MultiheadAttention: True = may not attend
        y, _ = self.attn(z, z, z, attn_mask=blocked, need_weights=False)
        return self.head(z + y)


def _rollout_error(model, step, x):
    state, ys = step.init_state(1), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = step.step(x[:, t], state)
            ys.append(y)
        ref = model(x)[0].numpy()
    got = torch.cat(ys).numpy()
    return float((np.abs(got - ref).max(1) / np.maximum(1.0, np.abs(ref).max(1))).max())


@pytest.mark.parametrize("additive", [False, True], ids=["bool-mask", "additive-mask"])
def test_sdpa_with_a_band_mask_streams_with_w_keys_and_values(additive):
    torch.manual_seed(0)
    model = SDPA(additive=additive).eval()
    step = edgeseq.convert(model, example=torch.randn(1, 32, 16))
    spec = {t.name: t.shape for t in step.state_spec.tensors}
    assert spec == {"windowed_attention.keys": (2, 8, 8), "windowed_attention.values": (2, 8, 8),
                    "windowed_attention.filled": (8,)}  # W = 8 keys and values per head: constant memory
    assert step.state_spec.receptive_field == 8
    assert _rollout_error(model, step, torch.randn(1, T, 16)) <= 1e-5


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_multihead_attention_with_a_band_mask_exports_and_streams(target, tmp_path):
    need(target if target == "executorch" else "onnxruntime", target)
    torch.manual_seed(0)
    model = MHA().eval()
    step = edgeseq.convert(model, example=torch.randn(1, 24, 4))
    assert step.state_spec.names == ("attn.keys", "attn.values", "attn.filled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "mha", target=target, steps=T, model=model)
    if target == "executorch":
        assert art.manifest["graph"]["partitions"] == 1 and art.manifest["graph"]["non_delegated_ops"] == 0
    x = torch.randn(T, 4)
    sess = edgeseq.open(art.path)
    got = np.concatenate([sess.push(f[None]) for f in x.numpy()])
    with torch.no_grad():
        ref = model(x[None])[0].numpy()
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def _full_causal(n, w, additive):
    i = torch.arange(n)
    return i[None, :] <= i[:, None]


def _symmetric(n, w, additive):
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() < w


class _IsCausal(nn.Module):
    def forward(self, x):
        q = x.unsqueeze(1)
        return F.scaled_dot_product_attention(q, q, q, is_causal=True)[:, 0]


@pytest.mark.parametrize("model,match", [
    (_IsCausal(), r"is full causal attention \(is_causal=True\): its keys and values grow with the stream\. Options: "
                  r"a window .*Aaren .*bounded KV cache"),
    (SDPA(mask=_full_causal), r"causal attention over every earlier frame \(its window grows with the length: 32 at "
                              r"32 frames, 33 at 33"),
    (SDPA(window=64), r"window grows with the length.*give an example longer than the window"),
    (SDPA(mask=_symmetric), r"attends to later frames"),
], ids=["is-causal", "full-causal-mask", "window-longer-than-example", "symmetric-band"])
def test_attention_that_cannot_stream_in_a_window_is_refused_naming_the_line(model, match):
    with pytest.raises(EdgeseqError, match=r"test_attention\.py:\d+ .*" + match):
        edgeseq.convert(model.eval(), example=torch.randn(1, 32, 16))

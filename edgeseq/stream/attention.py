"""Single-output attention over a window of frames (Continual Transformers): a ring buffer of keys and values."""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.step import StateTensor
from edgeseq.stream.base import Buffered, Ctx, FrameLayerNorm

class AttentionStep(Buffered):
    """``nn.TransformerEncoderLayer`` (batch_first) as single-output attention over the last ``window`` frames
    (Continual Transformers, Hedegaard et al.): the newest frame's query against a ring buffer of the window's
    keys and values, then the layer's feed-forward part on that one frame."""

    def __init__(self, layer: nn.TransformerEncoderLayer, ctx: Ctx, window: int):
        super().__init__()
        attn = layer.self_attn
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise ConfigError(f"{ctx.what}: attention with separate kdim/vdim, bias_k/bias_v or add_zero_attn is not supported")
        self.d, self.heads = attn.embed_dim, attn.num_heads
        self.span = self.delay = window - 1
        layer = copy.deepcopy(layer).eval()
        w, b = layer.self_attn.in_proj_weight.detach(), layer.self_attn.in_proj_bias
        # one linear per projection (no split op), the query pre-scaled by 1 / sqrt(head dim)
        scale = (self.d // self.heads) ** -0.5
        self.q, self.k, self.v = (nn.Linear(self.d, self.d, bias=b is not None) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(w[i * self.d : (i + 1) * self.d] * (scale if i == 0 else 1.0))
                if b is not None:
                    lin.bias.copy_(b[i * self.d : (i + 1) * self.d] * (scale if i == 0 else 1.0))
        self.out_proj = layer.self_attn.out_proj
        self.norm1, self.norm2 = FrameLayerNorm(layer.norm1), FrameLayerNorm(layer.norm2)
        self.linear1, self.linear2, self.activation = layer.linear1, layer.linear2, layer.activation
        self.norm_first = layer.norm_first

    def states(self):
        if not self.span:
            return ()
        return (StateTensor("k", (self.d, self.span)), StateTensor("v", (self.d, self.span)))

    def _attend(self, h, state, t):
        B, H = h.shape[0], self.heads
        dh = self.d // H
        q = self.q(h)
        keys, vals = self.k(h).reshape(B, self.d, 1), self.v(h).reshape(B, self.d, 1)
        if self.span:
            keys, vals = torch.cat([state[0], keys], dim=-1), torch.cat([state[1], vals], dim=-1)  # (B, D, W)
        w = keys.shape[-1]
        # 3D batched products over (batch x heads): no broadcasting, so no expand ops in the exported graph
        scores = torch.bmm(q.reshape(B * H, 1, dh), keys.reshape(B * H, dh, w))  # (B*H, 1, W)
        o = torch.bmm(torch.softmax(scores, dim=-1), vals.reshape(B * H, dh, w).transpose(1, 2))
        new = () if not self.span else (self.keep_ready(keys[..., 1:], state[0], t), self.keep_ready(vals[..., 1:], state[1], t))
        return self.out_proj(o.reshape(B, self.d)), new

    def step(self, x, state, t):
        ff = lambda y: self.linear2(self.activation(self.linear1(y)))  # noqa: E731
        if self.norm_first:
            sa, new = self._attend(self.norm1(x), state, t)
            y = x + sa
            return y + ff(self.norm2(y)), new
        sa, new = self._attend(x, state, t)
        y = self.norm1(x + sa)
        return self.norm2(y + ff(y)), new

"""Causal attention over a window of the last W frames, streamed with a ring buffer of W keys and values.

``F.scaled_dot_product_attention(q, k, v, attn_mask=band)`` whose mask (boolean, or additive 0 / -inf) lets frame
``i`` see frames ``i - W + 1 .. i``, however the model builds it (``torch.arange`` comparisons over the length,
``torch.ones(T, T).tril(...)``), is recognised before the time axes are analysed: the mask is evaluated at the
example's length and one frame longer, must be that band with the same W at both, and the call becomes
:func:`windowed_attention` (which builds the band itself). Its stream form keeps the last W keys and values and a
flag per slot (filled or not yet) as state. A mask that lets every earlier frame in (full causal attention, or
``is_causal=True``) is refused: its memory grows with the stream.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeseq.graph.ops import STREAM_OPS, Build, BuildCtx, GraphOp, Pair, full, no_pending_pad, refuse
from edgeseq.step import StateTensor
from edgeseq.stream.base import fresh_mask

aten = torch.ops.aten
SDPA = {F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default}
_MASKED = -1e30  # added to the scores of empty slots: exp() of it is 0 in float32


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None):
    """Attention of frame i to frames i - window + 1 .. i along the second-last axis of q, k, v."""
    T = q.shape[-2]
    i = torch.arange(T, device=q.device)
    band = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=band, scale=scale)


def _arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _window(mask: torch.Tensor, node: fx.Node) -> int:
    """W of a band mask (T, T) (leading size-1 axes allowed), or a refusal naming the node."""
    while mask.dim() > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise refuse(node, f"takes an attention mask of shape {tuple(mask.shape)}: a stream takes one (T, T) band "
                           "shared by every batch row and head")
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        finite = torch.isfinite(mask)
        if bool((mask[finite] != 0).any()) or bool((mask[~finite] > 0).any()):
            raise refuse(node, "adds a float attention mask with values other than 0 and -inf (a bias): only a window "
                               "mask streams")
        allowed = finite
    T = mask.shape[0]
    i = torch.arange(T)
    diff = i[:, None] - i[None, :]
    if bool((allowed & (diff < 0)).any()):
        raise refuse(node, "attends to later frames (its mask lets frame i see frames after i): not causal")
    width = int(allowed.sum(1).max())
    if not torch.equal(allowed, (diff >= 0) & (diff < width)):
        raise refuse(node, "takes a causal mask that is not a window of the last W frames (each frame sees itself "
                           "and the W - 1 before it): only such a band streams")
    return width


class WindowedMHA(nn.Module):
    """An ``nn.MultiheadAttention`` (``batch_first``) called with a band mask, as :func:`windowed_attention` between
    its own projections; returns ``(output, None)`` as the module does with ``need_weights=False``."""

    def __init__(self, mha: nn.MultiheadAttention, window: int):
        super().__init__()
        self.mha, self.window = mha, window
        E = mha.embed_dim
        with torch.no_grad():  # the three projections as weights of their own (slices of in_proj_weight, read in
            # the step, lowered to an addmm XNNPACK left outside its partition)
            if mha._qkv_same_embed_dim:
                w = mha.in_proj_weight.detach()
                ws = (w[:E], w[E:2 * E], w[2 * E:])
            else:
                ws = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
            b = mha.in_proj_bias
            bs = (None,) * 3 if b is None else (b.detach()[:E], b.detach()[E:2 * E], b.detach()[2 * E:])
        self.proj = nn.ModuleList()
        for w, b in zip(ws, bs):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).requires_grad_(False)
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
            self.proj.append(lin)

    def project(self, q, k, v):
        return self.proj[0](q), self.proj[1](k), self.proj[2](v)

    def heads(self, z):  # (B, T, E) -> (B, H, T, E / H)
        H = self.mha.num_heads
        return z.reshape(z.shape[0], z.shape[1], H, -1).transpose(1, 2)

    def merge(self, y):  # (B, H, T, E / H) -> (B, T, E) through the output projection
        y = y.transpose(1, 2)
        return self.mha.out_proj(y.reshape(y.shape[0], y.shape[1], -1))

    def forward(self, query, key, value):
        q, k, v = (self.heads(z) for z in self.project(query, key, value))
        return self.merge(windowed_attention(q, k, v, self.window)), None


def _mha_window(gm: fx.GraphModule, node: fx.Node, env_a: dict, env_b: dict) -> int | None:
    """W of an nn.MultiheadAttention call with a band attn_mask (True = masked out, as the module takes it)."""
    m = gm.get_submodule(node.target)
    mask = node.kwargs.get("attn_mask", node.args[5] if len(node.args) > 5 else None)
    causal = node.kwargs.get("is_causal", False)
    if mask is None:
        if causal:
            raise refuse(node, _FULL.format(what="full causal attention (is_causal=True)"))
        return None
    extra = set(node.kwargs) - {"attn_mask", "need_weights", "is_causal"}
    if (len(node.args) > 3 or extra or not m.batch_first or m.bias_k is not None or m.add_zero_attn
            or node.kwargs.get("need_weights", True) is not False):
        raise refuse(node, "is an nn.MultiheadAttention with a mask over time, called with something a stream cannot "
                           "take (batch_first=False, key_padding_mask, bias_k / add_zero_attn, or need_weights other "
                           "than False): call it as attn(x, x, x, attn_mask=band, need_weights=False)")
    a, b = env_a.get(mask), env_b.get(mask)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape == b.shape:
        return None
    if a.dtype == torch.bool:
        a, b = ~a, ~b  # the module's True means "may not attend"
    return _checked_window(node, a, b)


_FULL = ("is {what}: its keys and values grow with the stream. Options: a window (a band attn_mask of the last W "
         "frames, which streams in a ring buffer), Aaren (edgeseq.build('aaren', ...): attention as an RNN), or a "
         "bounded KV cache whose length you choose")


def _checked_window(node: fx.Node, a: torch.Tensor, b: torch.Tensor) -> int:
    wa, wb = _window(a, node), _window(b, node)
    T = a.shape[-1]
    if wa != wb or wa >= T:
        raise refuse(node, _FULL.format(what=f"causal attention over every earlier frame (its window grows with the "
                                             f"length: {wa} at {T} frames, {wb} at {T + 1}; a window longer than the "
                                             f"example looks the same: give an example longer than the window)"))
    return wa


def recognise(gm: fx.GraphModule, env_a: dict, env_b: dict) -> int:
    """Replace each ``scaled_dot_product_attention`` with a band mask by :func:`windowed_attention`; ``env_a`` and
    ``env_b``: the graph's values at the example's length and one frame longer. Returns how many."""
    graph = gm.graph
    found = 0
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.MultiheadAttention):
            window = _mha_window(gm, node, env_a, env_b)
            if window is not None:
                name = f"{node.target}_window".replace(".", "_")
                gm.add_submodule(name, WindowedMHA(gm.get_submodule(node.target), window))
                with graph.inserting_before(node):
                    new = graph.call_module(name, tuple(node.args[:3]))
                new.meta = dict(node.meta)
                new.meta["state_prefix"] = str(node.target)
                node.replace_all_uses_with(new)
                graph.erase_node(node)
                found += 1
            continue
        if node.op != "call_function" or node.target not in SDPA:
            continue
        mask = _arg(node, 3, "attn_mask")
        causal = _arg(node, 5, "is_causal", False)
        if mask is None and causal:
            raise refuse(node, _FULL.format(what="full causal attention (is_causal=True)"))
        if not isinstance(mask, fx.Node) or causal:
            continue
        if float(_arg(node, 4, "dropout_p", 0.0) or 0.0) != 0.0:
            continue
        a, b = env_a.get(mask), env_b.get(mask)
        q = env_a.get(node.args[0])
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or not isinstance(q, torch.Tensor):
            continue
        if a.shape == b.shape:
            continue  # a mask that does not grow with the length (over heads or features): not a time mask
        wa = _checked_window(node, a, b)
        scale = _arg(node, 6, "scale")
        with graph.inserting_before(node):
            new = graph.call_function(windowed_attention, (node.args[0], node.args[1], node.args[2], wa, scale))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        found += 1
    if found:
        graph.eliminate_dead_code()
        gm.recompile()
    return found


class WindowOp(GraphOp):
    """The stream form of :func:`windowed_attention`: the last W keys and values (oldest first) and a flag per slot
    (1 once a frame is in it) are the state; the frame's query attends to the filled slots."""

    def __init__(self, k_shape: tuple[int, ...], v_shape: tuple[int, ...], window: int, scale, first: int):
        super().__init__()
        self.k_shape, self.v_shape, self.window, self.scale, self.first = k_shape, v_shape, window, scale, first

    def states(self):
        W = self.window
        return (StateTensor("keys", (*self.k_shape[:-2], W, self.k_shape[-1])),
                StateTensor("values", (*self.v_shape[:-2], W, self.v_shape[-1])),
                StateTensor("filled", (W,)))

    def step(self, args, kwargs, state, t):
        q, k, v = (full(a) for a in args[:3])  # (B, ..., 1, d): the frame, its time axis kept
        keys, values, filled = state
        keys = torch.cat([keys[..., 1:, :], k], dim=-2)
        values = torch.cat([values[..., 1:, :], v], dim=-2)
        newest = filled[:, :1] * 0.0 + 1.0  # arithmetic, not ones_like: XNNPACK delegates it
        if self.first and t is not None:
            newest = fresh_mask(t, self.first, 1).reshape(-1, 1)  # before its first real frame the slot stays empty
        filled = torch.cat([filled[:, 1:], newest], dim=1)
        scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
        B, W = q.shape[0], self.window
        # heads folded into the batch: 3-D products are one bmm each (a 4-D matmul lowers with expand copies)
        q3, k3, v3 = q.reshape(-1, 1, q.shape[-1]), keys.reshape(-1, W, keys.shape[-1]), values.reshape(-1, W, values.shape[-1])
        scores = torch.bmm(q3, k3.transpose(1, 2)) * scale  # (B * heads, 1, W)
        heads = q3.shape[0] // B
        scores = (scores.reshape(B, heads, W) + (filled.reshape(B, 1, W) - 1.0) * -_MASKED).reshape(-1, 1, W)
        y = torch.bmm(torch.softmax(scores, dim=-1), v3)
        return y.reshape(*q.shape[:-1], values.shape[-1]), (keys, values, filled)


def _build(ctx: BuildCtx) -> Build:
    node = ctx.node
    no_pending_pad(ctx)
    q, k, v, window, scale = node.args
    out = ctx.env[node]
    axis = out.dim() - 2
    for a in (q, k, v):
        if not isinstance(a, fx.Node) or a.meta.get("time") != axis:
            raise refuse(node, "is windowed attention whose query, key and value do not all carry time on their "
                               "second-last axis")
    ts = [ctx.timing(a) for a in (q, k, v)]
    if len({(t.delay, t.first) for t in ts}) != 1:
        raise refuse(node, "is windowed attention over a query, key and value of different delays")
    shape = lambda a: tuple(ctx.env[a].shape[1:])  # noqa: E731
    t = ts[0]
    span = None if t.span is None else t.span + window - 1
    return Build(WindowOp(shape(k), shape(v), window, scale, t.first), replace(t, span=span))


class WindowedMHAOp(GraphOp):
    """The stream form of :class:`WindowedMHA`: the frame's projections, :class:`WindowOp`, the output projection."""

    def __init__(self, module: WindowedMHA, first: int):
        super().__init__()
        m = module.mha
        dh = m.embed_dim // m.num_heads
        self.module = module
        self.window = WindowOp((m.num_heads, 1, dh), (m.num_heads, 1, dh), module.window, None, first)

    def states(self):
        return self.window.states()

    def step(self, args, kwargs, state, t):
        mod = self.module
        q, k, v = (mod.heads(z) for z in mod.project(*(full(a) for a in args[:3])))  # (B, H, 1, dh)
        y, new = self.window.step((q, k, v), {}, state, t)
        return Pair(mod.merge(y), None), new


def _build_mha(ctx: BuildCtx) -> Build:
    node = ctx.node
    no_pending_pad(ctx)
    srcs = node.args[:3]
    for a in srcs:
        if not isinstance(a, fx.Node) or a.meta.get("time") != 1:
            raise refuse(node, "is windowed attention whose query, key and value do not carry time on axis 1")
    ts = [ctx.timing(a) for a in srcs]
    if len({(t.delay, t.first) for t in ts}) != 1:
        raise refuse(node, "is windowed attention over a query, key and value of different delays")
    module = ctx.gm.get_submodule(node.target)
    t = ts[0]
    span = None if t.span is None else t.span + module.window - 1
    return Build(WindowedMHAOp(module, t.first), replace(t, span=span),
                 ({0}, "its attention weights are used (need_weights=False gives None)"))


STREAM_OPS.register(windowed_attention, _build)
STREAM_OPS.register(WindowedMHA, _build_mha)

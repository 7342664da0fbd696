"""Family ``aaren``: Attention as an RNN (Feng et al., 2024, "Attention as an RNN", arXiv:2405.13956).

Aaren is softmax attention with a *learned query token* ``q`` over the sequence of keys and values. The
output at every prefix ``t`` is ``o_t = sum_{i<=t} softmax_i(q . k_i) v_i``. Written as a scan over leaves
``(m, u, w) = (s_i, 1, v_i)`` with ``s_i = q . k_i / sqrt(d_head)`` and the associative operator

    (mA, uA, wA) (+) (mB, uB, wB) = (m, uA e^(mA-m) + uB e^(mB-m), wA e^(mA-m) + wB e^(mB-m)),  m = max(mA, mB)

``o_t = w_t / u_t`` of the inclusive prefix. The parallel form computes every prefix at once with a
log-depth (Hillis-Steele) scan; the step form folds one new leaf into a constant-size state ``(m, u, w)``.

Module tree of the parallel form (:class:`AarenModel`)::

    AarenModel
      embed   nn.Linear(d_in, d_model)                              (B, T, d_in)    -> (B, T, D)
      blocks  n_layers x AarenBlock (pre-LayerNorm, as a Transformer block with Aaren in place of self-attention)
        norm1, attn: AarenAttention (q: (H, dh); k, v: nn.Linear(D, H*dh); out: nn.Linear(H*dh, D); H*dh = D
                     unless structured pruning removed heads)
        norm2, ff: Linear(D, d_ff) -> GELU -> Linear(d_ff, D)
      norm    nn.LayerNorm(D)
      head    nn.Linear(D, d_out)                                   (B, T, D)       -> (B, T, d_out)

Step state per layer: ``m{l}`` (H,), ``u{l}`` (H,), ``w{l}`` (H, dh). ``m`` starts at -1e30 (a large finite
negative: -inf would give NaN in exp(m - m') on the first step), ``u`` and ``w`` at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.config import check_fields, config_to_dict
from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError
from edgeseq.families import Family, register_family
from edgeseq.models.heads import task_output
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

M_INIT = -1e30  # initial running max: finite, far below any score
TASKS = ("sequence", "classify")


@dataclass(frozen=True)
class AarenConfig:
    d_in: int  # input features per step
    d_out: int  # head outputs per step (classes for task="classify")
    d_model: int = 64  # width D of the residual stream
    n_heads: int = 4  # attention heads H (D must divide by H unless head_width is set)
    n_layers: int = 2  # stacked Aaren blocks
    d_ff: int = 128  # feed-forward hidden width
    dropout: float = 0.0  # residual dropout while training
    task: str = "sequence"  # sequence: an output every step; classify: the output at the last step
    head_width: int = 0  # width per head dh; 0: d_model // n_heads (set by structured pruning, which removes heads)

    def __post_init__(self):
        check_fields(self, "aaren", choices={"task": TASKS}, positive=("d_in", "d_out", "d_model", "n_heads", "n_layers", "d_ff"))
        if self.head_width < 0:
            raise ConfigError(f"aaren config: head_width must be >= 0 (0: d_model // n_heads), got {self.head_width}")
        if not self.head_width and self.d_model % self.n_heads:
            raise ConfigError(f"aaren config: d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")

    @property
    def d_head(self) -> int:
        return self.head_width or self.d_model // self.n_heads

    @property
    def d_attn(self) -> int:
        """Width of the heads together (d_model unless heads were pruned)."""
        return self.n_heads * self.d_head


# ------------------------------------------------------------------------------------------------ the scan
def combine(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The associative operator on (m, u, w): ``a`` is the earlier segment, ``b`` the later one.

    m, u: (...,); w: (..., dh)."""
    ma, ua, wa = a
    mb, ub, wb = b
    m = torch.maximum(ma, mb)
    ea = torch.exp(ma - m)  # <= 1
    eb = torch.exp(mb - m)  # <= 1
    return m, ua * ea + ub * eb, wa * ea.unsqueeze(-1) + wb * eb.unsqueeze(-1)


def prefix_scan(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax-attention outputs at every prefix by a log-depth inclusive scan.

    s: (B, H, T) scores; v: (B, H, T, dh) values -> (B, H, T, dh). Hillis-Steele: ceil(log2 T) rounds, each
    combining every position with the partial result ``offset`` positions earlier.
    """
    m, u, w = s, torch.ones_like(s), v  # leaves
    T = s.shape[-1]
    offset = 1
    while offset < T:
        # earlier partials, padded with the identity (m = M_INIT, u = 0, w = 0) before the start
        m_prev = nn.functional.pad(m[..., :-offset], (offset, 0), value=M_INIT)
        u_prev = nn.functional.pad(u[..., :-offset], (offset, 0), value=0.0)
        w_prev = nn.functional.pad(w[..., :-offset, :], (0, 0, offset, 0), value=0.0)
        m, u, w = combine((m_prev, u_prev, w_prev), (m, u, w))
        offset *= 2
    return w / u.unsqueeze(-1)


def sequential_scan(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same outputs one step at a time (the recurrence the step form runs): the slow oracle of the scan."""
    B, H, T = s.shape
    m = torch.full((B, H), M_INIT, dtype=s.dtype, device=s.device)
    u = torch.zeros(B, H, dtype=s.dtype, device=s.device)
    w = torch.zeros(B, H, v.shape[-1], dtype=s.dtype, device=s.device)
    outs = []
    for t in range(T):
        m, u, w = combine((m, u, w), (s[..., t], torch.ones_like(u), v[..., t, :]))
        outs.append(w / u.unsqueeze(-1))
    return torch.stack(outs, dim=2)


def causal_attention_oracle(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain O(T^2) causal softmax attention with one query: out[t] = softmax(s[:t+1]) @ v[:t+1]."""
    T = s.shape[-1]
    scores = s.unsqueeze(-2).expand(*s.shape[:-1], T, T)  # (B, H, T_query, T_key): row t sees keys
    mask = torch.ones(T, T, dtype=torch.bool, device=s.device).tril()
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (B, H, T, T)
    return p @ v  # (B, H, T, dh)


# ------------------------------------------------------------------------------------------ parallel form
class AarenAttention(nn.Module):
    def __init__(self, c: AarenConfig):
        super().__init__()
        self.n_heads, self.d_head = c.n_heads, c.d_head
        self.query = nn.Parameter(torch.randn(c.n_heads, c.d_head) * c.d_head**-0.5)  # learned query token q
        self.key = nn.Linear(c.d_model, c.d_attn)
        self.value = nn.Linear(c.d_model, c.d_attn)
        self.out = nn.Linear(c.d_attn, c.d_model)

    def scores_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) -> s: (B, H, T), v: (B, H, T, dh)."""
        B, T, _ = x.shape
        k = self.key(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)
        v = self.value(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)
        s = (k * self.query[None, :, None, :]).sum(-1) / math.sqrt(self.d_head)  # (B, H, T)
        return s, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        s, v = self.scores_values(x)
        o = prefix_scan(s, v)  # (B, H, T, dh)
        return self.out(o.transpose(1, 2).reshape(B, T, self.n_heads * self.d_head))  # (B, T, D)


class AarenBlock(nn.Module):
    def __init__(self, c: AarenConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.d_model)
        self.attn = AarenAttention(c)
        self.norm2 = nn.LayerNorm(c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))  # (B, T, D)
        return x + self.drop(self.ff(self.norm2(x)))  # (B, T, D)


class AarenModel(nn.Module):
    """Parallel form: every prefix's output at once, by the log-depth scan (trainable, CPU and CUDA)."""

    def __init__(self, config: AarenConfig):
        super().__init__()
        self.config = config
        self.train_length: int | None = None
        c = config
        self.embed = nn.Linear(c.d_in, c.d_model)
        self.blocks = nn.ModuleList(AarenBlock(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.d_out)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_out): the output at every step (each sees only its prefix)."""
        h = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))  # (B, T, d_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return task_output(self.forward_steps(x), self.config.task, lengths)  # (B, T, d_out) or (B, d_out)


# ---------------------------------------------------------------------------------------------- step form
class AarenStep(StepModule):
    """One token per call; per layer the state (m, u, w) of every head: constant in the stream length.

    u and w are running sums over the whole stream, so their update stays float32 under a float16 scheme
    (``state_math_dtype``): the scores and values are cast up before they enter the sums, the read-out w / u
    back down before the output projection."""

    state_math_dtype = torch.float32

    def __init__(self, model: AarenModel):
        super().__init__()
        c = model.config
        self.config = c
        self.d_in, self.d_out = c.d_in, c.d_out
        self.embed = model.embed
        self.blocks = model.blocks
        self.norm = model.norm
        self.head = model.head
        tensors = []
        for layer in range(c.n_layers):
            tensors += [
                StateTensor(f"m{layer}", (c.n_heads,), fill=M_INIT),
                StateTensor(f"u{layer}", (c.n_heads,)),
                StateTensor(f"w{layer}", (c.n_heads, c.d_head)),
            ]
        self.state_spec = StateSpec(tuple(tensors))
        self.info = StepInfo(family="aaren", config=config_to_dict(c), task=c.task,
                             train_length=getattr(model, "train_length", None))

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.embed(x)  # (B, D)
        new: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            m, u, w = state[3 * i], state[3 * i + 1], state[3 * i + 2]  # (B, H), (B, H), (B, H, dh)
            a = block.attn
            z = block.norm1(h)  # (B, D)
            B = z.shape[0]
            k = a.key(z).view(B, a.n_heads, a.d_head)  # (B, H, dh)
            v = a.value(z).view(B, a.n_heads, a.d_head)  # (B, H, dh)
            s = ((k * a.query).sum(-1) / math.sqrt(a.d_head)).to(m.dtype)  # (B, H), in the state's dtype
            v = v.to(w.dtype)
            m_new = torch.maximum(m, s)
            e_old = torch.exp(m - m_new)  # rescales the running sums
            e_new = torch.exp(s - m_new)
            u_new = u * e_old + e_new  # (B, H)
            w_new = w * e_old.unsqueeze(-1) + v * e_new.unsqueeze(-1)  # (B, H, dh)
            o = (w_new / u_new.unsqueeze(-1)).reshape(B, -1).to(h.dtype)  # (B, H * dh)
            h = h + a.out(o)
            h = h + block.ff(block.norm2(h))
            new += [m_new, u_new, w_new]
        return self.head(self.norm(h)), tuple(new)


def convert_aaren(model: AarenModel) -> AarenStep:
    import copy

    return AarenStep(copy.deepcopy(model).eval())  # shares no parameters with the trainable model


def reference_aaren(model: AarenModel, x: torch.Tensor) -> torch.Tensor:
    return model.forward_steps(x)


register_family(Family(
    "aaren", AarenConfig, AarenModel, "Attention as an RNN: learned-query softmax attention by prefix scan",
    tiny=(("d_model", 16), ("n_heads", 2), ("n_layers", 2), ("d_ff", 32)),
))
register_converter(AarenModel, convert_aaren, reference_aaren)

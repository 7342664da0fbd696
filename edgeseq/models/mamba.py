"""Family ``mamba``: selective state-space models, Mamba-1 (Gu & Dao 2023, arXiv:2312.00752) and Mamba-2
(SSD, Dao & Gu 2024, arXiv:2405.21060), as variants of one family.

Module tree of the parallel form (:class:`MambaModel`)::

    MambaModel
      embed    nn.Linear(d_in, D), or nn.Embedding(vocab, D) for a language model, or nothing (embed=False)
      layers   n_layers x ResidualBlock: x + mixer(RMSNorm(x))
        MambaBlock (variant mamba1)
          in_proj   Linear(D, 2E)                      -> x, z               (B, T, E) each, E = expand * D
          conv1d    depthwise, kernel d_conv, causal   -> SiLU               (B, T, E)
          x_proj    Linear(E, dt_rank + 2N, no bias)   -> dt, B, C
          dt_proj   Linear(dt_rank, E) -> softplus                           (B, T, E)
          A = -exp(A_log) (E, N), D skip (E,)
          selective scan  h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = h_t C_t + D x_t
          y * SiLU(z) -> out_proj Linear(E, D)
        Mamba2Block (variant mamba2; H = E / head_dim heads, G groups)
          in_proj   Linear(D, E + (E + 2GN) + H)       -> z, (x, B, C), dt
          conv1d    depthwise causal over (x, B, C)    -> SiLU
          dt = softplus(dt + dt_bias), A = -exp(A_log) (H,), D (H,)
          SSD scan  per head h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T (P, N),  y_t = h_t C_t + D x_t
          GatedRMSNorm(y * SiLU(z)) -> out_proj Linear(E, D)
      norm_f   RMSNorm(D)                  (head "linear" or "norm")
      head     Linear(D, d_out)            (head "linear"; no bias for language models)

Parameter names follow the reference implementation, so Hugging Face and mambapy checkpoints map onto this
module name for name (see :mod:`edgeseq.importers`). The parallel scans live in :mod:`edgeseq.models.scan`
with their sequential oracles; on CUDA with the optional ``mamba_ssm`` package installed, training uses its
kernels instead. The constant-memory step form is :mod:`edgeseq.models.mamba_step`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.config import check_fields
from edgeseq.errors import ConfigError
from edgeseq.families import Family, register_family
from edgeseq.models.heads import task_output
from edgeseq.models.scan import selective_scan, ssd_scan
from edgeseq.step import check_token_ids

TASKS = ("sequence", "classify")
VARIANTS = ("mamba1", "mamba2")
HEADS = ("linear", "norm", "none")


@dataclass(frozen=True)
class MambaConfig:
    d_in: int  # input features per step (1 for token-id language models)
    d_out: int  # outputs per step (classes for task="classify"; the vocabulary for language models)
    d_model: int = 64  # residual width D
    n_layers: int = 2  # residual Mamba blocks
    d_state: int = 16  # SSM state size N (per channel for mamba1, per head channel for mamba2)
    d_conv: int = 4  # causal depthwise convolution kernel (>= 2)
    expand: int = 2  # inner width E = expand * D
    dt_rank: int = 0  # mamba1: rank of the dt projection; 0 = ceil(D / 16)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    task: str = "sequence"  # sequence: an output every step; classify: the output at the last step
    variant: str = "mamba1"  # mamba1 (selective scan) or mamba2 (SSD)
    head_dim: int = 16  # mamba2: channels P per head; heads H = E / P
    n_groups: int = 1  # mamba2: groups sharing B and C (and the gated norm); divides H
    chunk_size: int = 64  # mamba2: chunk length of the parallel SSD scan (speed only, not the result)
    vocab_size: int = 0  # > 0: a language model taking token ids (d_in = 1) through an embedding
    embed: bool = True  # continuous input: Linear(d_in, D); false: the input is the residual stream (d_in = D)
    head: str = "linear"  # linear: RMSNorm + Linear(D, d_out); norm: RMSNorm only; none: the raw stream (d_out = D)
    bias: bool = False  # bias in in_proj and out_proj
    conv_bias: bool = True  # bias in the causal convolution
    inner_width: int = 0  # inner width E; 0: expand * d_model (set by structured pruning, which removes channels)

    def __post_init__(self):
        def bad(msg):
            raise ConfigError(f"mamba config: {msg}")

        check_fields(self, "mamba", choices={"task": TASKS, "variant": VARIANTS, "head": HEADS},
                     positive=("d_in", "d_out", "d_model", "n_layers", "d_state", "expand", "head_dim", "n_groups", "chunk_size"))
        if self.d_conv < 2:
            bad(f"d_conv must be >= 2, got {self.d_conv}")
        if self.dt_rank < 0 or self.vocab_size < 0 or self.inner_width < 0:
            bad("dt_rank, vocab_size and inner_width must be >= 0")
        if self.vocab_size and self.d_in != 1:
            bad(f"a language model (vocab_size={self.vocab_size}) takes one token id per step: d_in must be 1, got {self.d_in}")
        if not self.vocab_size and not self.embed and self.d_in != self.d_model:
            bad(f"embed=false feeds the input straight into the residual stream: d_in must equal d_model ({self.d_model}), got {self.d_in}")
        if self.head != "linear" and self.d_out != self.d_model:
            bad(f"head={self.head!r} returns the residual stream: d_out must equal d_model ({self.d_model}), got {self.d_out}")
        if self.variant == "mamba2":
            if self.d_inner % self.head_dim:
                bad(f"mamba2: expand * d_model ({self.d_inner}) must be a multiple of head_dim ({self.head_dim})")
            if self.n_heads % self.n_groups:
                bad(f"mamba2: n_groups ({self.n_groups}) must divide the number of heads ({self.n_heads})")

    @property
    def d_inner(self) -> int:
        return self.inner_width or self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal convolution: x (mamba1); x, B and C (mamba2)."""
        return self.d_inner + (2 * self.n_groups * self.d_state if self.variant == "mamba2" else 0)


@functools.lru_cache(maxsize=1)
def mamba_ssm_kernels():
    """The CUDA kernels of the optional ``mamba_ssm`` package, or None when it is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a build without CUDA
        return None
    return selective_scan_fn, mamba_chunk_scan_combined


def softplus_inverse(dt: torch.Tensor) -> torch.Tensor:
    return dt + torch.log(-torch.expm1(-dt))


def init_dt(n: int) -> torch.Tensor:
    """dt drawn log-uniformly in [1e-3, 1e-1], as in the paper."""
    return torch.exp(torch.rand(n) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))


# ------------------------------------------------------------------------------------------ parallel form
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: RMSNorm(y * SiLU(z)) over each of ``groups`` equal slices of the channels."""

    def __init__(self, d: int, groups: int, eps: float):
        super().__init__()
        self.eps, self.groups = eps, groups
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = (y * nn.functional.silu(z)).unflatten(-1, (self.groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2) * self.weight


def causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution over time, x: (B, T, C) -> (B, T, C)."""
    return conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)


class MambaBlock(nn.Module):
    """The Mamba-1 mixer."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        E, N, R = c.d_inner, c.d_state, c.rank
        self.d_inner, self.d_state, self.d_conv, self.rank = E, N, c.d_conv, R
        self.in_proj = nn.Linear(c.d_model, 2 * E, bias=c.bias)
        self.conv1d = nn.Conv1d(E, E, c.d_conv, groups=E, padding=c.d_conv - 1, bias=c.conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E)
        with torch.no_grad():
            self.dt_proj.bias.copy_(softplus_inverse(init_dt(E)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, c.d_model, bias=c.bias)
        self.use_mamba_ssm = True  # on CUDA, when mamba_ssm is installed

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, T, E) each
        x = nn.functional.silu(causal_conv(self.conv1d, x))
        dt, B, C = self.x_proj(x).split([self.rank, self.d_state, self.d_state], dim=-1)
        dt = nn.functional.softplus(self.dt_proj(dt))  # (B, T, E)
        A = -torch.exp(self.A_log)  # (E, N)
        kernels = mamba_ssm_kernels() if (self.use_mamba_ssm and x.is_cuda) else None
        if kernels is not None:  # selective_scan_fn(u, delta, A, B, C, D) in (B, channels, T) layout
            y = kernels[0](x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.contiguous(),
                           B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float()).transpose(1, 2)
        else:
            a = torch.exp(dt.unsqueeze(-1) * A)  # (B, T, E, N), in (0, 1]
            b = (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N)
            h = selective_scan(a, b)  # (B, T, E, N)
            y = (h * C.unsqueeze(2)).sum(-1) + self.D * x  # (B, T, E)
        return self.out_proj(y * nn.functional.silu(z))  # (B, T, D)


class Mamba2Block(nn.Module):
    """The Mamba-2 mixer: one scalar decay per head, B and C shared per group, a gated RMSNorm before out_proj."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        E, N, H, G = c.d_inner, c.d_state, c.n_heads, c.n_groups
        self.d_inner, self.d_state, self.n_heads, self.n_groups, self.head_dim = E, N, H, G, c.head_dim
        self.chunk_size, self.conv_dim = c.chunk_size, c.conv_dim
        self.in_proj = nn.Linear(c.d_model, E + self.conv_dim + H, bias=c.bias)  # -> z, (x, B, C), dt
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, c.d_conv, groups=self.conv_dim, padding=c.d_conv - 1, bias=c.conv_bias)
        self.dt_bias = nn.Parameter(softplus_inverse(init_dt(H)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))  # (H,)
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(E, G, c.norm_eps)
        self.out_proj = nn.Linear(E, c.d_model, bias=c.bias)
        self.use_mamba_ssm = True

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Bsz, T, _ = u.shape
        E, N, H, G, P = self.d_inner, self.d_state, self.n_heads, self.n_groups, self.head_dim
        z, xbc, dt = self.in_proj(u).split([E, self.conv_dim, H], dim=-1)
        xbc = nn.functional.silu(causal_conv(self.conv1d, xbc))
        x, B, C = xbc.split([E, G * N, G * N], dim=-1)
        x, B, C = x.reshape(Bsz, T, H, P), B.reshape(Bsz, T, G, N), C.reshape(Bsz, T, G, N)
        dt = nn.functional.softplus(dt + self.dt_bias)  # (B, T, H)
        A = -torch.exp(self.A_log)  # (H,)
        kernels = mamba_ssm_kernels() if (self.use_mamba_ssm and x.is_cuda) else None
        if kernels is not None:  # mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size)
            y = kernels[1](x.contiguous(), dt.contiguous(), A, B.contiguous(), C.contiguous(), chunk_size=self.chunk_size)
        else:
            y = ssd_scan(x, dt, A, B, C, self.chunk_size)  # (B, T, H, P)
        y = (y + self.D[:, None] * x).reshape(Bsz, T, E)
        return self.out_proj(self.norm(y, z))


MIXERS = {"mamba1": MambaBlock, "mamba2": Mamba2Block}


class ResidualBlock(nn.Module):
    def __init__(self, c: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.mixer = MIXERS[c.variant](c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


class MambaModel(nn.Module):
    """Parallel form (trainable; CPU and CUDA): an input embedding, residual Mamba blocks, a task head.

    Continuous input (B, T, d_in) goes through ``Linear(d_in, D)`` (or straight in with ``embed=False``); a
    language model (``vocab_size > 0``) takes token ids (B, T) or (B, T, 1) through ``nn.Embedding``."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.train_length: int | None = None
        c = config
        if c.vocab_size:
            self.embed = nn.Embedding(c.vocab_size, c.d_model)
        elif c.embed:
            self.embed = nn.Linear(c.d_in, c.d_model)
        self.layers = nn.ModuleList(ResidualBlock(c) for _ in range(c.n_layers))
        if c.head != "none":
            self.norm_f = RMSNorm(c.d_model, c.norm_eps)
        if c.head == "linear":
            self.head = nn.Linear(c.d_model, c.d_out, bias=not c.vocab_size)  # language-model heads have no bias

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.vocab_size:
            ids = x[..., 0] if x.dim() == 3 else x
            check_token_ids(ids, c.vocab_size)
            return self.embed(ids.long())
        return self.embed(x) if c.embed else x

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed_input(x)  # (B, T, D)
        for layer in self.layers:
            h = layer(h)
        if self.config.head != "none":
            h = self.norm_f(h)
        return self.head(h) if self.config.head == "linear" else h  # (B, T, d_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return task_output(self.forward_steps(x), self.config.task, lengths)


register_family(Family(
    "mamba", MambaConfig, MambaModel, "selective SSM: Mamba-1, or Mamba-2 (SSD) with variant=mamba2",
    tiny=(("d_model", 16), ("n_layers", 2), ("d_state", 8), ("d_conv", 4), ("expand", 2), ("head_dim", 8)),
))

from edgeseq.models import mamba_step as _mamba_step  # noqa: E402,F401 - registers the converter

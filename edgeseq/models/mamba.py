"""Family ``mamba``: Mamba-1 selective state-space models (Gu & Dao, 2023, arXiv:2312.00752).

Module tree of the parallel form (:class:`MambaModel`, continuous input + task head)::

    MambaModel
      embed    nn.Linear(d_in, D)                                           (B, T, d_in) -> (B, T, D)
      layers   n_layers x ResidualBlock: x + MambaBlock(RMSNorm(x))
        MambaBlock
          in_proj   nn.Linear(D, 2*E, bias=False)      -> x, z               (B, T, E) each, E = expand * D
          conv1d    depthwise, kernel d_conv, causal   -> SiLU               (B, T, E)
          x_proj    nn.Linear(E, dt_rank + 2*N, bias=False) -> dt, B, C
          dt_proj   nn.Linear(dt_rank, E) -> softplus                        (B, T, E)
          A = -exp(A_log) (E, N), D skip (E,)
          selective scan  h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = h_t C_t + D x_t
          y * SiLU(z) -> out_proj nn.Linear(E, D, bias=False)
      norm_f   RMSNorm(D)
      head     nn.Linear(D, d_out)

The parallel selective scan is a log-depth (Hillis-Steele) scan over the associative pairs (a, b) of the
linear recurrence h_t = a_t h_{t-1} + b_t; :func:`sequential_selective_scan` is kept as its oracle. Step state
per layer: ``conv{l}`` (E, d_conv - 1), the last inputs of the causal convolution, and ``ssm{l}`` (E, N).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.config import config_to_dict
from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError
from edgeseq.families import Family, register_family
from edgeseq.models.heads import task_output
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

TASKS = ("sequence", "classify")


@dataclass(frozen=True)
class MambaConfig:
    d_in: int  # input features per step
    d_out: int  # head outputs per step (classes for task="classify")
    d_model: int = 64  # residual width D
    n_layers: int = 2  # residual Mamba blocks
    d_state: int = 16  # SSM state size N per channel
    d_conv: int = 4  # causal depthwise convolution kernel
    expand: int = 2  # inner width E = expand * D
    dt_rank: int = 0  # rank of the dt projection; 0 = ceil(D / 16)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    task: str = "sequence"  # sequence: an output every step; classify: the output at the last step

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"mamba config: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("d_in", "d_out", "d_model", "n_layers", "d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mamba config: {name} must be >= 1, got {getattr(self, name)}")
        if self.dt_rank < 0:
            raise ConfigError(f"mamba config: dt_rank must be >= 0, got {self.dt_rank}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)


# -------------------------------------------------------------------------------------------- the scans
def selective_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t (h_0 = 0) by a log-depth inclusive scan.

    a, b: (B, T, E, N) -> h: (B, T, E, N). Combining an earlier segment (a1, b1) with a later (a2, b2) gives
    (a1 a2, a2 b1 + b2); round k combines every position with the partial result 2^k positions earlier."""
    T = a.shape[1]
    offset = 1
    while offset < T:
        a_prev = nn.functional.pad(a[:, :-offset], (0, 0, 0, 0, offset, 0), value=1.0)  # identity: a = 1, b = 0
        b_prev = nn.functional.pad(b[:, :-offset], (0, 0, 0, 0, offset, 0), value=0.0)
        a, b = a_prev * a, a * b_prev + b
        offset *= 2
    return b


def sequential_selective_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence one step at a time: the oracle of :func:`selective_scan`."""
    h = torch.zeros_like(b[:, 0])
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


# ------------------------------------------------------------------------------------------ parallel form
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    def __init__(self, c: MambaConfig):
        super().__init__()
        E, N, R = c.d_inner, c.d_state, c.rank
        self.d_inner, self.d_state, self.d_conv, self.rank = E, N, c.d_conv, R
        self.in_proj = nn.Linear(c.d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, c.d_conv, groups=E, padding=c.d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E)
        with torch.no_grad():  # dt initialised in [1e-3, 1e-1] as in the paper (inverse softplus of the bias)
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, c.d_model, bias=False)

    def ssm_inputs(self, x: torch.Tensor):
        """x: (..., E) after the convolution -> dt (..., E), B (..., N), C (..., N)."""
        dt, B, C = self.x_proj(x).split([self.rank, self.d_state, self.d_state], dim=-1)
        return nn.functional.softplus(self.dt_proj(dt)), B, C

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        T = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, T, E) each
        x = nn.functional.silu(self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2))  # causal conv, (B, T, E)
        dt, B, C = self.ssm_inputs(x)  # (B, T, E), (B, T, N), (B, T, N)
        A = -torch.exp(self.A_log)  # (E, N)
        a = torch.exp(dt.unsqueeze(-1) * A)  # (B, T, E, N), in (0, 1]
        b = (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E, N)
        h = selective_scan(a, b)  # (B, T, E, N)
        y = (h * C.unsqueeze(2)).sum(-1) + self.D * x  # (B, T, E)
        return self.out_proj(y * nn.functional.silu(z))  # (B, T, D)


class ResidualBlock(nn.Module):
    def __init__(self, c: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.mixer = MambaBlock(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


class MambaModel(nn.Module):
    """Parallel form with continuous input and a task head (trainable; CPU and CUDA, PyTorch scan)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.train_length: int | None = None
        c = config
        self.embed = nn.Linear(c.d_in, c.d_model)
        self.layers = nn.ModuleList(ResidualBlock(c) for _ in range(c.n_layers))
        self.norm_f = RMSNorm(c.d_model, c.norm_eps)
        self.head = nn.Linear(c.d_model, c.d_out)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, T, D)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm_f(h))  # (B, T, d_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return task_output(self.forward_steps(x), self.config.task, lengths)


# ---------------------------------------------------------------------------------------------- step form
class MambaStep(StepModule):
    """One step per call; per layer ``conv{l}`` (E, d_conv - 1) and ``ssm{l}`` (E, N)."""

    def __init__(self, model: MambaModel):
        super().__init__()
        c = model.config
        self.config = c
        self.d_in, self.d_out = c.d_in, c.d_out
        self.embed, self.layers, self.norm_f, self.head = model.embed, model.layers, model.norm_f, model.head
        tensors = []
        for layer in range(c.n_layers):
            tensors += [StateTensor(f"conv{layer}", (c.d_inner, c.d_conv - 1)), StateTensor(f"ssm{layer}", (c.d_inner, c.d_state))]
        self.state_spec = StateSpec(tuple(tensors))
        self.info = StepInfo(family="mamba", config=config_to_dict(c), task=c.task,
                             train_length=getattr(model, "train_length", None))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.embed(x)  # (B, D)
        new: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            conv_s, ssm_s = state[2 * i], state[2 * i + 1]  # (B, E, K-1), (B, E, N)
            m = layer.mixer
            xz = m.in_proj(layer.norm(h))  # (B, 2E)
            xi, z = xz[:, : m.d_inner], xz[:, m.d_inner :]  # (B, E) each
            window = torch.cat([conv_s, xi.unsqueeze(-1)], dim=-1)  # (B, E, K): oldest ... newest
            w = m.conv1d.weight.squeeze(1)  # (E, K)
            xc = nn.functional.silu((window * w).sum(-1) + m.conv1d.bias)  # (B, E)
            dt, B, C = m.ssm_inputs(xc)  # (B, E), (B, N), (B, N)
            A = -torch.exp(m.A_log)  # (E, N)
            ssm_new = torch.exp(dt.unsqueeze(-1) * A) * ssm_s + (dt * xc).unsqueeze(-1) * B.unsqueeze(1)  # (B, E, N)
            y = (ssm_new * C.unsqueeze(1)).sum(-1) + m.D * xc  # (B, E)
            h = h + m.out_proj(y * nn.functional.silu(z))  # (B, D)
            new += [window[:, :, 1:], ssm_new]
        return self.head(self.norm_f(h)), tuple(new)


def convert_mamba(model: MambaModel) -> MambaStep:
    return MambaStep(copy.deepcopy(model).eval())


def reference_mamba(model: MambaModel, x: torch.Tensor) -> torch.Tensor:
    return model.forward_steps(x)


register_family(Family(
    "mamba", MambaConfig, MambaModel, "Mamba-1 selective SSM (continuous input + task head)",
    tiny=(("d_model", 16), ("n_layers", 2), ("d_state", 8), ("d_conv", 4), ("expand", 2)),
))
register_converter(MambaModel, convert_mamba, reference_mamba)

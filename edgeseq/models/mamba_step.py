"""The constant-memory step form of family ``mamba``, written so that XNNPACK can run all of it.

The converter folds what it can into the weights once, and writes every remaining operation as one the
XNNPACK delegate implements (its partitioner configs list them), because each operation that falls out of
the delegate costs a round trip through portable kernels:

* RMSNorm's gain is folded into the next linear layer; its mean of squares is a ``linear`` with a constant
  1/D row (``mean.dim`` is delegated only for 4-D inputs).
* in_proj and x_proj are split into one linear per output (z, x, dt, B, C): no ``split``/``select`` copies.
* softplus is ``relu(v) + log(1 + exp(-|v|))`` (``softplus`` lowers to ``gt``/``log1p``/``where``, none delegated).
* reductions are matrix products (y = h C) or row adds (the convolution window, kept time-major):
  ``sum.dim_IntList`` is not delegated.
* A = -exp(A_log) and the per-channel D of Mamba-2 are precomputed.

Exported with ``custom_ops=True`` (executorch), a layer's scan update is edgeseq's own operator instead
(:mod:`edgeseq.ops`; Mamba-1 and Mamba-2): one kernel call in place of seven (four) delegated operators, at the cost
of a partition boundary.

The state per layer: ``conv{l}`` (d_conv - 1, conv channels), the last inputs of the causal convolution, oldest
first, one frame per row; ``ssm{l}`` (E, N) for mamba1, (H, P, N) for mamba2.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeseq.config import config_to_dict
from edgeseq.convert import register_converter
from edgeseq.models.mamba import MambaConfig, MambaModel, ResidualBlock
from edgeseq.ops import ssm2_update, ssm_update
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _rows(lin: nn.Linear, start: int, stop: int, gain: torch.Tensor | None = None) -> nn.Linear:
    """Output rows [start, stop) of ``lin`` as their own layer; ``gain`` (the preceding RMSNorm weight) folded in."""
    w = lin.weight[start:stop]
    if gain is not None:
        w = w * gain[None, :]
    return _linear(w.detach(), None if lin.bias is None else lin.bias[start:stop].detach())


def softplus(v: torch.Tensor) -> torch.Tensor:
    """log(1 + e^v) from delegated operations only; stable for large |v|."""
    return torch.relu(v) + torch.log(1.0 + torch.exp(-torch.abs(v)))


class Normalize(nn.Module):
    """x / rms(x) over the last ``d`` channels (in groups of ``d``); the gain lives in the next layer."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean_row", torch.full((1, d), 1.0 / d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(nn.functional.linear(x * x, self.mean_row) + self.eps)


class CausalConvStep(nn.Module):
    """One step of a depthwise causal convolution with its window kept as state (K-1, C), oldest first.

    The window is time-major (a frame's C channels contiguous): the shift is a concatenation and a slice along the
    frame axis, whole rows, and the taps are K row products summed. Kept channel-major (C, K-1), the same step
    concatenated and sliced along the innermost axis, which XNNPACK copies element run by element run: 21 us a step
    at 512 channels and K = 4 here, against 2 us time-major (ExecuTorch 1.5.1, x86_64, one thread)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        w = conv.weight.detach()[:, 0]  # (C, K)
        self.K = w.shape[1]
        self.register_buffer("taps", w.t().contiguous()[None].clone())  # (1, K, C): tap k of every channel
        self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0]))

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C = x.shape
        full = torch.cat([window, x.view(B, 1, C)], dim=1)  # (B, K, C), oldest first
        p = full * self.taps
        acc = p[:, 0:1] + self.bias
        for k in range(1, self.K):  # contiguous row slices: one delegated add each (no reduction op)
            acc = acc + p[:, k : k + 1]
        return nn.functional.silu(acc.view(B, C)), full[:, 1:]


class Mamba1LayerStep(nn.Module):
    CUSTOM_OPS = ("ssm_update",)  # edgeseq.ops: the scan update as one operator, where custom_ops is set

    def __init__(self, block: ResidualBlock, c: MambaConfig):
        super().__init__()
        self.custom_ops = False
        m, g = block.mixer, block.norm.weight.detach()
        E, N, R = c.d_inner, c.d_state, c.rank
        self.E, self.N = E, N
        self.norm = Normalize(c.d_model, block.norm.eps)
        self.in_x, self.in_z = _rows(m.in_proj, 0, E, g), _rows(m.in_proj, E, 2 * E, g)
        self.conv = CausalConvStep(m.conv1d)
        self.x_dt, self.x_B, self.x_C = _rows(m.x_proj, 0, R), _rows(m.x_proj, R, R + N), _rows(m.x_proj, R + N, R + 2 * N)
        self.dt_proj = copy.deepcopy(m.dt_proj)
        self.register_buffer("A", -torch.exp(m.A_log.detach()))  # (E, N)
        self.register_buffer("D", m.D.detach().clone())
        self.out_proj = copy.deepcopy(m.out_proj)

    def forward(self, h: torch.Tensor, window: torch.Tensor, s: torch.Tensor):
        E, N = self.E, self.N
        hn = self.norm(h)
        x, window = self.conv(self.in_x(hn), window)  # (B, E)
        dt = softplus(self.dt_proj(self.x_dt(x)))  # (B, E)
        B, C = self.x_B(x), self.x_C(x)  # (B, N)
        if self.custom_ops:  # the same arithmetic as one operator (edgeseq.ops, an ExecuTorch kernel of edgeseq's)
            s, y = ssm_update(s, dt, x, self.A, B, C, self.D)
        else:
            s = torch.exp(dt.unsqueeze(-1) * self.A) * s + (dt * x).unsqueeze(-1) * B.view(-1, 1, N)  # (B, E, N)
            y = torch.bmm(s, C.view(-1, N, 1)).view(-1, E) + self.D * x  # (B, E)
        z = self.in_z(hn)
        return h + self.out_proj(y * nn.functional.silu(z)), window, s


class Mamba2LayerStep(nn.Module):
    CUSTOM_OPS = ("ssm2_update",)  # edgeseq.ops: the SSD update as one operator, where custom_ops is set

    def __init__(self, block: ResidualBlock, c: MambaConfig):
        super().__init__()
        self.custom_ops = False
        m, g = block.mixer, block.norm.weight.detach()
        E, N, H, G, P = c.d_inner, c.d_state, c.n_heads, c.n_groups, c.head_dim
        self.E, self.N, self.H, self.G, self.P = E, N, H, G, P
        self.norm = Normalize(c.d_model, block.norm.eps)
        self.in_z = _rows(m.in_proj, 0, E, g)
        self.in_xbc = _rows(m.in_proj, E, E + c.conv_dim, g)
        self.in_dt = _rows(m.in_proj, E + c.conv_dim, E + c.conv_dim + H, g)
        self.conv = CausalConvStep(m.conv1d)
        self.register_buffer("dt_bias", m.dt_bias.detach().clone())
        self.register_buffer("A", -torch.exp(m.A_log.detach()))  # (H,)
        self.register_buffer("D", m.D.detach().repeat_interleave(P))  # (E,): D of each channel's head
        self.gnorm = Normalize(E // G, m.norm.eps)
        self.out_proj = _rows(m.out_proj, 0, c.d_model, m.norm.weight.detach())

    def forward(self, h: torch.Tensor, window: torch.Tensor, s: torch.Tensor):
        E, N, H, G, P = self.E, self.N, self.H, self.G, self.P
        hn = self.norm(h)
        xbc, window = self.conv(self.in_xbc(hn), window)  # (B, E + 2GN)
        x, B, C = xbc[:, :E], xbc[:, E : E + G * N], xbc[:, E + G * N :]
        dt = softplus(self.in_dt(hn) + self.dt_bias)  # (B, H)
        if self.custom_ops:  # the same arithmetic as one operator (edgeseq.ops, an ExecuTorch kernel of edgeseq's)
            s, y = ssm2_update(s, dt, x, self.A, B, C, self.D)
        else:
            decay = torch.exp(dt * self.A).view(-1, G, H // G, 1, 1)
            u = (dt.view(-1, H, 1) * x.view(-1, H, P)).view(-1, G, H // G, P, 1)
            s = decay * s.view(-1, G, H // G, P, N) + u * B.view(-1, G, 1, 1, N)  # (B, G, H/G, P, N)
            y = torch.bmm(s.view(-1, (H // G) * P, N), C.reshape(-1, N, 1)).view(-1, E) + self.D * x  # (B, E)
            s = s.view(-1, H, P, N)
        gated = (y * nn.functional.silu(self.in_z(hn))).view(-1, G, E // G)
        return h + self.out_proj(self.gnorm(gated).view(-1, E)), window, s


LAYER_STEPS = {"mamba1": Mamba1LayerStep, "mamba2": Mamba2LayerStep}


class MambaStep(StepModule):
    """One step per call: token id (B, 1) or features (B, d_in) -> (B, d_out), with per-layer conv/ssm state."""

    def __init__(self, model: MambaModel):
        super().__init__()
        c = model.config
        self.config = c
        self.d_in, self.d_out, self.vocab_size = c.d_in, c.d_out, c.vocab_size
        self.embed = copy.deepcopy(model.embed) if (c.vocab_size or c.embed) else None
        self.layers = nn.ModuleList(LAYER_STEPS[c.variant](layer, c) for layer in model.layers)
        self.final_norm = Normalize(c.d_model, model.norm_f.eps) if c.head != "none" else None
        if c.head == "linear":
            self.head = _rows(model.head, 0, c.d_out, model.norm_f.weight.detach())
        elif c.head == "norm":
            self.register_buffer("gain", model.norm_f.weight.detach().clone())
        ssm_shape = (c.d_inner, c.d_state) if c.variant == "mamba1" else (c.n_heads, c.head_dim, c.d_state)
        tensors = []
        for i in range(c.n_layers):
            tensors += [StateTensor(f"conv{i}", (c.d_conv - 1, c.conv_dim)), StateTensor(f"ssm{i}", ssm_shape)]
        self.state_spec = StateSpec(tuple(tensors))
        self.info = StepInfo(family="mamba", config=config_to_dict(c), task=c.task,
                             train_length=getattr(model, "train_length", None))

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.vocab_size:
            h = self.embed(x).view(x.shape[0], -1)  # (B, 1) ids -> (B, D)
        else:
            h = self.embed(x) if self.embed is not None else x
        new: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            h, window, s = layer(h, state[2 * i], state[2 * i + 1])
            new += [window, s]
        c = self.config
        if c.head == "linear":
            h = self.head(self.final_norm(h))
        elif c.head == "norm":
            h = self.final_norm(h) * self.gain
        return h, tuple(new)


def convert_mamba(model: MambaModel) -> MambaStep:
    return MambaStep(model)


def reference_mamba(model: MambaModel, x: torch.Tensor) -> torch.Tensor:
    return model.forward_steps(x)


register_converter(MambaModel, convert_mamba, reference_mamba)

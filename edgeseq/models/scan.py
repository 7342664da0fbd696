"""Parallel scans of the linear recurrences behind selective state-space models, each with its sequential oracle.

* :func:`selective_scan` -- Mamba-1: h_t = a_t * h_{t-1} + b_t elementwise, by a log-depth (Hillis-Steele) scan.
* :func:`ssd_scan` -- Mamba-2 (state-space duality, Dao & Gu 2024, arXiv:2405.21060): one scalar decay per head,
  computed in chunks: inside a chunk the outputs are a masked, decay-weighted attention-like matmul; across
  chunks only the (H, P, N) chunk-end states are carried, so memory is O(T Q) rather than O(T P N).

Both run on CPU and CUDA in plain PyTorch and are differentiable. The oracles (:func:`sequential_selective_scan`,
:func:`sequential_ssd`) apply the recurrence one step at a time and are what the tests compare with.
"""

from __future__ import annotations

import torch
from torch import nn


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


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, G, N) per group -> (B, T, H, N) per head; head h belongs to group h // (H / G)."""
    return t.repeat_interleave(n_heads // t.shape[2], dim=2)


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Outputs of the Mamba-2 recurrence (without the D skip), chunked.

    x (B, T, H, P), dt (B, T, H) > 0, A (H,) < 0, B and C (B, T, G, N) with G dividing H. Per head:
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T (h: (P, N)), y_t = h_t C_t. Returns y (B, T, H, P).
    """
    Bsz, T, H, P = x.shape
    Q = max(1, min(chunk, T))
    pad = (-T) % Q
    Bh, Ch = _heads(B, H), _heads(C, H)  # (B, T, H, N)
    if pad:
        x, dt, Bh, Ch = (nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, Bh, Ch))
    nc = x.shape[1] // Q
    x, dt, Bh, Ch = (t.reshape(Bsz, nc, Q, *t.shape[2:]) for t in (x, dt, Bh, Ch))
    la = dt * A  # (B, nc, Q, H) log decay of each step, <= 0
    cs = la.cumsum(dim=2)  # log decay from the chunk start to each position (inclusive)
    # inside a chunk: y_i += sum_{j <= i} exp(cs_i - cs_j) (C_i . B_j) dt_j x_j
    seg = cs.unsqueeze(3) - cs.unsqueeze(2)  # (B, nc, Q_i, Q_j, H)
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(seg.masked_fill(~causal[:, :, None], float("-inf")))
    scores = torch.einsum("bcihn,bcjhn->bcijh", Ch, Bh) * decay * dt.unsqueeze(2)
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, x)
    # what each chunk adds to the state at its end, then the states carried from chunk to chunk
    to_end = torch.exp(cs[:, :, -1:] - cs) * dt  # (B, nc, Q, H)
    added = torch.einsum("bcjh,bcjhp,bcjhn->bchpn", to_end, x, Bh)  # (B, nc, H, P, N)
    chunk_decay = torch.exp(cs[:, :, -1])  # (B, nc, H)
    h = torch.zeros_like(added[:, 0])
    starts = []
    for c in range(nc):
        starts.append(h)
        h = chunk_decay[:, c, :, None, None] * h + added[:, c]
    start = torch.stack(starts, dim=1)  # (B, nc, H, P, N): the state entering each chunk
    y = y + torch.einsum("bcihn,bchpn->bcihp", Ch, start) * torch.exp(cs).unsqueeze(-1)
    return y.reshape(Bsz, nc * Q, H, P)[:, :T]


def sequential_ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The Mamba-2 recurrence one step at a time: the oracle of :func:`ssd_scan`."""
    Bsz, T, H, P = x.shape
    Bh, Ch = _heads(B, H), _heads(C, H)
    h = x.new_zeros(Bsz, H, P, Bh.shape[-1])
    out = []
    for t in range(T):
        a = torch.exp(dt[:, t] * A)[:, :, None, None]  # (B, H, 1, 1)
        h = a * h + (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * Bh[:, t, :, None, :]
        out.append((h * Ch[:, t, :, None, :]).sum(-1))
    return torch.stack(out, dim=1)

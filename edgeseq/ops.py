"""edgeseq's own operators, for the executorch target's ``custom_ops=True`` (docs/custom-ops.md).

XNNPACK runs the selective-scan update of a Mamba-1 step as six elementwise passes over the (E, N) state and a
batched matmul, each a separate operator. ``edgeseq::ssm_update`` is the whole update as one operator: its
ExecuTorch kernel (``runtimes/native/edgeseq_kernels.cpp``) makes one pass over the state. Each operator is
defined here twice, as ExecuTorch needs: the functional form the step calls (traced by ``torch.export``) and the
``.out`` form the program calls; both run the reference implementation below in PyTorch, and a shape-only
implementation on meta tensors.

A step module takes part by having a ``custom_ops`` attribute (``False`` by default) and the names of the
operators it then calls in ``CUSTOM_OPS``; :func:`enable` switches it on in a copy of the step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

OPS = {
    "ssm_update": (
        "ssm_update(Tensor s, Tensor dt, Tensor x, Tensor A, Tensor B, Tensor C, Tensor D) -> (Tensor, Tensor)",
        "ssm_update.out(Tensor s, Tensor dt, Tensor x, Tensor A, Tensor B, Tensor C, Tensor D, *, Tensor(a!) s_out, "
        "Tensor(b!) y_out) -> (Tensor(a!), Tensor(b!))",
    ),
}


def ssm_update_reference(s, dt, x, A, B, C, D):
    """One Mamba-1 selective-scan step: s (b, E, N), dt and x (b, E), A (E, N), B and C (b, N), D (E,) ->
    (s', y): s' = exp(dt A) s + (dt x) B, y = s' C + D x; the arithmetic of ``Mamba1LayerStep`` without the op."""
    N, E = A.shape[1], A.shape[0]
    s = torch.exp(dt.unsqueeze(-1) * A) * s + (dt * x).unsqueeze(-1) * B.view(-1, 1, N)
    y = torch.bmm(s, C.view(-1, N, 1)).view(-1, E) + D * x
    return s, y


def _check(s, dt, x, A, B, C, D) -> None:
    b, E, N = s.shape if s.dim() == 3 else (None, None, None)
    want = {"s": (b, E, N), "dt": (b, E), "x": (b, E), "A": (E, N), "B": (b, N), "C": (b, N), "D": (E,)}
    for name, t in zip(want, (s, dt, x, A, B, C, D)):
        if b is None or tuple(t.shape) != want[name] or t.dtype != torch.float32:
            raise ValueError(f"edgeseq::ssm_update: {name} is {tuple(t.shape)} {t.dtype}, expected float32 "
                             f"{want[name] if b is not None else '(batch, E, N)'}")


def _ssm_update(s, dt, x, A, B, C, D):
    _check(s, dt, x, A, B, C, D)
    return ssm_update_reference(s, dt, x, A, B, C, D)


def _ssm_update_out(s, dt, x, A, B, C, D, *, s_out, y_out):
    s_new, y = _ssm_update(s, dt, x, A, B, C, D)
    s_out.copy_(s_new)
    y_out.copy_(y)
    return s_out, y_out


def _ssm_update_meta(s, dt, x, A, B, C, D):
    _check(s, dt, x, A, B, C, D)
    return torch.empty_like(s), torch.empty_like(x)


def _ssm_update_out_meta(s, dt, x, A, B, C, D, *, s_out, y_out):
    _check(s, dt, x, A, B, C, D)
    return s_out, y_out


def _define() -> torch.library.Library:
    lib = torch.library.Library("edgeseq", "FRAGMENT")
    for functional, out in OPS.values():
        lib.define(functional)
        lib.define(out)
    lib.impl("ssm_update", _ssm_update, "CompositeExplicitAutograd")
    lib.impl("ssm_update.out", _ssm_update_out, "CompositeExplicitAutograd")
    lib.impl("ssm_update", _ssm_update_meta, "Meta")
    lib.impl("ssm_update.out", _ssm_update_out_meta, "Meta")
    return lib


_LIB = _define()


def ssm_update(s, dt, x, A, B, C, D):
    """``torch.ops.edgeseq.ssm_update``: (s', y) as :func:`ssm_update_reference`, one operator in an export."""
    return torch.ops.edgeseq.ssm_update(s, dt, x, A, B, C, D)


def enable(step: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``step`` whose modules call edgeseq's operators where they have one, and those operators' names
    (``edgeseq::name``), empty where none applies (the copy is then the step's own arithmetic)."""
    step = copy.deepcopy(step)
    used: set[str] = set()
    for m in step.modules():
        names = getattr(type(m), "CUSTOM_OPS", ())
        if names and hasattr(m, "custom_ops"):
            m.custom_ops = True
            used.update(f"edgeseq::{n}" for n in names)
    return step, sorted(used)

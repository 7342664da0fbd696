"""edgeseq's own operators, for the executorch target's ``custom_ops=True`` (docs/custom-ops.md).

XNNPACK runs the selective-scan update of a Mamba-1 step as six elementwise passes over the (E, N) state and a
batched matmul, each a separate operator (Mamba-2's: three passes and the matmul). ``edgeseq::ssm_update`` (Mamba-1)
and ``edgeseq::ssm2_update`` (Mamba-2) are the whole update as one operator: their ExecuTorch kernels
(``runtimes/native/edgeseq_kernels.cpp``) make one pass over the state. Each operator is
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

_ARGS = "Tensor s, Tensor dt, Tensor x, Tensor A, Tensor B, Tensor C, Tensor D"
OPS = {  # name: (functional schema, out schema)
    name: (f"{name}({_ARGS}) -> (Tensor, Tensor)",
           f"{name}.out({_ARGS}, *, Tensor(a!) s_out, Tensor(b!) y_out) -> (Tensor(a!), Tensor(b!))")
    for name in ("ssm_update", "ssm2_update")
}


def ssm_update_reference(s, dt, x, A, B, C, D):
    """One Mamba-1 selective-scan step: s (b, E, N), dt and x (b, E), A (E, N), B and C (b, N), D (E,) ->
    (s', y): s' = exp(dt A) s + (dt x) B, y = s' C + D x; the arithmetic of ``Mamba1LayerStep`` without the op."""
    N, E = A.shape[1], A.shape[0]
    s = torch.exp(dt.unsqueeze(-1) * A) * s + (dt * x).unsqueeze(-1) * B.view(-1, 1, N)
    y = torch.bmm(s, C.view(-1, N, 1)).view(-1, E) + D * x
    return s, y


def ssm2_update_reference(s, dt, x, A, B, C, D):
    """One Mamba-2 (SSD) step: s (b, H, P, N), dt (b, H), x (b, H P), A (H,), B and C (b, G N), D (H P,) -> (s', y):
    per head h of group g, s'[h] = exp(dt_h A_h) s[h] + (dt_h x[h]) B_g, y = s' C_g + D x; the arithmetic of
    ``Mamba2LayerStep`` without the op."""
    H, P, N = s.shape[1:]
    G, E = B.shape[1] // N, H * P
    decay = torch.exp(dt * A).view(-1, G, H // G, 1, 1)
    u = (dt.view(-1, H, 1) * x.view(-1, H, P)).view(-1, G, H // G, P, 1)
    s = decay * s.view(-1, G, H // G, P, N) + u * B.view(-1, G, 1, 1, N)  # (b, G, H/G, P, N)
    y = torch.bmm(s.view(-1, (H // G) * P, N), C.reshape(-1, N, 1)).view(-1, E) + D * x
    return s.view(-1, H, P, N), y


def _shapes(name, s, B) -> dict | None:
    """The shape each operand must have, from s (and B's groups); None where s itself is wrong."""
    if name == "ssm_update" and s.dim() == 3:
        b, E, N = s.shape
        return {"s": (b, E, N), "dt": (b, E), "x": (b, E), "A": (E, N), "B": (b, N), "C": (b, N), "D": (E,)}
    if name == "ssm2_update" and s.dim() == 4 and B.dim() == 2 and s.shape[3] > 0:
        b, H, P, N = s.shape
        G = B.shape[1] // N
        if G < 1 or H % G:
            return None
        return {"s": (b, H, P, N), "dt": (b, H), "x": (b, H * P), "A": (H,), "B": (b, G * N), "C": (b, G * N),
                "D": (H * P,)}
    return None


def _check(name, s, dt, x, A, B, C, D) -> None:
    want = _shapes(name, s, B)
    if want is None:
        raise ValueError(f"edgeseq::{name}: s is {tuple(s.shape)} with B {tuple(B.shape)}: "
                         + ("expected (batch, E, N)" if name == "ssm_update" else
                            "expected (batch, H, P, N), B (batch, G N) with G dividing H"))
    for arg, t in zip(want, (s, dt, x, A, B, C, D)):
        if tuple(t.shape) != want[arg] or t.dtype != torch.float32:
            raise ValueError(f"edgeseq::{name}: {arg} is {tuple(t.shape)} {t.dtype}, expected float32 {want[arg]}")


REFERENCES = {"ssm_update": ssm_update_reference, "ssm2_update": ssm2_update_reference}


def _define() -> torch.library.Library:
    lib = torch.library.Library("edgeseq", "FRAGMENT")
    for name, (functional, out) in OPS.items():
        lib.define(functional)
        lib.define(out)

        def run(*args, _name=name):
            _check(_name, *args)
            return REFERENCES[_name](*args)

        def run_out(*args, s_out, y_out, _run=run):
            s_new, y = _run(*args)
            s_out.copy_(s_new)
            y_out.copy_(y)
            return s_out, y_out

        def meta(s, dt, x, A, B, C, D, _name=name):
            _check(_name, s, dt, x, A, B, C, D)
            return torch.empty_like(s), torch.empty_like(x)

        def meta_out(*args, s_out, y_out, _meta=meta):
            _meta(*args)
            return s_out, y_out

        lib.impl(name, run, "CompositeExplicitAutograd")
        lib.impl(f"{name}.out", run_out, "CompositeExplicitAutograd")
        lib.impl(name, meta, "Meta")
        lib.impl(f"{name}.out", meta_out, "Meta")
    return lib


_LIB = _define()


def ssm_update(s, dt, x, A, B, C, D):
    """``torch.ops.edgeseq.ssm_update``: (s', y) as :func:`ssm_update_reference`, one operator in an export."""
    return torch.ops.edgeseq.ssm_update(s, dt, x, A, B, C, D)


def ssm2_update(s, dt, x, A, B, C, D):
    """``torch.ops.edgeseq.ssm2_update``: (s', y) as :func:`ssm2_update_reference`, one operator in an export."""
    return torch.ops.edgeseq.ssm2_update(s, dt, x, A, B, C, D)


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

"""ONNX's own recurrent ops (``LSTM``, ``GRU``, ``RNN``) for the rnn family's cells, wherever they sit in a step.

The rnn family's step computes its gates with ``nn.Linear`` matmuls (what quantizers and XNNPACK see best). On
onnxruntime, one fused ``GRU`` node can beat the dozen nodes of its gates (per-node overhead dominates a small
cell), and for other sizes the gates win. So the onnx exporter writes both and keeps the faster, measured there
(:func:`time_onnx` on onnxruntime, one thread, the export's batch), and records both times in the manifest.

How the fused form is written: :func:`fuse_rnn_cells` returns a copy of the step whose cells
(:class:`~edgeseq.models.rnn.LSTMCellStep` without a projection, ``GRUCellStep``, ``ElmanCellStep``: in the rnn
family's steps and as leaves of the graph converter's steps alike) call a custom op on weights already in ONNX's
layout, ``edgeseq::onnx_lstm_cell`` and the like; :data:`TRANSLATIONS` tells torch's ONNX exporter to write each as
the one ONNX node over a sequence of length 1. The custom ops' own (eager) implementations compute ONNX's
definitions in PyTorch: they are what the export traces, and what the test of the layouts runs.

ONNX's gate orders (onnx/docs/Operators.md, LSTM / GRU): LSTM ``i, o, f, c`` (PyTorch: i, f, g, o); GRU
``z, r, h`` (PyTorch: r, z, n), with ``linear_before_reset=1`` for PyTorch's ``n = tanh(W_in x + b_in + r *
(W_hn h + b_hn))``; biases ``[Wb | Rb]``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from edgeseq.models.rnn import ElmanCellStep, GRUCellStep, LSTMCellStep

_LIB = "edgeseq"


# ------------------------------------------------------------------------------------ the custom ops (ONNX layout)
@torch.library.custom_op(f"{_LIB}::onnx_lstm_cell", mutates_args=())
def onnx_lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, W: torch.Tensor, R: torch.Tensor,
                   B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX LSTM, one step: W (1, 4H, in), R (1, 4H, H), B (1, 8H), gates i, o, f, c."""
    H = h.shape[-1]
    g = x @ W[0].T + h @ R[0].T + B[0, : 4 * H] + B[0, 4 * H:]  # (batch, 4H)
    i, o, f, cc = (g[:, k * H:(k + 1) * H] for k in range(4))
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cc)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


@onnx_lstm_cell.register_fake
def _(x, h, c, W, R, B):
    return torch.empty_like(h), torch.empty_like(c)


@torch.library.custom_op(f"{_LIB}::onnx_gru_cell", mutates_args=())
def onnx_gru_cell(x: torch.Tensor, h: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """ONNX GRU with linear_before_reset=1, one step: W (1, 3H, in), R (1, 3H, H), B (1, 6H), gates z, r, h."""
    H = h.shape[-1]
    gi = x @ W[0].T + B[0, : 3 * H]  # (batch, 3H)
    gh = h @ R[0].T + B[0, 3 * H:]
    z = torch.sigmoid(gi[:, :H] + gh[:, :H])
    r = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


@onnx_gru_cell.register_fake
def _(x, h, W, R, B):
    return torch.empty_like(h)


@torch.library.custom_op(f"{_LIB}::onnx_rnn_cell", mutates_args=())
def onnx_rnn_cell(x: torch.Tensor, h: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor,
                  relu: bool) -> torch.Tensor:
    """ONNX RNN, one step: W (1, H, in), R (1, H, H), B (1, 2H), activation Tanh or Relu."""
    H = h.shape[-1]
    a = x @ W[0].T + h @ R[0].T + B[0, :H] + B[0, H:]
    return torch.relu(a) if relu else torch.tanh(a)


@onnx_rnn_cell.register_fake
def _(x, h, W, R, B, relu):
    return torch.empty_like(h)


# ------------------------------------------------------------------------------------ their ONNX translations
def _lstm_onnx(x, h, c, W, R, B):
    from onnxscript import opset18 as op

    _, y_h, y_c = op.LSTM(op.Unsqueeze(x, [0]), W, R, B, None, op.Unsqueeze(h, [0]), op.Unsqueeze(c, [0]),
                          hidden_size=R.shape[2])
    return op.Squeeze(y_h, [0]), op.Squeeze(y_c, [0])


def _gru_onnx(x, h, W, R, B):
    from onnxscript import opset18 as op

    _, y_h = op.GRU(op.Unsqueeze(x, [0]), W, R, B, None, op.Unsqueeze(h, [0]), hidden_size=R.shape[2],
                    linear_before_reset=1)
    return op.Squeeze(y_h, [0])


def _rnn_onnx(x, h, W, R, B, relu: bool = False):
    from onnxscript import opset18 as op

    _, y_h = op.RNN(op.Unsqueeze(x, [0]), W, R, B, None, op.Unsqueeze(h, [0]), hidden_size=R.shape[2],
                    activations=["Relu" if relu else "Tanh"])
    return op.Squeeze(y_h, [0])


TRANSLATIONS = {
    torch.ops.edgeseq.onnx_lstm_cell.default: _lstm_onnx,
    torch.ops.edgeseq.onnx_gru_cell.default: _gru_onnx,
    torch.ops.edgeseq.onnx_rnn_cell.default: _rnn_onnx,
}


# ------------------------------------------------------------------------------------ fused cells
def _rows(w: torch.Tensor, order: tuple[int, ...], n: int) -> torch.Tensor:
    """``w``'s n equal row blocks in ``order``."""
    blocks = w.chunk(n, dim=0)
    return torch.cat([blocks[k] for k in order], dim=0)


class _Fused(nn.Module):
    """A cell as one ONNX recurrent op: W, R, B as buffers in ONNX's layout."""

    def __init__(self, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor):
        super().__init__()
        self.register_buffer("W", W[None].contiguous())
        self.register_buffer("R", R[None].contiguous())
        self.register_buffer("B", B[None].contiguous())


class FusedLSTMCell(_Fused):
    def __init__(self, cell: LSTMCellStep):
        w, H = cell.gates.weight.detach(), cell.d_hidden
        d_in = w.shape[1] - H
        order = (0, 3, 1, 2)  # PyTorch i, f, g, o -> ONNX i, o, f, c
        b = cell.gates.bias.detach() if cell.gates.bias is not None else torch.zeros(4 * H)
        super().__init__(_rows(w[:, :d_in], order, 4), _rows(w[:, d_in:], order, 4),
                         torch.cat([_rows(b, order, 4), torch.zeros(4 * H)]))

    def forward(self, x, h, c):
        return torch.ops.edgeseq.onnx_lstm_cell(x, h, c, self.W, self.R, self.B)


class FusedGRUCell(_Fused):
    def __init__(self, cell: GRUCellStep):
        H = cell.d_hidden
        order = (1, 0, 2)  # PyTorch r, z, n -> ONNX z, r, h
        bi = cell.ih.bias.detach() if cell.ih.bias is not None else torch.zeros(3 * H)
        bh = cell.hh.bias.detach() if cell.hh.bias is not None else torch.zeros(3 * H)
        super().__init__(_rows(cell.ih.weight.detach(), order, 3), _rows(cell.hh.weight.detach(), order, 3),
                         torch.cat([_rows(bi, order, 3), _rows(bh, order, 3)]))

    def forward(self, x, h):
        return torch.ops.edgeseq.onnx_gru_cell(x, h, self.W, self.R, self.B)


class FusedElmanCell(_Fused):
    def __init__(self, cell: ElmanCellStep):
        w = cell.gates.weight.detach()
        H = w.shape[0]
        b = cell.gates.bias.detach() if cell.gates.bias is not None else torch.zeros(H)
        super().__init__(w[:, : w.shape[1] - H], w[:, w.shape[1] - H:], torch.cat([b, torch.zeros(H)]))
        self.relu = cell.nonlinearity == "relu"

    def forward(self, x, h):
        return torch.ops.edgeseq.onnx_rnn_cell(x, h, self.W, self.R, self.B, self.relu)


def _fused(module: nn.Module) -> nn.Module | None:
    if isinstance(module, LSTMCellStep):
        return FusedLSTMCell(module) if module.proj is None else None  # ONNX's LSTM has no projection
    if isinstance(module, GRUCellStep):
        return FusedGRUCell(module)
    if isinstance(module, ElmanCellStep):
        return FusedElmanCell(module)
    return None


@contextlib.contextmanager
def fused_rnn_cells(step: nn.Module):
    """Within the block, every cell of ``step`` that ONNX has an op for is replaced by its fused form, in place;
    yields how many were. The cells are put back on leaving, whatever happens in the block. (In place, not on a
    copy: a graph converter's step may hold graph modules whose node metadata carries fake tensors, which
    ``copy.deepcopy`` cannot copy.)"""
    swapped = []
    try:
        for parent in list(step.modules()):
            for name, child in list(parent.named_children()):
                fused = _fused(child)
                if fused is not None:
                    setattr(parent, name, fused)
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)

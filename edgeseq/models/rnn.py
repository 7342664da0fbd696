"""Family ``rnn``: classic recurrent networks (LSTM, GRU, Elman RNN with tanh or ReLU).

Module tree of the parallel form (:class:`RNNModel`)::

    RNNModel
      rnn   nn.LSTM | nn.GRU | nn.RNN, batch_first=True    (B, T, d_in) -> (B, T, H or proj_size)
      head  nn.Linear | nn.Identity                         (B, T, H)    -> (B, T, d_out)

``task="sequence"`` returns the head output at every step; ``task="classify"`` the output at each series'
last valid step (``lengths``). The step form (:class:`RNNStep`) keeps, per layer, ``h{l}`` (and ``c{l}`` for
LSTM) and computes every gate with ``nn.Linear`` matmuls (no fused ``aten.lstm_cell``), so quantizers and
delegates see ordinary linear layers.

Converters: :class:`RNNModel`, and a user's own trained ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (any
``num_layers``, ``batch_first`` either way, with or without bias, LSTM ``proj_size``). Bidirectional layers
see the future and cannot stream; they are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeseq.config import check_fields
from edgeseq.convert import register_converter
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.families import Family, register_family
from edgeseq.models.heads import task_output
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
TASKS = ("sequence", "classify")


@dataclass(frozen=True)
class RNNConfig:
    d_in: int  # input features per step
    d_out: int | None = None  # head outputs per step; None: no head, the last layer's hidden state is the output
    cell: str = "lstm"  # lstm | gru | rnn_tanh | rnn_relu
    d_hidden: int = 64  # hidden units per layer (H)
    num_layers: int = 1  # stacked recurrent layers
    bias: bool = True  # gate biases (b_ih, b_hh)
    proj_size: int = 0  # LSTM only: project h to this size (0 = off)
    dropout: float = 0.0  # between layers while training (the step form is inference-only)
    task: str = "sequence"  # sequence: an output every step; classify: the output at the last step

    def __post_init__(self):
        check_fields(self, "rnn", choices={"cell": CELLS, "task": TASKS}, positive=("d_in", "d_hidden", "num_layers"))
        if self.d_out is not None and self.d_out < 1:
            raise ConfigError(f"rnn config: d_out must be >= 1 or null, got {self.d_out}")
        if self.proj_size and (self.cell != "lstm" or not 0 < self.proj_size < self.d_hidden):
            raise ConfigError("rnn config: proj_size needs cell='lstm' and 0 < proj_size < d_hidden")
        if self.task == "classify" and self.d_out is None:
            raise ConfigError("rnn config: task='classify' needs d_out (the number of classes)")

    @property
    def d_state_out(self) -> int:
        return self.proj_size or self.d_hidden

    @property
    def d_model_out(self) -> int:
        return self.d_out if self.d_out is not None else self.d_state_out


_TORCH_RNN = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


class RNNModel(nn.Module):
    """Parallel form: cuDNN/MKL recurrent layers over whole sequences, plus a linear head."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.train_length: int | None = None  # longest sequence seen in training (set by the trainer)
        c = config
        kwargs = dict(
            input_size=c.d_in, hidden_size=c.d_hidden, num_layers=c.num_layers, bias=c.bias,
            batch_first=True, dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        if c.cell == "lstm":
            kwargs["proj_size"] = c.proj_size
        elif c.cell.startswith("rnn_"):
            kwargs["nonlinearity"] = c.cell[4:]
        self.rnn = _TORCH_RNN[c.cell](**kwargs)
        self.head = nn.Linear(c.d_state_out, c.d_out) if c.d_out is not None else nn.Identity()

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_out): the output at every step."""
        h, _ = self.rnn(x)  # (B, T, H)
        return self.head(h)  # (B, T, d_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return task_output(self.forward_steps(x), self.config.task, lengths)  # (B, T, d_out) or (B, d_out)

    @classmethod
    def from_module(cls, rnn: nn.RNNBase, head: nn.Linear | None = None, task: str = "sequence") -> "RNNModel":
        """Wrap a trained ``nn.LSTM/GRU/RNN`` (and optionally a linear head) into an ``RNNModel``, weights copied."""
        cfg = _config_of(rnn, head, task)
        model = cls(cfg)
        model.rnn.load_state_dict(rnn.state_dict())
        if head is not None:
            model.head.load_state_dict(head.state_dict())
        return model


def _config_of(rnn: nn.RNNBase, head: nn.Linear | None, task: str) -> RNNConfig:
    if rnn.bidirectional:
        raise UnsupportedModuleError(
            f"{type(rnn).__name__}(bidirectional=True) reads the future and cannot run as a stream; train a unidirectional model"
        )
    if isinstance(rnn, nn.LSTM):
        cell = "lstm"
    elif isinstance(rnn, nn.GRU):
        cell = "gru"
    elif isinstance(rnn, nn.RNN):
        cell = "rnn_" + rnn.nonlinearity
    else:
        raise UnsupportedModuleError(f"unsupported recurrent module {type(rnn).__name__}")
    if head is not None and not isinstance(head, nn.Linear):
        raise UnsupportedModuleError(f"head must be nn.Linear, got {type(head).__name__}")
    return RNNConfig(
        d_in=rnn.input_size, d_out=head.out_features if head is not None else None, cell=cell,
        d_hidden=rnn.hidden_size, num_layers=rnn.num_layers, bias=rnn.bias,
        proj_size=getattr(rnn, "proj_size", 0), task=task,
    )


# ----------------------------------------------------------------------------------------------- step form
class LSTMCellStep(nn.Module):
    """One LSTM layer, one step: gates = W [x; h] + b (one matmul), PyTorch's gate order i, f, g, o."""

    def __init__(self, d_in: int, d_hidden: int, proj_size: int, bias: bool):
        super().__init__()
        d_h = proj_size or d_hidden
        self.d_hidden = d_hidden
        self.gates = nn.Linear(d_in + d_h, 4 * d_hidden, bias=bias)  # [W_ih | W_hh], b_ih + b_hh
        self.proj = nn.Linear(d_hidden, proj_size, bias=False) if proj_size else None  # W_hr

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gates(torch.cat([x, h], dim=-1))  # (B, 4H)
        H = self.d_hidden
        # slices, not chunk(): XNNPACK delegates slice_copy but not split_with_sizes
        i, f, gg, o = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]  # (B, H) each
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)  # (B, H)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)  # (B, H)
        if self.proj is not None:
            h_next = self.proj(h_next)  # (B, P)
        return h_next, c_next

    def load_torch(self, sd: dict[str, torch.Tensor], layer: int) -> None:
        w = torch.cat([sd[f"weight_ih_l{layer}"], sd[f"weight_hh_l{layer}"]], dim=1)
        self.gates.weight.data.copy_(w)
        if self.gates.bias is not None:
            self.gates.bias.data.copy_(sd[f"bias_ih_l{layer}"] + sd[f"bias_hh_l{layer}"])
        if self.proj is not None:
            self.proj.weight.data.copy_(sd[f"weight_hr_l{layer}"])


class GRUCellStep(nn.Module):
    """One GRU layer, one step: r, z, n gates from two matmuls (n needs r * (W_hn h + b_hn) apart)."""

    def __init__(self, d_in: int, d_hidden: int, bias: bool):
        super().__init__()
        self.d_hidden = d_hidden
        self.ih = nn.Linear(d_in, 3 * d_hidden, bias=bias)
        self.hh = nn.Linear(d_hidden, 3 * d_hidden, bias=bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gi = self.ih(x)  # (B, 3H)
        gh = self.hh(h)  # (B, 3H)
        H = self.d_hidden
        i_r, i_z, i_n = gi[:, :H], gi[:, H : 2 * H], gi[:, 2 * H :]  # (B, H) each
        h_r, h_z, h_n = gh[:, :H], gh[:, H : 2 * H], gh[:, 2 * H :]
        r = torch.sigmoid(i_r + h_r)  # (B, H)
        z = torch.sigmoid(i_z + h_z)  # (B, H)
        n = torch.tanh(i_n + r * h_n)  # (B, H)
        return n + z * (h - n)  # (B, H) = (1 - z) * n + z * h, without a scalar constant the delegate cannot take

    def load_torch(self, sd: dict[str, torch.Tensor], layer: int) -> None:
        self.ih.weight.data.copy_(sd[f"weight_ih_l{layer}"])
        self.hh.weight.data.copy_(sd[f"weight_hh_l{layer}"])
        if self.ih.bias is not None:
            self.ih.bias.data.copy_(sd[f"bias_ih_l{layer}"])
            self.hh.bias.data.copy_(sd[f"bias_hh_l{layer}"])


class ElmanCellStep(nn.Module):
    """One Elman RNN layer, one step: h = act(W [x; h] + b)."""

    def __init__(self, d_in: int, d_hidden: int, bias: bool, nonlinearity: str):
        super().__init__()
        self.gates = nn.Linear(d_in + d_hidden, d_hidden, bias=bias)
        self.act = torch.tanh if nonlinearity == "tanh" else torch.relu
        self.nonlinearity = nonlinearity

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.gates(torch.cat([x, h], dim=-1)))  # (B, H)

    def load_torch(self, sd: dict[str, torch.Tensor], layer: int) -> None:
        self.gates.weight.data.copy_(torch.cat([sd[f"weight_ih_l{layer}"], sd[f"weight_hh_l{layer}"]], dim=1))
        if self.gates.bias is not None:
            self.gates.bias.data.copy_(sd[f"bias_ih_l{layer}"] + sd[f"bias_hh_l{layer}"])


class RNNStep(StepModule):
    """Step form of :class:`RNNModel`. State: ``h0, c0, h1, c1, ...`` (LSTM) or ``h0, h1, ...``."""

    def __init__(self, config: RNNConfig, train_length: int | None = None):
        super().__init__()
        c = config
        self.config = config
        self.d_in, self.d_out = c.d_in, c.d_model_out
        self.is_lstm = c.cell == "lstm"
        layers = []
        tensors = []
        for layer in range(c.num_layers):
            d_layer_in = c.d_in if layer == 0 else c.d_state_out
            if c.cell == "lstm":
                layers.append(LSTMCellStep(d_layer_in, c.d_hidden, c.proj_size, c.bias))
                tensors += [StateTensor(f"h{layer}", (c.d_state_out,)), StateTensor(f"c{layer}", (c.d_hidden,))]
            elif c.cell == "gru":
                layers.append(GRUCellStep(d_layer_in, c.d_hidden, c.bias))
                tensors.append(StateTensor(f"h{layer}", (c.d_hidden,)))
            else:
                layers.append(ElmanCellStep(d_layer_in, c.d_hidden, c.bias, c.cell[4:]))
                tensors.append(StateTensor(f"h{layer}", (c.d_hidden,)))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(c.d_state_out, c.d_out) if c.d_out is not None else None
        self.state_spec = StateSpec(tuple(tensors))
        from edgeseq.config import config_to_dict

        self.info = StepInfo(family="rnn", config=config_to_dict(c), task=c.task, train_length=train_length)

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        new: list[torch.Tensor] = []
        inp = x  # (B, d_in)
        per = 2 if self.is_lstm else 1
        for i, layer in enumerate(self.layers):
            if self.is_lstm:
                h, c = layer(inp, state[per * i], state[per * i + 1])
                new += [h, c]
            else:
                h = layer(inp, state[i])
                new.append(h)
            inp = h  # (B, H)
        # without a head y is the top layer's h; "* 1.0" keeps it a distinct graph value (a state output and y that
        # are one node make XNNPACK refuse the partition, and clone() is removed by the edge passes)
        y = self.head(inp) if self.head is not None else inp * 1.0  # (B, d_out)
        return y, tuple(new)


def convert_rnn_model(model: RNNModel) -> RNNStep:
    step = RNNStep(model.config, train_length=getattr(model, "train_length", None))
    sd = {k: v.detach() for k, v in model.rnn.state_dict().items()}
    with torch.no_grad():
        for layer, cell in enumerate(step.layers):
            cell.load_torch(sd, layer)
        if step.head is not None:
            step.head.load_state_dict(model.head.state_dict())
    return step


def reference_rnn_model(model: RNNModel, x: torch.Tensor) -> torch.Tensor:
    return model.forward_steps(x)


def convert_torch_rnn(rnn: nn.RNNBase) -> RNNStep:
    return convert_rnn_model(RNNModel.from_module(rnn))


def reference_torch_rnn(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """The module's own full-sequence forward, in its own layout; returned batch-first."""
    if rnn.batch_first:
        return rnn(x)[0]
    return rnn(x.transpose(0, 1))[0].transpose(0, 1)


register_family(Family(
    "rnn", RNNConfig, RNNModel, "LSTM / GRU / Elman RNN stacks with a linear head",
    tiny=(("cell", "lstm"), ("d_hidden", 16), ("num_layers", 2)),
))
register_converter(RNNModel, convert_rnn_model, reference_rnn_model)
for _cls in (nn.LSTM, nn.GRU, nn.RNN):
    register_converter(_cls, convert_torch_rnn, reference_torch_rnn)

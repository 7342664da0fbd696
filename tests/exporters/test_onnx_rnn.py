"""ONNX's own LSTM / GRU / RNN ops for recurrent cells, chosen by timing at export (exporters/onnx_rnn.py)."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import ConfigError
from edgeseq.exporters.onnx_rnn import fused_rnn_cells
from edgeseq.models.rnn import ElmanCellStep, GRUCellStep, LSTMCellStep


def _cells():
    torch.manual_seed(0)
    return {
        "lstm": LSTMCellStep(5, 7, 0, True), "lstm_nobias": LSTMCellStep(5, 7, 0, False),
        "gru": GRUCellStep(5, 7, True), "gru_nobias": GRUCellStep(5, 7, False),
        "rnn_tanh": ElmanCellStep(5, 7, True, "tanh"), "rnn_relu": ElmanCellStep(5, 7, False, "relu"),
    }


@pytest.mark.parametrize("name", list(_cells()))
def test_each_fused_cell_computes_its_cell_in_onnx_layout(name):
    """The fused cell (weights reordered to ONNX's gate order, its op's eager definition) against the cell it
    replaces, which the rnn family's tests hold to torch.nn's own layers."""
    cell = _cells()[name]
    holder = nn.Sequential(cell)
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    args = (x, h, c) if isinstance(cell, LSTMCellStep) else (x, h)
    with torch.no_grad():
        want = cell(*args)
        with fused_rnn_cells(holder) as n:
            assert n == 1 and type(holder[0]) is not type(cell)
            got = holder[0](*args)
    assert holder[0] is cell  # put back
    for a, b in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
        assert (a - b).abs().max() <= 1e-6


def test_an_lstm_with_a_projection_keeps_its_gates():
    holder = nn.Sequential(LSTMCellStep(5, 7, 3, True))  # ONNX's LSTM has no projection
    with fused_rnn_cells(holder) as n:
        assert n == 0


@pytest.mark.parametrize("kind, op", [("lstm", "LSTM"), ("gru", "GRU"), ("rnn_relu", "RNN")])
def test_fused_export_writes_the_onnx_op_and_holds_parity_over_2000_steps(tmp_path, kind, op):
    torch.manual_seed(0)
    mod = {"lstm": lambda: nn.LSTM(6, 12, 2), "gru": lambda: nn.GRU(6, 12, 2),
           "rnn_relu": lambda: nn.RNN(6, 12, nonlinearity="relu")}[kind]()
    step = edgeseq.convert(mod)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / kind, target="onnx", steps=2000, rnn_ops="fused")
    ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
    assert op in ops and "Gemm" not in ops and "MatMul" not in ops
    assert art.manifest["runtime"]["rnn_ops"] == {"form": "fused", "cells": mod.num_layers, "decided_by": "asked for"}
    assert art.manifest["parity"]["max_scaled_error"] <= 1e-5
    assert all(isinstance(m, (LSTMCellStep, GRUCellStep, ElmanCellStep)) for m in step.layers)  # put back
    # the artifact against torch.nn's own layer, stepped by a session over a fresh stream
    xs = torch.randn(1, 500, 6)
    with torch.no_grad():
        ref = mod(xs.transpose(0, 1))[0][:, 0].numpy()  # (T, H): the module is sequence-first
    got = edgeseq.open(art.path).run(xs[0].numpy())
    assert np.abs(got - ref).max() <= 1e-5


def test_timed_export_keeps_the_faster_form_and_records_both(tmp_path):
    torch.manual_seed(0)
    step = edgeseq.convert(nn.GRU(6, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "g", target="onnx", steps=300)
    rec = art.manifest["runtime"]["rnn_ops"]
    assert rec["decided_by"] == "timing" and set(rec["us_per_step"]) == {"gates", "fused"}
    assert rec["form"] == min(rec["us_per_step"], key=rec["us_per_step"].get)
    ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
    assert ("GRU" in ops) == (rec["form"] == "fused")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.onnx.edgeseq.json"]  # the other form is gone
    gates = edgeseq.export(step, tmp_path / "h", target="onnx", steps=300, rnn_ops="gates")
    assert "rnn_ops" not in gates.manifest["runtime"] and "GRU" not in {
        n.op_type for n in onnx.load(str(gates.path)).graph.node}


def test_a_user_model_with_a_gru_inside_exports_the_gru_op(tmp_path):
    """The graph converter's step of a conv front-end + nn.GRU + head: its GRU leaf is written as ONNX's GRU, the
    artifact checked against the user's model itself."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gru, self.head = nn.Conv1d(4, 8, 3), nn.GRU(8, 16, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):  # (B, T, 4)
            h = self.conv(nn.functional.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)
            return self.head(self.gru(torch.relu(h))[0])

    torch.manual_seed(0)
    net = Net().eval()
    step = edgeseq.convert(net, example=torch.randn(2, 20, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "net", target="onnx", steps=2000, model=net, rnn_ops="fused")
    assert "GRU" in {n.op_type for n in onnx.load(str(art.path)).graph.node}
    assert art.manifest["model_parity"]["max_scaled_error"] <= 1e-5


def test_cells_are_put_back_when_the_fused_export_fails(tmp_path, monkeypatch):
    from edgeseq.exporters import onnx as onnx_exporter

    step = edgeseq.convert(nn.GRU(4, 8))
    before = [type(m) for m in step.modules()]

    def broken(step, path, fused=False):
        if fused:
            raise RuntimeError("the exporter failed")
        return real(step, path)

    real = onnx_exporter._export_graph
    monkeypatch.setattr(onnx_exporter, "_export_graph", broken)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        edgeseq.export(step, tmp_path / "m", target="onnx", steps=10)
    assert [type(m) for m in step.modules()] == before and not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="rnn_ops must be timed, fused or gates"):
        edgeseq.export(step, tmp_path / "m", target="onnx", rnn_ops="fast")

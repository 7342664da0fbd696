"""A user's model as a torch.export archive (.pt2): checked before loading, converted from its ATen graph, and
driven from the command line (convert, export, quantize, stream) without Python glue. Every step is compared with
the original PyTorch model (not the archive) over 2,000 frames."""

import json
import pickle
import re
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app
from edgeseq.errors import ConfigError, EdgeseqError
from edgeseq.graph.pt2 import convert_program, load_program

import user_models as M  # tests/graph/user_models.py

T = 2000
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _save(model, example, path, dynamic=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tensor attributes ... assigned during export" (nn.GRU's flat weights)
        ep = torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic)
    torch.export.save(ep, path)
    return path


def _parity(model, path, long, time_axis=None):
    step = convert_program(load_program(path, time_axis))
    report = edgeseq.check_parity(model, step, long)
    assert report.steps == T - step.state_spec.delay and report.max_abs_error <= 1e-5, report.summary()
    return step


class _LSTMHead(nn.Module):
    """An LSTM (time first, 2 layers, projections) between two Linear layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.lstm = nn.LSTM(8, 12, num_layers=2, proj_size=6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):  # (B, T, 5)
        z, _ = self.lstm(torch.relu(self.inp(x)).transpose(0, 1))
        return self.out(z.transpose(0, 1))


def test_dynamic_length_archives_stream_like_the_model(tmp_path):
    """ATen convolutions, chomp slices, pads, a delayed residual, running reductions and arange, Conv2d over
    (freq, time); state names from the module paths torch.export records."""
    torch.manual_seed(0)
    tcn = M.ChompTCN()
    step = _parity(tcn, _save(tcn, torch.randn(2, 4, 40), tmp_path / "tcn.pt2", ({2: Dim("T", min=4)},)),
                   torch.randn(1, 4, T))
    assert step.state_spec.names == tuple(f"blocks.{i}.conv{j}.buf" for i in range(3) for j in (1, 2))
    assert step.time_axis == 2 and step.state_spec.receptive_field == 29
    same = M.SameConvResidual()
    step = _parity(same, _save(same, torch.randn(2, 6, 40), tmp_path / "same.pt2", ({2: Dim("T", min=4)},)),
                   torch.randn(1, 6, T))
    assert step.state_spec.delay == 2
    stats = M.RunningStats()
    _parity(stats, _save(stats, torch.randn(1, 20, 3), tmp_path / "run.pt2", ({1: Dim("T", min=4)},)), torch.randn(1, T, 3))
    ctx = M.Context()
    _parity(ctx, _save(ctx, torch.randn(2, 40, 5), tmp_path / "ctx.pt2", ({0: Dim("B"), 1: Dim("T", min=4)},)),
            torch.randn(1, T, 5) * 0.1)
    spec = M.SpectrogramCNN()
    _parity(spec, _save(spec, torch.randn(1, 30, 16), tmp_path / "spec.pt2", ({1: Dim("T", min=8)},)), torch.randn(1, T, 16))


def test_fixed_length_archives_of_recurrent_models(tmp_path):
    """torch 2.13 exports RNN models at a fixed length only: aten.gru / aten.lstm become the nn layers again."""
    torch.manual_seed(0)
    kws = M.KeywordNet()
    step = _parity(kws, _save(kws, torch.randn(1, 40, 10), tmp_path / "kws.pt2"), torch.randn(1, T, 10))
    assert step.state_spec.names == ("conv.buf", "gru.h0")
    lstm = _LSTMHead()
    step = _parity(lstm, _save(lstm, torch.randn(1, 30, 5), tmp_path / "lstm.pt2"), torch.randn(1, T, 5))
    assert step.state_spec.names == ("lstm.h0", "lstm.c0", "lstm.h1", "lstm.c1")
    # a fixed-length archive whose reshapes baked the length in: told why and what to do
    front = M.AudioFrontLSTM()
    with pytest.raises(EdgeseqError, match="exported at a fixed length keeps the sizes"):
        convert_program(load_program(_save(front, torch.randn(2, 40, 64), tmp_path / "front.pt2")))


def test_cli_converts_exports_quantizes_and_streams_an_archive(tmp_path):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    torch.manual_seed(0)
    model = M.KeywordNet().eval()
    pt2 = _save(model, torch.randn(1, 40, 10), tmp_path / "kws.pt2")
    r = run("convert", pt2, "--steps", 2000, "--json", tmp_path / "conv.json")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "conv.json").read_text())
    assert rep["parity"]["max_abs_error"] <= 1e-5 and "receptive field unbounded" in r.output
    r = run("export", pt2, "--target", "onnx", "--out", tmp_path / "kws")
    assert r.exit_code == 0, r.output
    x = torch.randn(1, 600, 10)
    np.save(tmp_path / "frames.npy", x[0].numpy())
    r = run("stream", tmp_path / "kws.onnx", "--input", tmp_path / "frames.npy", "--output", tmp_path / "y.npy")
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        ref = model(x)[0].numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() <= 1e-5
    r = run("quantize", pt2, "--scheme", "int8-dynamic", "--target", "onnx", "--out", tmp_path / "kwsq")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "kwsq.onnx.edgeseq.json").read_text())
    assert manifest["family"] == "graph" and manifest["quantization"]["config"]["scheme"] == "int8-dynamic"
    assert manifest["quantization"]["quantized_layers"] >= 3  # of the conv (as its linear form), GRU matmuls, head
    q = edgeseq.open(tmp_path / "kwsq.onnx").run(x[0].numpy())
    err = np.abs(q - ref).max() / np.abs(ref).max()
    assert 1e-4 < err < 0.05, err  # int8 weights: close to the float model, and not equal to it


# ------------------------------------------------------------------------------------------------- bad input
class _Marker:
    """A pickle that would write a file if anything unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _edited(src, dst, edit):
    """A copy of archive ``src`` with ``edit(rel_name, bytes) -> bytes`` applied to each file."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            zout.writestr(info.filename, edit(rel, zin.read(info.filename)))
    return dst


def test_archives_that_would_unpickle_are_refused_before_loading(tmp_path):
    torch.manual_seed(0)
    src = _save(M.ChompTCN(), torch.randn(2, 4, 40), tmp_path / "tcn.pt2", ({2: Dim("T", min=4)},))
    marker = tmp_path / "ran"
    evil = pickle.dumps(_Marker(marker))

    def pickled_weight(rel, data):
        if rel.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            first = next(iter(cfg["config"]))
            cfg["config"][first]["use_pickle"] = True
            return json.dumps(cfg).encode()
        return evil if rel == "data/weights/weight_0" else data

    def pickled_inputs(rel, data):
        return evil if rel.startswith("data/sample_inputs/") else data

    def legacy_weights(rel, data):
        return data

    cases = [(pickled_weight, "blocks.0.conv1.weight is stored as a pickle"),
             (pickled_inputs, "sample inputs .* hold more than tensors")]
    for edit, match in cases:
        bad = _edited(src, tmp_path / f"{edit.__name__}.pt2", edit)
        with pytest.raises(ConfigError, match=match):
            load_program(bad)
        r = run("export", bad, "--target", "onnx", "--out", tmp_path / "out" / edit.__name__)
        assert r.exit_code == 1 and match.split(" ")[-1] in r.output and "Traceback" not in r.output
        assert not marker.exists() and not (tmp_path / "out").exists()
    # an extra file torch.export.load would read as pickled weights (the legacy layout)
    with zipfile.ZipFile(src) as z:
        top = z.namelist()[0].split("/")[0]
    legacy = tmp_path / "legacy.pt2"
    _edited(src, legacy, legacy_weights)
    with zipfile.ZipFile(legacy, "a") as z:
        z.writestr(f"{top}/data/weights/{top}.pt", evil)
    with pytest.raises(ConfigError, match=r"refused: data/weights/tcn\.pt is not part of a tensors-and-graph archive"):
        load_program(legacy)
    assert not marker.exists()
    # the untouched archive loads (what the edits broke was the only difference)
    assert load_program(src).time_axis == 2


class _TwoOut(nn.Module):
    def forward(self, x):
        return x * 2, x + 1


class _Flip(nn.Module):
    def forward(self, x):
        return torch.flip(x, dims=[1]) + x


def test_bad_archives_get_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    two = _save(_TwoOut(), torch.randn(1, 10, 3), tmp_path / "two.pt2", ({1: Dim("T", min=4)},))
    flip = _save(_Flip(), torch.randn(1, 10, 3), tmp_path / "flip.pt2", ({1: Dim("T", min=4)},))
    (tmp_path / "model.bin").write_bytes(b"x")
    for path, match in [(tmp_path / "junk.pt2", "not a torch.export archive"),
                        (two, "returns 2 outputs"),
                        (flip, r"aten\.flip at .*mixes frames"),
                        (tmp_path / "model.bin", "expected a model directory .* or a torch.export archive")]:
        for cmd in (["convert", path], ["export", path, "--target", "onnx", "--out", out / "m"],
                    ["quantize", path, "--target", "onnx", "--out", out / "q"]):
            r = run(*cmd)
            assert r.exit_code == 1, (cmd, r.output)
            assert len(r.output.strip().splitlines()) <= 3 and "Traceback" not in r.output, r.output
            assert re.search(match, " ".join(r.output.split())), (match, r.output)
    assert not out.exists()
    r = run("prune", flip)
    assert r.exit_code == 1 and "prune rewrites edgeseq's own model families" in " ".join(r.output.split())
    r = run("convert", flip, "--time-axis", 5)
    assert r.exit_code == 1 and "--time-axis 5 is not an axis of the input (rank 3)" in r.output


# ------------------------------------------------------------------------------------------------- loops over time
class _CellLoop(nn.Module):
    """nn.GRUCell stepped in a Python loop: torch.export unrolls it at the archive's length (16 frames)."""

    def __init__(self, alternate: bool = False):
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(3, 8), nn.GRUCell(3, 8)])
        self.head = nn.Linear(8, 2)
        self.alternate = alternate

    def forward(self, x):  # (B, T, 3)
        h = x.new_zeros(x.shape[0], 8)
        outs = []
        for t in range(x.shape[1]):
            h = self.cells[t % 2 if self.alternate else 0](x[:, t], h)
            outs.append(h)
        return self.head(torch.stack(outs, 1))


def test_an_archive_with_a_loop_over_time_is_rolled_and_a_bad_loop_refused(tmp_path):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    torch.manual_seed(0)
    model = _CellLoop().eval()
    pt2 = _save(model, torch.randn(1, 16, 3), tmp_path / "loop.pt2")
    r = run("export", pt2, "--target", "onnx", "--out", tmp_path / "loop")
    assert r.exit_code == 0, r.output
    x = torch.randn(T, 3)
    got = edgeseq.open(tmp_path / "loop.onnx").run(x.numpy())
    with torch.no_grad():
        ref = model(x[None])[0].numpy()
    assert np.abs(got - ref).max() <= 1e-5  # 2,000 frames from an archive unrolled at 16
    bad = _save(_CellLoop(alternate=True).eval(), torch.randn(1, 16, 3), tmp_path / "bad.pt2")
    r = run("export", bad, "--target", "onnx", "--out", tmp_path / "out" / "bad")
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 3, r.output
    assert re.search(r"loop over time .*cannot be rolled into one step: the loop's body differs between iterations",
                     " ".join(r.output.split())), r.output
    assert not (tmp_path / "out").exists()

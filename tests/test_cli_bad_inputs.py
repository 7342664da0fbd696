"""Bad inputs to every command: one line starting 'error:', the expected message, exit 1 (2 for a command line
that does not parse), no traceback, and nothing written anywhere in the folder the test works in."""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A folder with a model (5 features, 4 classes), its ONNX artifact and the bad files."""
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=5, d_out=4, task="classify", d_hidden=8)
    edgeseq.save(model, d / "m")
    edgeseq.export(edgeseq.convert(model), d / "art", target="onnx", steps=50)
    rng = np.random.default_rng(0)
    np.save(d / "f5.npy", rng.standard_normal((20, 5)).astype(np.float32))
    np.save(d / "wide.npy", rng.standard_normal((20, 7)).astype(np.float32))
    np.save(d / "empty.npy", np.zeros((0, 5), np.float32))
    x = rng.standard_normal((20, 5))
    x[1, 0] = np.nan
    np.save(d / "nan.npy", x)
    (d / "inf.csv").write_text("a,b,c,d,e,label\n1,2,3,4,5,x\n1,2,inf,4,5,x\n")
    (d / "ragged.csv").write_text("a,label\n1,2\n3\n")
    (d / "back.csv").write_text("time,a,b,c,d,e,label\n0,1,1,1,1,1,x\n1,1,1,1,1,1,x\n0.5,1,1,1,1,1,x\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("a,b,label\n")
    (d / "text.csv").write_text("a,b,label\n1,hello,x\n")
    (d / "mixed.csv").write_text("series,a,b,c,d,e,label\ns,1,1,1,1,1,x\ns,1,1,1,1,1,y\n")
    (d / "cls.csv").write_text("series,f0,f1,f2,f3,f4,label\n" + "".join(
        f"s{i},{i},1,2,3,4,{i % 2}\n" for i in range(6)))
    (d / "data.json").write_text("{}")
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(d / "noarrays.npz", a=np.zeros(3))
    np.savez(d / "emptyseries.npz", x_0=np.zeros((4, 5)), x_1=np.zeros((0, 5)))
    np.savez(d / "badlab.npz", x=np.zeros((3, 6, 5), np.float32), y=np.array([0, 1, 9]))
    (d / "afile").write_text("a file, not a folder")
    (d / "junk.pte").write_bytes(os.urandom(64))
    (d / "bad.pt2").write_bytes(b"garbage")
    for name in ("trunc.onnx",):  # a copy of the artifact, cut short, its manifest beside it
        shutil.copy(d / "art.onnx", d / name)
        man = json.loads((d / "art.onnx.edgeseq.json").read_text())
        man["file"] = name
        (d / f"{name}.edgeseq.json").write_text(json.dumps(man))
        (d / name).write_bytes((d / name).read_bytes()[:500])
    (d / "evil.npy").write_bytes(pickle.dumps(object()))  # not an array file: np.load without pickle refuses it
    from test_data_sizes import lying_npy, lying_npz  # tests/test_data_sizes.py

    lying_npy(d / "bomb.npy")  # 192 bytes that claim (100000, 100000, 12) float32
    lying_npz(d / "bomb.npz")  # x.npy claims 44.7 GiB over 1 MiB of data
    return d


CASES = [
    # data files (train, the command that reads the most of them)
    (["quantize", "m", "--calib", "nan.npy", "--target", "onnx", "--out", "q"], 1, r"nan\.npy: NaN at step 1, feature 0"),
    (["train", "--data", "bomb.npy"], 1, r"bomb\.npy: its header claims \(100000, 100000, 12\) float32 \(447\.0 GiB\), "
                                          r"but the file holds 64 bytes of data"),
    (["train", "--data", "bomb.npz"], 1, r"bomb\.npz member x\.npy: its header claims \(1000, 1000, 12000\) float32 "
                                          r"\(44\.7 GiB\), but its zip entry records 1\.0 MiB of data"),
    (["stream", "art.onnx", "--input", "bomb.npy", "--output", "y.npy"], 1, r"bomb\.npy: its header claims \(100000, "
                                                                            r"100000, 12\) float32 \(447\.0 GiB\)"),
    (["train", "--data", "inf.csv"], 1, r"inf\.csv: Inf at step 1, feature 2"),
    (["train", "--data", "ragged.csv"], 1, r"row 3 has 1 fields; the header has 2"),
    (["train", "--data", "back.csv"], 1, r"the time column 'time' goes backwards at row 4 \(1 -> 0\.5\)"),
    (["train", "--data", "empty.csv"], 1, r"empty\.csv: empty file"),
    (["train", "--data", "header.csv"], 1, r"header\.csv: a header and no rows"),
    (["train", "--data", "text.csv"], 1, r"column 'b' is not numeric \('hello' at row 2\)"),
    (["train", "--data", "mixed.csv"], 1, r"series 's' has 2 different labels"),
    (["train", "--data", "f5.npy"], 1, r"f5\.npy: no labels \(an \.npy holds one array and no labels\), and training needs "
                                       r"them .*nothing was read"),
    (["train", "--data", "cls.csv", "--label-col", "cls"], 1, r"no label column 'cls'"),
    (["train", "--data", "cls.csv", "--features", "f0,zz"], 1, r"no feature column 'zz'"),
    (["train", "--data", "nosuch"], 1, r"'nosuch' is neither a bundled data set .* nor a file or folder"),
    (["train", "--data", "nosuch.csv"], 1, r"nosuch\.csv: no such file or folder"),
    (["train", "--data", "data.json"], 1, r"unknown data format \.json"),
    (["train", "--data", "corrupt.npz"], 1, r"corrupt\.npz: not a readable \.npz"),
    (["train", "--data", "noarrays.npz"], 1, r"expected x \(series, time, features\) or x_0, x_1"),
    (["quantize", "m", "--calib", "emptyseries.npz", "--target", "onnx", "--out", "q"], 1,
     r"series 1: empty series \(0 frames\)"),
    (["train", "--data", "evil.npy"], 1, r"evil\.npy: not a readable \.npy"),
    # data vs the model
    (["quantize", "m", "--calib", "wide.npy", "--target", "onnx", "--out", "q"], 1,
     r"wide\.npy: 7 features per frame \(from its header, \(20, 7\)\); the model takes 5; nothing was read"),
    (["quantize", "m", "--eval-data", "badlab.npz", "--eval", "--target", "onnx", "--out", "q"], 1,
     r"label '9' \(class 9\) is outside the model's 4 classes"),
    (["quantize", "m", "--eval", "--target", "onnx", "--out", "q"], 1, r"--eval needs real frames of 5 features"),
    (["prune", "m", "--data", "wide.npy", "--out", "p"], 1, r"wide\.npy: 7 features per frame \(from its header"),
    (["prune", "m", "--data", "f5.npy", "--finetune-epochs", "1", "--out", "p"], 1, r"f5\.npy: no labels .*and the model's classify metric needs them"),
    (["profile", "art.onnx", "--input", "wide.npy", "--out", "prof"], 1, r"wide\.npy: 7 features per frame \(from its header"),
    # streaming
    (["stream", "art.onnx", "-i", "empty.npy"], 1, r"empty\.npy: no frames to stream \(shape \(0, 5\)\)"),
    (["stream", "art.onnx", "-i", "f5.npy", "-o", "y.txt"], 1, r"--output y\.txt: must end in \.npy or \.csv"),
    (["stream", "art.onnx", "-i", "f5.npy", "-o", "y.npy", "--state-out", "y.npy"], 1, r"name the same file"),
    (["stream", "art.onnx", "-i", "nosuch.npy"], 1, r"--input nosuch\.npy: no such file or folder"),
    (["stream", "trunc.onnx", "-i", "f5.npy"], 1, r"trunc\.onnx: file does not match its manifest \(sha256 differs\)"),
    # outputs that cannot be written
    (["train", "--data", "cls.csv", "--out", "afile/m"], 1, r"--out afile/m: afile is a file, not a folder"),
    (["export", "m", "--target", "onnx", "--out", "afile/x"], 1, r"--out afile/x: afile is a file, not a folder"),
    (["stream", "art.onnx", "-i", "f5.npy", "-o", "afile/y.npy"], 1, r"--output afile/y\.npy: afile is a file"),
    (["stream", "art.onnx", "-i", "f5.npy", "--state-out", "m"], 1, r"--state-out m: is a folder; give a file name"),
    # artifacts and models
    (["inspect", "junk.pte"], 1, r"junk\.pte: not an ExecuTorch program"),
    (["inspect", "trunc.onnx"], 1, r"sha256 differs"),
    (["inspect", "nosuch.pte"], 1, r"nosuch\.pte: no such file or folder"),
    (["export", "nosuch", "--target", "onnx", "--out", "e"], 1, r"nosuch: no such file or folder"),
    (["convert", "bad.pt2"], 1, r"bad\.pt2: not a torch\.export archive"),
    (["convert", "f5.npy"], 1, r"expected a model directory .* or a torch\.export archive"),
    # command lines that do not parse: exit 2, one line, no 'Value error,' prefix
    (["export", "m", "--target", "nope"], 2, r"Invalid value for '--target': 'nope' is not one of 'executorch'"),
    (["train", "--bogus"], 2, r"No such option: --bogus"),
    (["export"], 2, r"Missing argument 'MODEL'"),
    (["export", "m", "--target", "executorch", "--batch", "1,x"], 2, r"'1,x': expected batch sizes such as 1 or 1,8,64"),
    (["export", "m", "--target", "executorch", "--batch", "0,4"], 2, r"'0,4': batch sizes must be >= 1"),
    (["export", "m", "--target", "onnx", "--batch", "1,4", "--out", "e"], 1, r"onnx artifacts take any batch"),
]


@pytest.mark.parametrize("args,code,match", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_one_line_nothing_written(w, args, code, match, monkeypatch):
    monkeypatch.chdir(w)
    before = sorted(p.relative_to(w) for p in w.rglob("*"))
    r = run(*args)
    text = " ".join(r.output.split())
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "Value error" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert re.search(match, text), (match, r.output)
    after = sorted(p.relative_to(w) for p in w.rglob("*"))
    assert after == before, set(after) ^ set(before)


def test_at_least_thirty_bad_inputs():
    assert len(CASES) >= 30


def test_prune_of_a_model_whose_task_the_default_data_does_not_fit(tmp_path):
    """The trial's crash: a task=sequence rnn with 12 inputs and 9 outputs pruned without --data ended in
    'RuntimeError: The size of tensor a (29) must match ...'; now the metric is skipped, saying why."""
    torch.manual_seed(0)
    edgeseq.save(edgeseq.build("rnn", d_in=12, d_out=9), tmp_path / "m")
    for extra in ([], ["--finetune-epochs", "0"]):
        r = run("prune", tmp_path / "m", "--method", "structured", "--amount", 0.5, "--out", tmp_path / "p", *extra)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert "no before/after metric" in " ".join(r.output.split()) and "the model's task is sequence" in " ".join(r.output.split())
    r = run("prune", tmp_path / "m", "--finetune-epochs", 1, "--out", tmp_path / "p2")
    assert r.exit_code == 1 and "give --data with the model's own data" in " ".join(r.output.split())
    assert not (tmp_path / "p2").exists()


def test_help_texts_have_no_emoji_bool_or_value_error():
    for cmd in ("train", "convert", "export", "quantize", "prune", "stream", "inspect", "profile", "devices", "quickstart"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        assert "<bool>" not in r.output and "Ⓜ" not in r.output, (cmd, r.output)
        assert not re.search(r"[\u2460-\u24ff\U0001F300-\U0001FAFF]", r.output), cmd  # rich emoji codes rendered
    assert "n:m keeps N of every M" in " ".join(run("prune", "--help").output.split())


def test_devices_names_are_never_cut_when_piped():
    from edgeseq.devices.catalog import load_catalog

    r = run("devices")  # CliRunner's output is not a terminal: tab-separated lines
    names = [line.split("\t")[0] for line in r.output.strip().splitlines()[1:]]
    assert r.exit_code == 0 and sorted(names) == sorted(load_catalog().keys()), r.output


def test_safetensors_are_written_0644(tmp_path):
    old = os.umask(0o022)
    try:
        edgeseq.save(edgeseq.build("rnn", d_in=3, d_out=2), tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o644 and modes["config.json"] == 0o644, modes


def test_inspect_of_a_bare_artifact_says_what_the_file_says(w, tmp_path):
    shutil.copy(w / "art.onnx", tmp_path / "bare.onnx")
    r = run("inspect", tmp_path / "bare.onnx", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    man = json.loads((w / "art.onnx.edgeseq.json").read_text())
    assert [i["name"] for i in info["inputs"]] == [i["name"] for i in man["inputs"]]
    assert "not exported by edgeseq" in info["note"]

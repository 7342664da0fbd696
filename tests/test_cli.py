"""The CLI end to end with typer's CliRunner: train -> convert -> export -> inspect -> stream, and bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "model"
    r = run("train", "--family", "rnn", "--data", "japanese-vowels", "--out", d, "--epochs", "3", "--set", "d_hidden=8")
    assert r.exit_code == 0, r.output
    return d


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"edgeseq {edgeseq.__version__}"
    for cmd in ("train", "convert", "export", "stream", "inspect", "quickstart"):
        h = run(cmd, "--help")
        assert h.exit_code == 0 and "Usage" in h.output and len(h.output) > 300, cmd


def test_train_writes_model_dir_and_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and metrics["params"] > 0
    model = edgeseq.load(trained)
    assert model.config.d_hidden == 8 and model.config.task == "classify" and model.train_length == 29


def test_convert_export_inspect_stream(trained, tmp_path):
    r = run("convert", trained, "--steps", "2000", "--json", tmp_path / "c.json")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["parity"]["steps"] == 2000 and rep["parity"]["max_abs_error"] < 1e-5
    assert rep["state_spec"]["bytes_per_stream"] == 2 * 8 * 4

    r = run("export", trained, "--target", "onnx", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    art = tmp_path / "m.onnx"
    assert art.exists() and (tmp_path / "m.onnx.edgeseq.json").exists()
    timed = json.loads((tmp_path / "m.onnx.edgeseq.json").read_text())["runtime"]["rnn_ops"]
    assert f"{timed['us_per_step']['fused']:.1f} us (fused ops) vs {timed['us_per_step']['gates']:.1f} us" in r.output
    r = run("export", trained, "--target", "onnx", "--out", tmp_path / "f", "--rnn-ops", "fused")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "f.onnx.edgeseq.json").read_text())["runtime"]["rnn_ops"]["form"] == "fused"
    assert run("export", trained, "--out", tmp_path / "g", "--rnn-ops", "fast").exit_code == 2  # not a choice

    r = run("inspect", art)
    assert r.exit_code == 0 and "64 bytes per stream" in r.output and "state_h0" in r.output, r.output

    xs = np.random.default_rng(0).standard_normal((30, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", xs)
    np.savetxt(tmp_path / "x.csv", xs, delimiter=",", header=",".join(f"c{i}" for i in range(12)), comments="")
    r = run("stream", art, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.exit_code == 0, r.output
    y = np.load(tmp_path / "y.npy")
    sess = edgeseq.open(trained)
    np.testing.assert_allclose(y, sess.run(xs), atol=1e-5)
    r = run("stream", art, "--input", tmp_path / "x.csv")
    printed = np.array([[float(v) for v in line.split(",")] for line in r.stdout.strip().splitlines()])
    np.testing.assert_allclose(printed, y, atol=1e-5)

    # resume from a saved state: two halves equal the whole
    np.save(tmp_path / "a.npy", xs[:12])
    np.save(tmp_path / "b.npy", xs[12:])
    assert run("stream", art, "-i", tmp_path / "a.npy", "-o", tmp_path / "ya.npy", "--state-out", tmp_path / "s.npz").exit_code == 0
    assert run("stream", art, "-i", tmp_path / "b.npy", "-o", tmp_path / "yb.npy", "--state-in", tmp_path / "s.npz").exit_code == 0
    np.testing.assert_allclose(np.concatenate([np.load(tmp_path / "ya.npy"), np.load(tmp_path / "yb.npy")]), y, atol=1e-6)

    # a state saved by another model is refused
    other = tmp_path / "other"
    edgeseq.save(edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=8, task="classify"), other)
    r = run("stream", other, "-i", tmp_path / "a.npy", "--state-in", tmp_path / "s.npz")
    assert r.exit_code == 1 and "another model" in r.output


def _one_line_error(r, needle):
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in r.output
    assert any(line.startswith("error:") and needle in " ".join(lines) for line in lines), r.output


def test_bad_input_gives_one_line_and_writes_nothing(trained, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    out = tmp_path / "out"
    r = run("export", broken, "--target", "onnx", "--out", out / "m")
    _one_line_error(r, "cannot read safetensors")
    assert not out.exists() or list(out.iterdir()) == []

    cfg = json.loads((trained / "config.json").read_text())
    cfg["config"]["d_hidden"] = 9
    shutil.copytree(trained, tmp_path / "mismatch")
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps(cfg))
    _one_line_error(run("convert", tmp_path / "mismatch"), "expected (36, 12), got (32, 12)")

    np.save(tmp_path / "wrong.npy", np.zeros((5, 7), np.float32))
    _one_line_error(run("stream", trained, "-i", tmp_path / "wrong.npy"), "expected 12 features per step, got 7")
    (tmp_path / "nan.csv").write_text("\n".join([",".join(["0"] * 12)] * 3 + [",".join(["nan"] * 12)]))
    _one_line_error(run("stream", trained, "-i", tmp_path / "nan.csv", "-o", tmp_path / "y.npy"), "step 3 has NaN")
    assert not (tmp_path / "y.npy").exists()
    _one_line_error(run("inspect", trained / "config.json"), "not an artifact (.onnx, .pte or a .edgeseq.json manifest)")

    r = run("--debug", "convert", tmp_path / "mismatch")
    assert r.exit_code == 1 and isinstance(r.exception, edgeseq.EdgeseqError)

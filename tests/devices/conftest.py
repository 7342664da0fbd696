"""A profile of the session's exported LSTM (ONNX, ExecuTorch, and ExecuTorch int8-dynamic), shared by the report tests."""

import json
import warnings

import pytest
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app

STEPS = 600


@pytest.fixture(scope="session")
def int8_artifact(artifacts, tmp_path_factory):
    from edgeseq.quant import Int8DynamicConfig, quantize_

    step = quantize_(edgeseq.convert(artifacts["model"]), Int8DynamicConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return edgeseq.export(step, tmp_path_factory.mktemp("int8") / "lstm-int8", target="executorch", steps=300)


@pytest.fixture(scope="session")
def report(artifacts, int8_artifact, tmp_path_factory):
    """One profile of three artifacts (ExecuTorch fp32, ONNX fp32, ExecuTorch int8) against the eager model,
    three devices estimated."""
    ref = tmp_path_factory.mktemp("ref")
    edgeseq.save(artifacts["model"], ref, train_length=50)
    out = tmp_path_factory.mktemp("profile") / "rep"
    r = CliRunner().invoke(app, [
        "profile", str(artifacts["executorch"].path), str(artifacts["onnx"].path), str(int8_artifact.path),
        "--steps", str(STEPS), "--warmup", "20", "--streams", "2", "--op-steps", "30", "--parity-steps", "300",
        "--reference", str(ref), "--device", "jetson-orin-nano", "--device", "raspberry-pi-5", "--device", "jetson-nano",
        "--out", str(out)])
    assert r.exit_code == 0, r.output
    return {"steps": STEPS, "dir": out, "json": json.loads((out / "report.json").read_text()), "output": r.output, "ref": ref}

"""examples/: the sensor streaming demo runs end to end (few epochs) and its stream equals the clip model."""

import importlib.util
from pathlib import Path

import pytest

from extras import need  # tests/extras.py

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sensor_stream_demo(tmp_path):
    need("aeon", "data", "BasicMotions comes from aeon")
    result = _load("sensor_stream").run(epochs=4, out=tmp_path, quiet=True)
    assert result["delay"] == 31 and result["stream_samples"] == 4000
    assert result["stream_vs_clip_model_max_abs"] <= 1e-5  # the .pte session vs the clip model on every window
    assert result["accuracy_streamed"] == result["accuracy_clip_model"] > 0.5  # 4 classes: chance is 0.25
    assert result["flops_per_window"] > 10 * result["flops_per_sample"]
    assert (tmp_path / "sensor_stream.json").exists() and Path(result["artifact"]).exists()

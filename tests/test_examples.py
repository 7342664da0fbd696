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


def test_a_published_streaming_vad_model_streams_equal_to_its_authors_onnx(tmp_path):
    """Silero VAD (the silero-vad package): its architecture written in PyTorch over whole recordings with the
    weights of the authors' ONNX file, converted by the graph converter (a 64-sample delay line and the LSTM state),
    exported to ONNX and ExecuTorch and streamed chunk by chunk: every output within 1e-5 of the authors' own
    stateful ONNX stepped as their wrapper steps it."""
    import torch

    threads = torch.get_num_threads()
    need("silero_vad", "libraries", "Silero VAD's weights and ONNX file come from the silero-vad package")
    torch.set_num_threads(threads)  # silero_vad's __init__ sets one thread for the whole process
    need("executorch", "executorch")
    r = _load("vad_stream").run(chunks=600, out=tmp_path, quiet=True)
    assert r["state_bytes"] == 4 * (64 + 128 + 128)
    assert r["port_vs_authors_onnx_max_abs"] <= 1e-5
    assert r["onnx_vs_authors_onnx_max_abs"] <= 1e-5 and r["executorch_vs_authors_onnx_max_abs"] <= 1e-5

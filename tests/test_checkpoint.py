import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file, save_file

import edgeseq
from edgeseq.errors import ArtifactError, ConfigError, WeightsError


def test_roundtrip_keeps_outputs_and_train_length(tmp_path, tiny_lstm):
    tiny_lstm.train_length = 123
    edgeseq.save(tiny_lstm, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["family"] == "rnn" and cfg["config"]["d_hidden"] == 16 and cfg["train_length"] == 123
    back = edgeseq.load(tmp_path / "m")
    x = torch.randn(2, 20, 5)
    with torch.no_grad():
        assert torch.equal(back(x), tiny_lstm(x))
    assert back.train_length == 123
    assert edgeseq.convert(back).fingerprint() == edgeseq.convert(tiny_lstm).fingerprint()
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(tiny_lstm.state_dict())


def test_corrupt_and_missing_weights(tmp_path, tiny_lstm):
    d = edgeseq.save(tiny_lstm, tmp_path / "m")
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot read safetensors"):
        edgeseq.load(d)
    w.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="cannot read safetensors"):
        edgeseq.load(d)
    w.unlink()
    with pytest.raises(WeightsError, match="missing weights file"):
        edgeseq.load(d)


def test_config_that_does_not_match_weights_names_the_tensor(tmp_path, tiny_lstm):
    d = edgeseq.save(tiny_lstm, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"]["d_hidden"] = 32
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"rnn\.weight_ih_l0: expected \(128, 5\), got \(64, 5\)"):
        edgeseq.load(d)
    cfg["config"]["d_hidden"] = 16
    cfg["config"]["num_layers"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"unexpected .*rnn\.weight_hh_l1"):
        edgeseq.load(d)


def test_nan_weights_name_the_tensor(tmp_path, tiny_lstm):
    d = edgeseq.save(tiny_lstm, tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    sd["rnn.weight_hh_l1"][3, 2] = float("nan")
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"'rnn.weight_hh_l1' has 1 NaN/Inf"):
        edgeseq.load(d)
    with torch.no_grad():
        tiny_lstm.head.weight[0, 0] = float("inf")
    with pytest.raises(WeightsError, match="head.weight"):
        edgeseq.save(tiny_lstm, tmp_path / "other")
    assert not (tmp_path / "other" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "text, err, match",
    [
        ("{not json", ConfigError, "not valid JSON"),
        ('{"family": "rnn", "config": {"d_in": 5, "colour": 1}}', ConfigError, "unknown field"),
        ('{"family": "rnn", "config": {"d_in": "five"}}', ConfigError, "expected an integer"),
        ('{"family": "nope", "config": {}}', edgeseq.EdgeseqError, "unknown family 'nope'"),
        ('{"hello": 1}', ConfigError, "unrecognised model directory"),
        ('{"model_type": "bert"}', ConfigError, "Hugging Face model type 'bert' is not supported"),
    ],
)
def test_bad_config_json(tmp_path, tiny_lstm, text, err, match):
    d = edgeseq.save(tiny_lstm, tmp_path / "m")
    (d / "config.json").write_text(text)
    with pytest.raises(err, match=match):
        edgeseq.load(d)


def test_not_a_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not a model directory"):
        edgeseq.load(tmp_path / "nothing")


def _unsafe_torch_load(text: str) -> bool:
    """A torch.load call without weights_only=True in its arguments (the safe unpickler of tensors only)."""
    calls = text.split("torch.load(")[1:]
    return any("weights_only=True" not in call.split("\n\n")[0][:200] for call in calls)


def test_no_pickle_in_the_package():
    root = pathlib.Path(edgeseq.__file__).resolve().parent.parent
    offenders = []
    for folder in ("edgeseq", "exporters", "runtimes", "quant", "devices"):
        for f in (root / folder).rglob("*.py"):
            text = f.read_text()
            if "import pickle" in text or _unsafe_torch_load(text) or "allow_pickle=True" in text:
                offenders.append(str(f))
    assert not offenders
    assert _unsafe_torch_load("x = torch.load(f)\n") and not _unsafe_torch_load("torch.load(io.BytesIO(b), weights_only=True)")

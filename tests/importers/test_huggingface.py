"""Hugging Face Mamba / Mamba-2 -> edgeseq, checked against the transformers models' own forward passes.

Tiny random models are built offline with ``transformers`` and written with ``save_pretrained``; the reference
is always the Hugging Face model itself (its full-sequence forward over 2,048 tokens), never our code."""

import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app
from edgeseq.errors import ConfigError, InputError, WeightsError
from edgeseq.parity import rollout

from extras import need  # tests/extras.py

transformers = need("transformers", "importers", "transformers is the oracle of these tests")

T = 2048
VOCAB = 64


def _hf_mamba(causal=True, **kw):
    cfg = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2,
                                   conv_kernel=4, **kw)
    cls = transformers.MambaForCausalLM if causal else transformers.MambaModel
    return cls(cfg).eval()


def _hf_mamba2(**kw):
    cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2,
                                    conv_kernel=4, num_heads=4, head_dim=8, n_groups=2, chunk_size=64, **kw)
    return transformers.Mamba2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    hf = _hf_mamba()
    d = tmp_path_factory.mktemp("hf") / "mamba"
    hf.save_pretrained(d, safe_serialization=True)
    return hf, d


def _step_logits(model, ids):
    return rollout(edgeseq.convert(model), ids.T[:, :, None].contiguous()).transpose(0, 1)  # (1, T, vocab)


def test_causal_lm_dir_step_matches_hf_forward_over_2048_tokens(hf_dir, ids):
    hf, d = hf_dir
    model = edgeseq.load(d)  # the save_pretrained directory, read from safetensors
    assert model.config.vocab_size == VOCAB and model.config.variant == "mamba1"
    with torch.no_grad():
        ref = hf(ids).logits
    got = _step_logits(model, ids)
    assert (got - ref).abs().max().item() <= 1e-4
    with torch.no_grad():
        assert (model.forward_steps(ids) - ref).abs().max().item() <= 1e-4


def test_mamba_model_without_lm_head_in_memory(ids):
    torch.manual_seed(1)
    hf = _hf_mamba(causal=False, use_bias=True)
    model = edgeseq.from_huggingface(hf)
    assert model.config.head == "norm" and model.config.d_out == 16
    with torch.no_grad():
        ref = hf(ids).last_hidden_state
    assert (_step_logits(model, ids) - ref).abs().max().item() <= 1e-4


def test_mamba2_dir_step_matches_hf_forward_over_2048_tokens(tmp_path, ids):
    torch.manual_seed(2)
    hf = _hf_mamba2()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = edgeseq.load(tmp_path)
    assert model.config.variant == "mamba2" and model.config.n_groups == 2
    with torch.no_grad():
        ref = hf(ids).logits
    assert (_step_logits(model, ids) - ref).abs().max().item() <= 1e-4
    with torch.no_grad():
        assert (model.forward_steps(ids) - ref).abs().max().item() <= 1e-4


def test_hf_cached_step_agrees_with_our_step(hf_dir, ids):
    """Our step vs Hugging Face's own cached generation step, token by token over 300 tokens."""
    hf, d = hf_dir
    step = edgeseq.convert(edgeseq.load(d))
    state = step.init_state(1)
    with torch.no_grad():
        out = hf(ids[:, :1], use_cache=True)
        cache, worst = out.cache, 0.0
        for t in range(300):
            if t:
                out = hf(ids[:, t : t + 1], cache=cache, use_cache=True)
                cache = out.cache
            y, state = step.step(ids[:, t : t + 1], state)
            worst = max(worst, (y - out.logits[:, -1]).abs().max().item())
    assert worst <= 1e-4


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("field,value", [("state_size", 16), ("conv_kernel", 3), ("expand", 4), ("num_hidden_layers", 3), ("vocab_size", 65)])
def test_config_contradicting_weights_is_named(hf_dir, tmp_path, field, value):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(hf_dir[1], d)
    _edit_config(d, **{field: value})
    with pytest.raises(ConfigError, match=f"{field}={value} contradicts the weights"):
        edgeseq.load(d)


def test_other_architecture_and_pickles_are_refused(tmp_path, hf_dir):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=20, n_positions=16))
    gpt2.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    with pytest.raises(ConfigError, match="model type 'gpt2' is not supported; edgeseq imports mamba, mamba2"):
        edgeseq.load(tmp_path / "gpt2")
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((hf_dir[1] / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="never unpickles"):
        edgeseq.load(d)


def test_cli_exports_hf_dir_and_streams_token_ids(hf_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(hf_dir[1]), "--steps", "500"])
    assert r.exit_code == 0 and "parity over 500 steps" in r.output, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = runner.invoke(app, ["export", str(hf_dir[1]), "--target", "onnx", "--out", str(tmp_path / "lm")])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "lm.onnx.edgeseq.json").read_text())
    assert man["vocab_size"] == VOCAB and man["inputs"][0]["dtype"] == "int64"
    assert man["parity"]["steps"] == 2000 and man["parity"]["max_abs_error"] <= 1e-4
    ids = np.array([[1], [5], [63], [0]])
    np.save(tmp_path / "ids.npy", ids)
    r = runner.invoke(app, ["stream", str(tmp_path / "lm.onnx"), "--input", str(tmp_path / "ids.npy"), "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        ref = hf_dir[0](torch.from_numpy(ids.T)).logits[0].numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() <= 1e-4
    np.save(tmp_path / "bad.npy", np.array([[1], [VOCAB]]))
    r = runner.invoke(app, ["stream", str(tmp_path / "lm.onnx"), "--input", str(tmp_path / "bad.npy"), "--output", str(tmp_path / "bad_y.npy")])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1] == f"error: push: token id {VOCAB} at step 1 is outside the vocabulary (0..{VOCAB - 1})"
    assert not (tmp_path / "bad_y.npy").exists()
    sess = edgeseq.open(tmp_path / "lm.onnx")
    with pytest.raises(InputError, match="takes token ids"):
        sess.push(np.zeros((1, 1), np.float32))


def test_cli_refuses_contradicting_dir_and_writes_nothing(hf_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(hf_dir[1], d)
    _edit_config(d, state_size=4)
    r = CliRunner().invoke(app, ["export", str(d), "--target", "onnx", "--out", str(tmp_path / "out" / "x")])
    assert r.exit_code == 1
    assert r.output.strip().startswith("error: ") and "state_size=4 contradicts the weights" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_convert_and_check_parity_take_the_transformers_model_itself(ids):
    """edgeseq.convert(hf_model) imports on the fly; check_parity's reference is the HF model's own forward."""
    torch.manual_seed(5)
    hf = _hf_mamba2()
    report = edgeseq.check_parity(hf, edgeseq.convert(hf), ids[:, :, None])
    assert report.steps == T and report.max_abs_error <= 1e-4

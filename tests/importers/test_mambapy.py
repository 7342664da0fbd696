"""mambapy -> edgeseq, checked against mambapy's own forward (parallel scan) and its own ``step``."""

import sys
import types

import pytest
import torch

import edgeseq
from edgeseq.errors import ConfigError, UnsupportedModuleError
from edgeseq.parity import rollout

from extras import need  # tests/extras.py

mambapy_mamba = need("mambapy.mamba", "importers", "mambapy is the oracle of these tests")

T = 2048


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = mambapy_mamba.MambaConfig(d_model=16, n_layers=2, d_state=8, **kw)
    return mambapy_mamba.Mamba(cfg).eval()


def test_stack_step_matches_mambapy_forward_over_2048_steps():
    mp = _tiny()
    model = edgeseq.from_mambapy(mp)
    assert model.config.embed is False and model.config.head == "none"
    x = torch.randn(1, T, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = mp(x)
    got = rollout(edgeseq.convert(model), x.transpose(0, 1).contiguous()).transpose(0, 1)
    assert (got - ref).abs().max().item() <= 1e-4


def test_step_matches_mambapy_own_step(monkeypatch):
    mp = _tiny(bias=True, conv_bias=False)
    step = edgeseq.convert(edgeseq.from_mambapy(mp))
    state = step.init_state(1)
    caches = [(None, torch.zeros(1, 32, 3)) for _ in range(2)]  # mambapy: (h, last d_conv - 1 inputs) per layer
    worst = 0.0
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(500):
            x = torch.randn(1, 16, generator=g)
            ref, caches = mp.step(x, caches)
            y, state = step.step(x, state)
            worst = max(worst, (y - ref).abs().max().item())
    assert worst <= 1e-5


def _import_lm(monkeypatch):
    """mambapy.lm imports mambapy.mamba2, which needs mamba_ssm's Triton kernels (CUDA only) at import time.
    Its Mamba-1 language model does not use them: stand in an empty mambapy.mamba2 when the real one fails."""
    try:
        import mambapy.lm as lm
        return lm
    except ImportError:
        stub = types.ModuleType("mambapy.mamba2")
        stub.Mamba2 = type("Mamba2", (), {})
        stub.Mamba2Config = type("Mamba2Config", (), {})
        monkeypatch.setitem(sys.modules, "mambapy.mamba2", stub)
        monkeypatch.delitem(sys.modules, "mambapy.lm", raising=False)
        import mambapy.lm as lm
        return lm


def test_language_model_logits_match_mambapy_lm(monkeypatch):
    lm_mod = _import_lm(monkeypatch)
    torch.manual_seed(3)
    lm = lm_mod.LM(mambapy_mamba.MambaConfig(d_model=16, n_layers=2, d_state=8), vocab_size=50).eval()
    model = edgeseq.from_mambapy(lm)
    assert model.config.vocab_size == 50
    ids = torch.randint(0, 50, (1, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = lm(ids)
    got = rollout(edgeseq.convert(model), ids.T[:, :, None].contiguous()).transpose(0, 1)
    assert (got - ref).abs().max().item() <= 1e-4


def test_unsupported_mambapy_models_are_refused():
    with pytest.raises(ConfigError, match="inner_layernorms=True is not supported"):
        edgeseq.from_mambapy(_tiny(inner_layernorms=True))
    with pytest.raises(UnsupportedModuleError, match="expects a mambapy Mamba or LM"):
        edgeseq.from_mambapy(torch.nn.Linear(2, 2))


def test_convert_and_check_parity_take_the_mambapy_model_itself():
    mp = _tiny()
    report = edgeseq.check_parity(mp, edgeseq.convert(mp), torch.randn(2, T, 16))
    assert report.steps == T and report.max_abs_error <= 1e-4

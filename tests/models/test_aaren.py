"""Family aaren: the prefix scan against plain causal softmax attention, and the step against the scan."""

import math

import pytest
import torch

import edgeseq
from edgeseq.errors import ConfigError
from edgeseq.models.aaren import M_INIT, causal_attention_oracle, prefix_scan, sequential_scan


def _scores_values(T, B=1, H=2, dh=8, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, generator=g) * scale, torch.randn(B, H, T, dh, generator=g)


def test_scan_matches_causal_softmax_attention_at_4096():
    s, v = _scores_values(4096)
    err = (prefix_scan(s, v) - causal_attention_oracle(s, v)).abs().max().item()
    assert err <= 1e-5, err


def test_scan_is_stable_for_large_scores():
    s, v = _scores_values(512, scale=200.0)  # exp(200) overflows float32; the running max keeps it finite
    out = prefix_scan(s, v)
    assert torch.isfinite(out).all()
    assert (out - causal_attention_oracle(s, v)).abs().max().item() <= 1e-5


def test_oracle_catches_the_cummax_cumsum_shortcut():
    """cummax, then a cumulative sum of exponentials each scaled by its *own* prefix max, is not softmax."""
    s, v = _scores_values(256)
    m = torch.cummax(s, dim=-1).values
    e = torch.exp(s - m)  # term i scaled by max(s[:i+1]), not by max(s[:t+1]): wrong for every t > i
    shortcut = torch.cumsum(e.unsqueeze(-1) * v, dim=2) / torch.cumsum(e, dim=-1).unsqueeze(-1)
    err = (shortcut - causal_attention_oracle(s, v)).abs().max().item()
    assert err > 1e-2, "the oracle failed to tell the shortcut from softmax attention"


def test_sequential_scan_equals_parallel_scan():
    s, v = _scores_values(300, B=2, H=3, dh=4)
    assert (sequential_scan(s, v) - prefix_scan(s, v)).abs().max().item() <= 1e-5


def test_scan_is_differentiable():
    model = edgeseq.build("aaren", d_in=3, d_out=2, d_model=16, n_heads=2, n_layers=1, d_ff=16)
    y = model(torch.randn(2, 64, 3))
    y.pow(2).mean().backward()
    g = model.blocks[0].attn.query.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_step_matches_parallel_form_over_10k_steps():
    torch.manual_seed(0)
    model = edgeseq.build("aaren", d_in=4, d_out=3, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    step = edgeseq.convert(model)
    report = edgeseq.check_parity(model, step, torch.randn(1, 10_000, 4))
    assert report.steps == 10_000
    assert report.max_abs_error <= 1e-5, report.summary()  # seen: 1.0e-06


def test_state_is_constant_size_and_starts_finite():
    model = edgeseq.build("aaren", d_in=4, d_out=3, d_model=32, n_heads=4, n_layers=3)
    step = edgeseq.convert(model)
    spec = step.state_spec
    assert spec.names[:3] == ("m0", "u0", "w0")
    assert spec.bytes_per_stream == 3 * (4 + 4 + 4 * 8) * 4  # layers x (m + u + w) x float32
    m0 = step.init_state(2)[0]
    assert torch.isfinite(m0).all() and float(m0.max()) == pytest.approx(M_INIT)
    assert M_INIT < -1e29 and math.isfinite(M_INIT)


def test_classify_last_step_and_config_errors():
    model = edgeseq.build("aaren", d_in=2, d_out=4, task="classify", d_model=8, n_heads=2, n_layers=1)
    x = torch.randn(2, 10, 2)
    with torch.no_grad():
        assert torch.allclose(model(x, torch.tensor([10, 4]))[1], model(x[1:, :4])[0], atol=1e-6)
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        edgeseq.build("aaren", d_in=2, d_out=2, d_model=10, n_heads=4)


def test_aaren_directory_with_wrong_weights_gets_the_common_errors(tmp_path):
    import json

    from edgeseq.errors import WeightsError

    model = edgeseq.build("aaren", d_in=3, d_out=2, d_model=16, n_heads=2, n_layers=1, d_ff=16)
    d = edgeseq.save(model, tmp_path / "a")
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"]["d_ff"] = 24
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"blocks\.0\.ff\.0\.weight: expected \(24, 16\), got \(16, 16\)"):
        edgeseq.load(d)

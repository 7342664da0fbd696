"""Family mamba: the parallel scans against their sequential recurrences, the steps against the parallel forms."""

import pytest
import torch

import edgeseq
from edgeseq.errors import ConfigError
from edgeseq.models.mamba import MambaBlock, MambaConfig
from edgeseq.models.scan import selective_scan, sequential_selective_scan, sequential_ssd, ssd_scan


def test_parallel_scan_matches_sequential_oracle():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1000, 8, 4, generator=g)  # decays in (0, 1), as exp(dt * A) is
    b = torch.randn(2, 1000, 8, 4, generator=g)
    assert (selective_scan(a, b) - sequential_selective_scan(a, b)).abs().max().item() <= 1e-5


def test_block_scan_is_the_recurrence_it_claims():
    """An independent reference for one block: h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t."""
    torch.manual_seed(0)
    c = MambaConfig(d_in=3, d_out=2, d_model=8, d_state=4, d_conv=3)
    blk = MambaBlock(c).eval()
    u = torch.randn(1, 50, 8)
    with torch.no_grad():
        out = blk(u)
        x, z = blk.in_proj(u).chunk(2, -1)
        xp = torch.nn.functional.pad(x, (0, 0, c.d_conv - 1, 0))  # causal: zeros before the start
        w = blk.conv1d.weight[:, 0]  # (E, K)
        xc = torch.stack([(xp[:, t : t + c.d_conv].transpose(1, 2) * w).sum(-1) for t in range(50)], 1) + blk.conv1d.bias
        xc = torch.nn.functional.silu(xc)
        dt, B, C = blk.x_proj(xc).split([blk.rank, c.d_state, c.d_state], dim=-1)
        dt = torch.log1p(torch.exp(blk.dt_proj(dt)))  # softplus
        A = -torch.exp(blk.A_log)
        h = torch.zeros(1, c.d_inner, c.d_state)
        ys = []
        for t in range(50):
            h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None, :] * xc[:, t, :, None]
            ys.append((h * C[:, t, None, :]).sum(-1) + blk.D * xc[:, t])
        ref = blk.out_proj(torch.stack(ys, 1) * torch.nn.functional.silu(z))
    assert (out - ref).abs().max().item() <= 1e-5


def test_step_matches_parallel_form_over_10k_steps():
    torch.manual_seed(0)
    model = edgeseq.build("mamba", d_in=4, d_out=3, d_model=16, n_layers=2, d_state=8)
    step = edgeseq.convert(model)
    report = edgeseq.check_parity(model, step, torch.randn(1, 10_000, 4))
    assert report.max_abs_error <= 1e-5, report.summary()


def test_state_layout_and_config_errors():
    step = edgeseq.convert(edgeseq.build("mamba", d_in=2, d_out=2, d_model=8, n_layers=3, d_state=5, d_conv=4, expand=2))
    assert step.state_spec.names[:2] == ("conv0", "ssm0")
    assert step.state_spec.bytes_per_stream == 3 * 16 * (3 + 5) * 4  # layers x E x (K-1 + N) x float32
    with pytest.raises(ConfigError, match="d_state must be >= 1"):
        edgeseq.build("mamba", d_in=2, d_out=2, d_state=0)


@pytest.mark.parametrize("T,chunk,groups", [(300, 64, 1), (257, 32, 2), (5, 64, 4), (128, 1, 1)])
def test_ssd_chunked_scan_matches_sequential_oracle(T, chunk, groups):
    g = torch.Generator().manual_seed(T)
    H, P, N = 4, 3, 5
    x = torch.randn(2, T, H, P, generator=g)
    dt = torch.rand(2, T, H, generator=g) * 0.5 + 0.01
    A = -torch.rand(H, generator=g) * 4 - 0.1
    B, C = torch.randn(2, T, groups, N, generator=g), torch.randn(2, T, groups, N, generator=g)
    ref = sequential_ssd(x, dt, A, B, C)
    assert (ssd_scan(x, dt, A, B, C, chunk) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_ssd_scan_is_differentiable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 40, 2, 3, generator=g, requires_grad=True)
    dt = (torch.rand(1, 40, 2, generator=g) * 0.3 + 0.01).requires_grad_()
    A = torch.tensor([-0.5, -2.0], requires_grad=True)
    B, C = torch.randn(1, 40, 1, 4, generator=g), torch.randn(1, 40, 1, 4, generator=g)
    ssd_scan(x, dt, A, B, C, 16).square().sum().backward()
    ref = [t.grad.clone() for t in (x, dt, A)]
    for t in (x, dt, A):
        t.grad = None
    sequential_ssd(x, dt, A, B, C).square().sum().backward()
    for got, t in zip(ref, (x, dt, A)):
        assert torch.allclose(got, t.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [
    dict(variant="mamba2", d_model=16, head_dim=8),
    dict(variant="mamba2", d_model=32, head_dim=8, n_groups=2, bias=True, chunk_size=16),
    dict(d_model=16, vocab_size=40, d_in=1, d_out=40),
    dict(d_model=16, d_in=16, d_out=16, embed=False, head="none", conv_bias=False),
])
def test_variants_step_matches_parallel_form_over_long_streams(kw):
    torch.manual_seed(1)
    cfg = dict(d_in=4, d_out=3, n_layers=2, d_state=8)
    cfg.update(kw)
    model = edgeseq.build("mamba", **cfg)
    with torch.no_grad():  # move away from the init, where several parameters are constant
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    step = edgeseq.convert(model)
    steps = 10_000 if kw.get("variant") == "mamba2" and not kw.get("bias") else 3_000
    x = step.example_input(steps, 1).transpose(0, 1).contiguous()
    report = edgeseq.check_parity(model, step, x)
    assert report.max_abs_error <= 1e-5, report.summary()


def test_mamba2_state_is_per_head():
    step = edgeseq.convert(edgeseq.build("mamba", d_in=2, d_out=2, d_model=16, n_layers=1, d_state=4, head_dim=8, variant="mamba2", n_groups=2))
    spec = {t.name: t.shape for t in step.state_spec.tensors}
    assert spec == {"conv0": (3, 32 + 2 * 2 * 4), "ssm0": (4, 8, 4)}  # 3 frames of (x, B, C), time-major; (heads, head_dim, d_state)


def test_token_ids_are_checked():
    from edgeseq.errors import InputError

    model = edgeseq.build("mamba", d_in=1, d_out=10, vocab_size=10, d_model=8, n_layers=1, d_state=4)
    step = edgeseq.convert(model)
    with pytest.raises(InputError, match="token id 10 is outside the vocabulary"):
        step(torch.tensor([[10]]), step.init_state(1))
    with pytest.raises(InputError, match="must be integers"):
        model(torch.zeros(1, 5, 1))
    with pytest.raises(ConfigError, match="d_in must be 1"):
        edgeseq.build("mamba", d_in=3, d_out=10, vocab_size=10)


def test_mamba2_config_errors():
    with pytest.raises(ConfigError, match="multiple of head_dim"):
        edgeseq.build("mamba", d_in=2, d_out=2, d_model=10, head_dim=8, variant="mamba2")
    with pytest.raises(ConfigError, match="must divide the number of heads"):
        edgeseq.build("mamba", d_in=2, d_out=2, d_model=16, head_dim=8, n_groups=3, variant="mamba2")


@pytest.mark.parametrize("kw", [
    dict(variant="mamba2", d_model=16, head_dim=8, n_groups=2, d_in=3, d_out=2),
    dict(d_model=16, vocab_size=30, d_in=1, d_out=30),
])
def test_mamba2_and_language_models_export_nearly_fully_delegated(kw, tmp_path):
    """2,000-step parity recorded in both manifests; XNNPACK runs >= 90% of the step's operators (the issue's
    target; the only operator left out of a language model is the embedding lookup)."""
    import warnings

    model = edgeseq.build("mamba", n_layers=2, d_state=8, **kw)
    model.train_length = 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arts = {t: edgeseq.export(model, tmp_path / "m", target=t) for t in ("onnx", "executorch")}
    for art in arts.values():
        assert art.parity["steps"] == 2000 and art.parity["max_abs_error"] <= 1e-4
        assert art.manifest["train_length"] == 100
    g = arts["executorch"].manifest["graph"]
    assert g["delegated_fraction"] >= 0.9, g["non_delegated"]
    assert set(g["non_delegated"]) <= {"embedding"}
    sess = edgeseq.open(arts["executorch"].path)
    x = 3 if kw.get("vocab_size") else torch.randn(3).numpy()
    for _ in range(100):
        sess.push(x)
    with pytest.warns(UserWarning, match="passed the training length"):
        sess.push(x)

"""Family mamba: the log-depth selective scan against the sequential recurrence, the step against the scan."""

import pytest
import torch

import edgeseq
from edgeseq.errors import ConfigError
from edgeseq.models.mamba import MambaBlock, MambaConfig, selective_scan, sequential_selective_scan


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
        dt, B, C = blk.ssm_inputs(xc)
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

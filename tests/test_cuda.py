"""CUDA: the parallel form trains on the GPU and its weights still convert to an exact CPU step.

Skipped, saying so, on machines without an NVIDIA GPU (CI has none; scripts/gpu-check.sh runs these)."""

import pytest
import torch

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.train import TrainConfig, fit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA; none on this machine"),
]


def test_parallel_form_trains_on_cuda_and_converts():
    ds = load_dataset("japanese-vowels")
    model = edgeseq.build("rnn", d_in=12, d_out=9, task="classify", d_hidden=32)
    result = fit(model, ds, TrainConfig(epochs=5, device="cuda"))
    assert result.losses[-1] < result.losses[0]
    step = edgeseq.convert(model)
    report = edgeseq.check_parity(model, step, torch.randn(2, 2000, 12))
    assert report.max_abs_error <= 1e-5


def test_cuda_parallel_matches_cpu_step():
    torch.backends.cudnn.allow_tf32 = False  # exact float32 on the GPU side
    torch.backends.cuda.matmul.allow_tf32 = False
    model = edgeseq.build("rnn", d_in=6, d_out=4, cell="gru", d_hidden=64, num_layers=2)
    step = edgeseq.convert(model)
    x = torch.randn(4, 3000, 6)
    with torch.no_grad():
        ref = model.cuda()(x.cuda()).cpu()  # cuDNN
    model.cpu()
    state = step.init_state(4)
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = step(x[:, t], state)
            ys.append(y)
    assert (torch.stack(ys, 1) - ref).abs().max() <= 1e-4  # cuDNN vs CPU float32 summation order


def test_aaren_scan_on_cuda_matches_oracle_and_cpu_step():
    from edgeseq.models.aaren import causal_attention_oracle, prefix_scan

    torch.backends.cuda.matmul.allow_tf32 = False
    s, v = torch.randn(2, 4, 4096, device="cuda") * 4, torch.randn(2, 4, 4096, 16, device="cuda")
    assert (prefix_scan(s, v) - causal_attention_oracle(s, v)).abs().max().item() <= 1e-5
    ds = load_dataset("japanese-vowels")
    model = edgeseq.build("aaren", d_in=12, d_out=9, task="classify", d_model=32, n_heads=4, n_layers=2, d_ff=64)
    result = fit(model, ds, TrainConfig(epochs=3, device="cuda"))  # bf16 autocast on CUDA
    assert result.losses[-1] < result.losses[0]
    report = edgeseq.check_parity(model, edgeseq.convert(model), torch.randn(1, 2000, 12))
    assert report.max_abs_error <= 1e-5


@pytest.mark.parametrize("variant", ["mamba1", "mamba2"])
def test_mamba_trains_on_cuda_and_its_scan_matches_the_cpu_step(variant):
    """The PyTorch scans on the GPU (mamba_ssm kernels off) vs the CPU step; then a short CUDA training run."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = edgeseq.build("mamba", d_in=12, d_out=9, d_model=32, n_layers=2, d_state=8, variant=variant, head_dim=16)
    for layer in model.layers:
        layer.mixer.use_mamba_ssm = False
    x = torch.randn(2, 2000, 12)
    with torch.no_grad():
        ref = model.cuda().forward_steps(x.cuda()).cpu()
    model.cpu()
    got = edgeseq.parity.rollout(edgeseq.convert(model), x.transpose(0, 1).contiguous()).transpose(0, 1)
    assert (got - ref).abs().max().item() <= 1e-4
    ds = load_dataset("japanese-vowels")
    result = fit(edgeseq.build("mamba", d_in=12, d_out=9, task="classify", d_model=32, variant=variant, head_dim=16),
                 ds, TrainConfig(epochs=3, device="cuda"))
    assert result.losses[-1] < result.losses[0]


def test_mamba_ssm_kernels_match_the_pytorch_scans():
    from edgeseq.models.mamba import mamba_ssm_kernels

    if mamba_ssm_kernels() is None:
        pytest.skip("mamba_ssm (the [cuda] extra, built against the CUDA toolkit) is not installed on this GPU machine")
    for variant in ("mamba1", "mamba2"):
        model = edgeseq.build("mamba", d_in=4, d_out=3, d_model=64, n_layers=2, d_state=16, variant=variant, head_dim=32).cuda()
        x = torch.randn(2, 512, 4, device="cuda")
        with torch.no_grad():
            fast = model.forward_steps(x)
            for layer in model.layers:
                layer.mixer.use_mamba_ssm = False
            ref = model.forward_steps(x)
        assert (fast - ref).abs().max().item() <= 1e-3, variant  # kernels sum in another order


def test_continual_tcn_trains_on_cuda_and_streams_like_its_cudnn_form():
    """A temporal CNN of the continual family: cuDNN convolutions on the GPU vs the CPU ring-buffer step over
    2,000 frames (after the delay of its 'same' padding); then a short CUDA training run and an exact CPU parity."""
    torch.backends.cudnn.allow_tf32 = False
    model = edgeseq.build("continual", d_in=6, d_out=4, channels=(32, 32, 32), padding="same", pool="avg")
    step = edgeseq.convert(model)
    delay = step.state_spec.delay
    x = torch.randn(2, 2000, 6)
    with torch.no_grad():
        ref = model.cuda()(x.cuda()).cpu()
    model.cpu()
    got = edgeseq.parity.rollout(step, x.transpose(0, 1).contiguous()).transpose(0, 1)
    assert delay > 0
    assert (got[:, delay:] - ref[:, : 2000 - delay]).abs().max().item() <= 1e-4
    ds = load_dataset("japanese-vowels")
    clf = edgeseq.build("continual", d_in=12, d_out=9, task="classify", channels=(32, 32))
    result = fit(clf, ds, TrainConfig(epochs=3, device="cuda"))
    assert result.losses[-1] < result.losses[0]
    report = edgeseq.check_parity(clf.cpu(), edgeseq.convert(clf), torch.randn(1, 2000, 12))
    assert report.max_abs_error <= 1e-5

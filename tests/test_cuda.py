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

"""Parallel (training) forms on CUDA: forward + backward throughput and peak memory, per family.

The product's promise is that the parallel form stays trainable on the GPU while the step form ships to the edge.
This measures one training iteration (forward, mean-square loss, backward) of each family's parallel form at
batch B and length T, in bf16 autocast as `edgeseq train` uses on CUDA, and reports tokens/s and peak GPU memory.
Run by scripts/gpu-check.sh; its table is recorded in docs/gpu.md.

Run: python benchmarks/gpu_train.py [--device cuda|cpu] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import edgeseq

D_IN, D_OUT = 16, 8

# name -> (family, build kwargs): the sizes of a small edge model (a few hundred k parameters)
MODELS = {
    "LSTM 2x256 (cuDNN)": ("rnn", dict(cell="lstm", d_hidden=256, num_layers=2)),
    "GRU 2x256 (cuDNN)": ("rnn", dict(cell="gru", d_hidden=256, num_layers=2)),
    "Aaren 256x4 (prefix scan)": ("aaren", dict(d_model=256, n_heads=4, n_layers=4, d_ff=512)),
    "Mamba-1 256x4 (log-depth scan)": ("mamba", dict(d_model=256, n_layers=4, d_state=16, variant="mamba1")),
    "Mamba-2 256x4 (chunked SSD)": ("mamba", dict(d_model=256, n_layers=4, d_state=64, variant="mamba2", head_dim=64)),
    "TCN 6x128 (continual family)": ("continual", dict(channels=(128,) * 6)),
}


def time_iteration(model: torch.nn.Module, x: torch.Tensor, device: torch.device, reps: int) -> tuple[float, int]:
    """Seconds per forward+backward (median of ``reps``) and peak bytes allocated on the device."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(reps + 2):  # two warm-ups
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            loss = model(x).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="batch 2, length 256, 2 repetitions (a smoke run)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    b, t, reps = (2, 256, 2) if args.quick else (16, 4096, 10)
    torch.manual_seed(0)
    x = torch.randn(b, t, D_IN, device=device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    lines = [f"Training iteration (forward + MSE + backward, bf16 autocast on CUDA) at batch {b} x length {t} on {name}, "
             f"torch {torch.__version__}; median of {reps}.", "",
             "| model | params | ms / iteration | tokens / s | peak memory (MiB) |", "|---|---:|---:|---:|---:|"]
    for label, (family, kw) in MODELS.items():
        model = edgeseq.build(family, d_in=D_IN, d_out=D_OUT, **kw).to(device).train()
        params = sum(p.numel() for p in model.parameters())
        try:
            sec, peak = time_iteration(model, x, device, reps)
            row = f"| {label} | {params / 1e3:.0f} k | {sec * 1e3:.1f} | {b * t / sec:,.0f} | {peak / 2**20:.0f} |"
        except torch.OutOfMemoryError:
            row = f"| {label} | {params / 1e3:.0f} k | out of memory | | |"
        print(row, flush=True)
        lines.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    md = "\n".join(lines)
    print(md)
    if args.out:
        args.out.write_text(md + "\n")


if __name__ == "__main__":
    main()

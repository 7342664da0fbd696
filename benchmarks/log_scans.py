"""Log-space scans over long streams: Heinsen's form streamed literally vs as its recurrence, against float64.

A gated linear recurrence h_t = a_t h_(t-1) + b_t (minGRU's, appendix B of arXiv:2410.01201) written in Heinsen's
log-space parallel form, ``a* = cumsum(log a); log h = a* + logcumsumexp(log b - a*)``, is converted twice: as the
converter streams it (``edgeseq.graph.scans`` recognises the form and streams the recurrence, state log h) and, for
comparison, literally (two running totals, a* and the log-sum-exp, as they are without the recognition). Both
steps are exported to ONNX and run by onnxruntime over 10^4, 10^5 and 10^6 frames of the same input; the
reference is the recurrence itself run in float64. The model's own float32 forward (the parallel form) is shown
beside them. Errors are max |h - h_ref| over the stream (h is O(1)).

Run: python benchmarks/log_scans.py [--quick] [--no-write]
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import edgeseq  # noqa: E402
from _common import single_thread_quiet, standard_args, write_section  # noqa: E402  (benchmarks/_common.py)


class HeinsenGate(nn.Module):
    """h_t = (1 - z_t) h_(t-1) + z_t v_t with z = sigmoid(W x), v = softplus(V x), in Heinsen's log-space form."""

    def __init__(self, d_in=2, d=4):
        super().__init__()
        self.gate, self.value = nn.Linear(d_in, d), nn.Linear(d_in, d)

    def forward(self, x):  # (B, T, d_in)
        z = self.gate(x)
        log_a = -F.softplus(z)
        log_b = -F.softplus(-z) + torch.log(F.softplus(self.value(x)))
        a_star = log_a.cumsum(dim=1)
        return (a_star + (log_b - a_star).logcumsumexp(dim=1)).exp()


def reference(model: HeinsenGate, x: torch.Tensor) -> np.ndarray:
    """The recurrence itself in float64, frame by frame."""
    with torch.no_grad():
        z = model.gate(x)[0].double().numpy()
        v = F.softplus(model.value(x)[0].double()).numpy()
    a, b = 1.0 / (1.0 + np.exp(z)), v / (1.0 + np.exp(-z))
    h, out = np.zeros(a.shape[1]), np.empty_like(a)
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out[t] = h
    return out


def literal_step(model, example):
    """The step as it would be without the recognition: cumsum and logcumsumexp streamed as two running totals."""
    from edgeseq.graph import scans

    keep = scans.recognise
    scans.recognise = lambda gm: 0
    try:
        return edgeseq.convert(model, example=example)
    finally:
        scans.recognise = keep


def main() -> None:
    args = standard_args(__doc__, "10^4 and 10^5 frames only").parse_args()
    single_thread_quiet()
    torch.manual_seed(0)
    model = HeinsenGate().eval()
    example = torch.randn(1, 20, 2)
    steps = {"recurrence (edgeseq)": edgeseq.convert(model, example=example), "literal": literal_step(model, example)}
    assert [t.name for t in steps["recurrence (edgeseq)"].state_spec.tensors] == ["log_linear_scan.log_h"]
    lengths = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    x = torch.randn(1, max(lengths), 2, generator=torch.Generator().manual_seed(1))
    ref = reference(model, x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = {}
        for name, step in steps.items():
            art = edgeseq.export(step, Path(tmp) / name.split()[0], target="onnx", steps=300)
            outs[name] = edgeseq.open(art.path).run(x[0].numpy()).astype(np.float64)
        for n in lengths:
            with torch.no_grad():
                own = model(x[:, :n])[0].double().numpy()
            row = {"frames": n, "model's own float32 forward": float(np.abs(own - ref[:n]).max())}
            for name in steps:
                row[name] = float(np.abs(outs[name][:n] - ref[:n]).max())
            rows.append(row)
            print(row, flush=True)
    cols = ["recurrence (edgeseq)", "literal", "model's own float32 forward"]
    lines = ["Heinsen's log-space scan (h_t = a_t h_(t-1) + b_t, 4 channels, gates from standard normal inputs) "
             "streamed on onnxruntime, float32; max |h - h_ref| against the recurrence run in float64 (h is O(1)). "
             "`recurrence (edgeseq)`: the converter's step (state log h); `literal`: the same model streamed as two "
             "running totals, as without the recognition; the model's own float32 parallel forward beside them.", "",
             "| frames | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['frames']:,} | " + " | ".join(f"{r[c]:.1e}" for c in cols) + " |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "log-scans", md)


if __name__ == "__main__":
    main()

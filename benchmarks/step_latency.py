"""Per-step streaming latency, single thread, batch 1: how users stream today vs edgeseq's exported steps.

Measures, for 2-layer LSTM and GRU models of width 256 (input 64):
  - ``nn.LSTM``/``nn.GRU`` eager, called on one time step at a time with (h, c) carried by hand;
  - edgeseq's StepModule, eager;
  - the ONNX artifact on onnxruntime and the .pte on ExecuTorch-XNNPACK, as bare runtime calls and through
    ``StreamSession.push`` (which adds the manifest checks);
  - the floor: the same matrix products as bare BLAS calls (torch.mm / MKL and numpy / OpenBLAS, into
    preallocated outputs); the faster of the two.
Also: StateSpec bytes vs the analytic size, and peak RSS streaming 100,000 vs 1,000 steps (fresh processes).

Run: python benchmarks/step_latency.py [--quick]   (writes docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from _common import interleaved, stream_peak_rss, write_section  # noqa: E402  (benchmarks/_common.py)

ROOT = Path(__file__).resolve().parent.parent
D_IN, WIDTH, LAYERS = 64, 256, 2


def bench_family(kind: str, n: int, rounds: int, out_dir: Path) -> dict:
    torch.manual_seed(0)
    mod = (nn.LSTM if kind == "lstm" else nn.GRU)(D_IN, WIDTH, num_layers=LAYERS, batch_first=True).eval()
    step = edgeseq.convert(mod)
    res: dict = {"model": f"{kind.upper()} {LAYERS}x{WIDTH} (input {D_IN})", "state_bytes": step.state_spec.bytes_per_stream}
    res["state_bytes_analytic"] = LAYERS * WIDTH * 4 * (2 if kind == "lstm" else 1)

    x = torch.randn(1, D_IN)
    x3 = x[:, None, :]
    hc = (torch.zeros(LAYERS, 1, WIDTH), torch.zeros(LAYERS, 1, WIDTH)) if kind == "lstm" else torch.zeros(LAYERS, 1, WIDTH)
    box = {"s": hc}

    def torch_module_step():
        with torch.no_grad():
            _, box["s"] = mod(x3, box["s"])

    fns = {"nn_module_eager": torch_module_step}

    st = {"s": step.init_state(1)}

    def step_eager():
        with torch.no_grad():
            _, st["s"] = step.step(x, st["s"])

    fns["step_eager"] = step_eager

    # the floor: the same matmuls as bare BLAS calls (one GEMV per fused gate matrix, GRU has two per layer),
    # through PyTorch's BLAS (MKL) and through numpy's (OpenBLAS); the faster of the two is the floor
    mats = []
    for layer in step.layers:
        for lin in [m for m in layer.modules() if isinstance(m, nn.Linear)]:
            w = lin.weight.detach().t().contiguous()
            mats.append((torch.randn(1, w.shape[0]), w, torch.empty(1, w.shape[1])))
    np_mats = [(a.numpy(), w.numpy(), o.numpy().copy()) for a, w, o in mats]

    def floor_torch():
        for a, w, o in mats:
            torch.mm(a, w, out=o)

    def floor_numpy():
        for a, w, o in np_mats:
            np.matmul(a, w, out=o)

    fns["floor_torch"] = floor_torch
    fns["floor_numpy"] = floor_numpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for target in ("onnx", "executorch"):
            art = edgeseq.export(step, out_dir / kind, target=target, steps=1000)
            sess = edgeseq.open(art.path)
            fns[f"{target}_push"] = _push(sess, x.numpy())
            fns[f"{target}_raw"] = _raw(sess.backend, x.numpy(), [s.copy() for s in sess.state.tensors])
            res[f"{target}_parity"] = art.parity["max_abs_error"]
            res[f"{target}_path"] = str(art.path)
    res.update(interleaved(fns, n, rounds))
    res["matmul_floor"] = min(res["floor_torch"], res["floor_numpy"])
    return res


def _push(sess, xn):
    return lambda: sess.push(xn)


def _raw(backend, xn, state):
    box = {"s": state}

    def raw():
        _, box["s"] = backend.run(xn, box["s"])

    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    n, rounds = (200, 3) if args.quick else (500, 9)
    rss_long = 10_000 if args.quick else 100_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("lstm", "gru"):
            print(f"benchmarking {kind} ...", file=sys.stderr)
            r = bench_family(kind, n, rounds, Path(tmp))
            r["rss"] = {t: (stream_peak_rss(r[f"{t}_path"], 1000)[1], stream_peak_rss(r[f"{t}_path"], rss_long)[1])
                        for t in ("onnx", "executorch")}
            rows.append(r)
    md = render(rows, n, rounds, rss_long)
    print(md)
    write_section(args.out, "step_latency", md)


def render(rows: list[dict], n: int, rounds: int, rss_long: int) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Step latency (benchmarks/step_latency.py)",
        "",
        f"Single thread, batch 1; the median over {rounds} rounds of {n} steps, all rows taking turns in each round, on this machine ({os.cpu_count()} cores, {cpu}, "
        f"torch {torch.__version__}, numpy {np.__version__}). µs per step; speed-up = `nn` module eager one step at a "
        "time / this row; × floor = this row / the faster of the two bare-BLAS rows.",
        "",
    ]
    for r in rows:
        base = r["nn_module_eager"]
        lines += [f"### {r['model']}", "", "| how | µs/step | speed-up vs nn eager | × matmul floor |", "|---|---:|---:|---:|"]
        entries = [
            ("`nn` module eager, one step at a time (how users stream today)", "nn_module_eager"),
            ("edgeseq StepModule, eager", "step_eager"),
            ("ONNX Runtime, bare `run`", "onnx_raw"),
            ("ONNX Runtime, `StreamSession.push`", "onnx_push"),
            ("ExecuTorch-XNNPACK, bare `execute`", "executorch_raw"),
            ("ExecuTorch-XNNPACK, `StreamSession.push`", "executorch_push"),
            ("the same matmuls as bare BLAS calls: torch.mm (MKL)", "floor_torch"),
            ("the same matmuls as bare BLAS calls: numpy (OpenBLAS)", "floor_numpy"),
        ]
        for label, key in entries:
            lines.append(f"| {label} | {r[key]:.1f} | {base / r[key]:.2f}× | {r[key] / r['matmul_floor']:.2f} |")
        best = min(("onnx_raw", "executorch_raw"), key=lambda k: r[k])
        lines += [
            "",
            f"- best exported runtime: {best.split('_')[0]} at {r[best]:.1f} µs/step = {base / r[best]:.2f}× faster than the "
            f"`nn` module eager, {r[best] / r['matmul_floor']:.2f}× the matmul floor.",
            f"- export parity over 1,000 steps: ONNX {r['onnx_parity']:.2g}, ExecuTorch {r['executorch_parity']:.2g} max abs error.",
            f"- state: `StateSpec` says {r['state_bytes']:,} bytes per stream; analytic {r['state_bytes_analytic']:,} "
            f"({'equal' if r['state_bytes'] == r['state_bytes_analytic'] else 'DIFFERENT'}).",
        ]
        for t, (short, long) in r["rss"].items():
            lines.append(
                f"- peak RSS streaming on {t}: {short / 2**20:.1f} MiB after 1,000 steps, {long / 2**20:.1f} MiB after "
                f"{rss_long:,} steps ({(long / short - 1) * 100:+.2f}%)."
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

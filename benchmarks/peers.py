"""Against what you would use instead: edgeseq's artifacts beside what a user gets without edgeseq, same weights.

One run, single thread, batch 1, rounds interleaved (``_common.interleaved``: every function takes its turn in
each round, so a noisy neighbour slows all alike), medians. Rows:

- ``nn.LSTM`` / ``nn.GRU`` (2 x 256, input 64; and 1 x 64, input 16): a hand ``torch.onnx.export`` of the module
  on onnxruntime, called with its state fed back (``sess.run`` on numpy arrays, the way its docs show), and eager
  PyTorch stepping the module one frame at a time, against edgeseq's onnx artifact (``StreamSession.push`` and the
  bare runtime call under it) and its ExecuTorch program (the same two);
- a 1 x 8 GRU: the per-call floor, where what ``push`` adds to the bare runtime call shows;
- the GEMV floor of each model: its weight matrices against one input vector each, numpy into preallocated outputs.

Each row ends in a verdict (ahead / behind) of edgeseq's best ``push`` against the best peer on the same runtime.
Rows the issue also asks for that are not here yet (a TCN library's own streaming mode, HF Mamba and mambapy,
continual-inference, a published model's own ONNX, the native runner) are listed under the table.

Run: python benchmarks/peers.py [--quick] [--no-write]   (writes the "peers" section of docs/benchmarks.md)
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from _common import interleaved, single_thread_quiet, standard_args, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = [("lstm", 64, 256, 2), ("gru", 64, 256, 2), ("lstm", 16, 64, 1), ("gru", 16, 64, 1), ("gru", 8, 8, 1)]


class _Stepped(nn.Module):
    """The module on one frame with its state as inputs and outputs: what a user exports by hand."""

    def __init__(self, mod: nn.Module, lstm: bool):
        super().__init__()
        self.mod, self.lstm = mod, lstm

    def forward(self, x, h, c=None):
        if self.lstm:
            y, (h, c) = self.mod(x, (h, c))
            return y, h, c
        y, h = self.mod(x, h)
        return y, h


def hand_onnx(mod: nn.Module, kind: str, d_in: int, width: int, layers: int, path: Path):
    """``torch.onnx.export`` of the module on one frame, state in and out, opened in onnxruntime (one thread)."""
    import onnxruntime as ort

    lstm = kind == "lstm"
    x, h = torch.zeros(1, 1, d_in), torch.zeros(layers, 1, width)
    args = (x, h, torch.zeros(layers, 1, width)) if lstm else (x, h)
    names = ["x", "h", "c"] if lstm else ["x", "h"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Stepped(mod, lstm).eval(), args, str(path), input_names=names,
                          output_names=["y", *(f"{n}_out" for n in names[1:])])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    state = {n: np.zeros((layers, 1, width), np.float32) for n in names[1:]}
    frame = np.random.default_rng(0).standard_normal((1, 1, d_in)).astype(np.float32)
    outs = ["y", *(f"{n}_out" for n in names[1:])]

    def call():
        y, *new = sess.run(outs, {"x": frame, **state})
        for n, v in zip(names[1:], new):
            state[n] = v

    return call


def gemv_floor(mod: nn.Module) -> callable:
    mats = [p.detach().numpy().T.copy() for name, p in mod.named_parameters() if name.startswith("weight")]
    work = [(np.random.default_rng(0).standard_normal((1, w.shape[0])).astype(np.float32), w,
             np.empty((1, w.shape[1]), np.float32)) for w in mats]

    def call():
        for a, w, o in work:
            np.matmul(a, w, out=o)

    return call


def bench(kind: str, d_in: int, width: int, layers: int, n: int, rounds: int, tmp: Path) -> dict:
    torch.manual_seed(0)
    mod = (nn.LSTM if kind == "lstm" else nn.GRU)(d_in, width, num_layers=layers, batch_first=True).eval()
    x = np.random.default_rng(0).standard_normal((1, d_in)).astype(np.float32)
    fns = {"hand_onnx": hand_onnx(mod, kind, d_in, width, layers, tmp / f"hand_{kind}_{width}.onnx")}
    x3 = torch.from_numpy(x)[:, None]
    box = {"s": None}

    def eager():
        with torch.no_grad():
            _, box["s"] = mod(x3, box["s"])

    fns["eager"] = eager
    step = edgeseq.convert(mod)
    for target in ("onnx", "executorch"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = edgeseq.export(step, tmp / f"{kind}_{width}_{target}", target=target, steps=200)
        sess = edgeseq.open(art.path)
        fns[f"{target}_push"] = lambda s=sess: s.push(x)
        be, st = sess.backend, {"s": [t.copy() for t in sess.state.tensors]}

        def bare(be=be, st=st):
            _, st["s"] = be.run(x, st["s"])

        fns[f"{target}_bare"] = bare
    fns["gemv_floor"] = gemv_floor(mod)
    r = interleaved(fns, n, rounds)
    r["model"] = f"{kind.upper()} {layers}x{width} (input {d_in})"
    return r


def main() -> None:
    ap = standard_args(__doc__, "fewer calls per round (a smoke run)")
    args = ap.parse_args()
    single_thread_quiet()
    n, rounds = (100, 5) if args.quick else (1000, 15)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in MODELS:
            r = bench(*spec, n=n, rounds=rounds, tmp=Path(tmp))
            print(r["model"], {k: round(v, 2) for k, v in r.items() if k != "model"}, file=sys.stderr)
            rows.append(r)
    lines = [
        "## Against what you would use instead (`benchmarks/peers.py`)",
        "",
        f"One run, single thread, batch 1; µs per step, medians of {rounds} interleaved rounds of {n} calls. `hand ONNX`: "
        "`torch.onnx.export` of the module on one frame with its state as inputs and outputs, run by onnxruntime "
        "with the state fed back; `eager`: the `nn` module stepped one frame at a time; `push`: edgeseq's "
        "`StreamSession.push` (checks included); `bare`: the runtime call under it; floor: the weight matrices as "
        "numpy GEMVs. Ratios: the peer's time over edgeseq's (> 1: edgeseq is faster).",
        "",
        "| model | hand ONNX | eager | onnx push | onnx bare | push - bare | ET push | ET bare | push - bare | floor "
        "| onnx push vs hand ONNX | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["hand_onnx"] / r["onnx_push"]
        lines.append(
            f"| {r['model']} | {r['hand_onnx']:.1f} | {r['eager']:.1f} | {r['onnx_push']:.1f} | {r['onnx_bare']:.1f} | "
            f"{r['onnx_push'] - r['onnx_bare']:.1f} | {r['executorch_push']:.1f} | {r['executorch_bare']:.1f} | "
            f"{r['executorch_push'] - r['executorch_bare']:.1f} | {r['gemv_floor']:.1f} | {ratio:.2f}x | "
            f"{'ahead' if ratio >= 1.0 else 'behind'} |")
    lines += [
        "",
        "Not measured here yet (issue 29): a TCN library's own streaming mode, the HF Mamba cached step and "
        "`mambapy`, `continual-inference`'s `forward_step`, a published streaming model's own ONNX, the native runner.",
    ]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "peers", md)


if __name__ == "__main__":
    main()

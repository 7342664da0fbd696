"""Users' own models through the graph converter: per-frame cost of the step vs recomputing the model on a window.

Three user-style models, each a plain ``nn.Module`` class converted with ``edgeseq.convert(model, example=x)``:
  - a keyword-spotting model: Conv1d over 40 mel bands (causal F.pad) -> GRU(128) -> Linear;
  - a chomp-style TCN (the idiom of published TCN code: symmetric padding, then the right side sliced off),
    4 levels of two dilated k=3 convolutions, 64 channels, receptive field 61 frames;
  - an audio front-end on raw 10 ms frames (a strided Conv1d over each frame's 160 samples, magnitudes, a mean:
    time folded into the batch) -> LSTM(128) -> Linear.
For each: FLOPs per step vs the model recomputed on a window of frames for every new frame (the receptive field
for the TCN; a 1 s window, 100 frames, for the recurrent models, whose receptive field is unbounded), and µs per
frame of the exported step (ExecuTorch/XNNPACK, onnxruntime), the eager step and the window recompute (eager).

Then the generic step beside the registered converter on the same weights (target: within 1.1x on ExecuTorch,
with the same delegation): a user class wrapping nn.LSTM + Linear vs edgeseq's RNN family
(``RNNModel.from_module``), and a TemporalCNN written as a plain class vs the continual family's ``TemporalCNN``.
Last, the time to convert a 20-layer model. Single thread, batch 1, fp32. Writes its section of docs/benchmarks.md.

Run: python benchmarks/own_models.py [--quick] [--no-write]
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from edgeseq.flops import count_flops, step_flops  # noqa: E402
from _common import interleaved, runtime_step, single_thread_quiet, standard_args, write_section  # noqa: E402  (benchmarks/_common.py)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "graph"))
from user_models import ChompTCN, KeywordNet  # noqa: E402  (the test suite's user-style models, at real sizes here)
WINDOW = 100  # frames a sliding-window deployment of a recurrent model recomputes per frame (1 s of 10 ms frames)


# ------------------------------------------------------------------------------------------------ user models
class AudioFrontLSTM(nn.Module):
    def __init__(self, samples=160, filters=32, hidden=128, classes=12):
        super().__init__()
        self.filters = nn.Conv1d(1, filters, 25, stride=10)
        self.norm = nn.LayerNorm(filters)
        self.lstm = nn.LSTM(filters, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # (B, T, samples)
        B, T, S = x.shape
        z = self.filters(x.reshape(B * T, 1, S)).abs().mean(-1)  # one feature vector per frame
        z, _ = self.lstm(self.norm(z.reshape(B, T, -1)))
        return self.head(z)


class UserLSTM(nn.Module):
    """What a user writes around nn.LSTM: the registered RNN family holds the same layers."""

    def __init__(self, d_in=64, hidden=128, layers=2, out=12):
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, out)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


class UserCellLoop(nn.Module):
    """What a user writes by hand: an nn.LSTMCell stepped in a Python loop over time, a Linear head (the graph
    converter rolls the loop into one step, edgeseq.graph.loops)."""

    def __init__(self, d_in=64, hidden=128, out=12):
        super().__init__()
        self.hidden = hidden
        self.cell = nn.LSTMCell(d_in, hidden)
        self.head = nn.Linear(hidden, out)

    def forward(self, x):  # (B, T, d_in)
        h = c = x.new_zeros(x.shape[0], self.hidden)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outs.append(h)
        return self.head(torch.stack(outs, 1))

    def as_lstm(self) -> nn.LSTM:
        """The same weights as a one-layer nn.LSTM (for the registered RNN family)."""
        lstm = nn.LSTM(self.cell.input_size, self.hidden, 1, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l0").copy_(getattr(self.cell, name))
        return lstm


class PlainTCN(nn.Module):
    """edgeseq's TemporalCNN (causal, residual levels) written as a user would, weights copied from one."""

    def __init__(self, tcn):
        super().__init__()
        self.convs = nn.ModuleList()
        self.residual = []
        for level in tcn.net[:-1]:
            body = level.body if hasattr(level, "body") else level
            self.convs.append(body[0][1])
            self.residual.append(hasattr(level, "body"))
        self.head = tcn.net[-1]

    def forward(self, x):  # (B, T, C)
        z = x.transpose(1, 2)
        for conv, res in zip(self.convs, self.residual):
            y = torch.relu(conv(F.pad(z, ((conv.kernel_size[0] - 1) * conv.dilation[0], 0))))
            z = z + y if res else y
        return self.head(z).transpose(1, 2)


def _cold_convert_seconds() -> float:
    """The 20-layer conversion timed as the first thing a fresh Python process does (imports excluded)."""
    import subprocess

    code = ("import sys, time, torch; sys.path.insert(0, %r); torch.set_num_threads(1); import edgeseq; "
            "from own_models import Deep; m = Deep().eval(); x = torch.randn(1, 32, 64); t = time.perf_counter(); "
            "edgeseq.convert(m, example=x, time_axis=-1); print(time.perf_counter() - t)") % str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


class Deep(nn.Module):
    """20 layers: 10 residual blocks of two causal convolutions."""

    def __init__(self, ch=32, blocks=10):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, 3, dilation=2 ** (i % 4)) for i in range(2 * blocks))

    def forward(self, x):  # (B, C, T)
        for i in range(0, len(self.convs), 2):
            a, b = self.convs[i], self.convs[i + 1]
            y = torch.relu(a(F.pad(x, (2 * a.dilation[0], 0))))
            x = x + b(F.pad(y, (2 * b.dilation[0], 0)))
        return x


# ------------------------------------------------------------------------------------------------ measuring
def _ms_exports(step, out: Path, name: str) -> dict:
    arts = {t: edgeseq.export(step, out / name, target=t, steps=300) for t in ("executorch", "onnx")}
    return arts


def _calls(step, arts: dict) -> dict:
    frame = torch.randn(1, step.d_in)
    st = {"s": step.init_state(1)}

    def eager():
        with torch.no_grad():
            _, st["s"] = step.step(frame, st["s"])

    fns = {"eager": eager}
    fns.update({target: runtime_step(art, frame.numpy()) for target, art in arts.items()})
    return fns


def bench_model(name: str, model: nn.Module, example: torch.Tensor, time_axis: int, window: int, out: Path,
                n: int, rounds: int) -> dict:
    model.eval()
    step = edgeseq.convert(model, example=example, time_axis=time_axis)
    shape = list(example.shape)
    shape[0], shape[time_axis] = 1, 2000
    parity = edgeseq.check_parity(model, step, torch.randn(shape)).max_abs_error
    shape[time_axis] = window
    win = torch.randn(shape)
    arts = _ms_exports(step, out, name)
    fns = _calls(step, arts)

    def recompute():
        with torch.no_grad():
            model(win)

    fns["window"] = recompute
    g = arts["executorch"].manifest["graph"]
    return {"name": name, "window": window, "rf": step.state_spec.receptive_field, "parity": parity,
            "export_parity": max(a.parity["max_abs_error"] for a in arts.values()),
            "flops_step": step_flops(step), "flops_window": count_flops(model, win),
            "params_k": sum(p.numel() for p in model.parameters()) / 1e3,
            "partitions": g["partitions"], "outside": g["non_delegated_ops"],
            "us": interleaved(fns, n=n, rounds=rounds, warmup=max(5, n))}


def bench_pair(name: str, user: nn.Module, registered: nn.Module, example: torch.Tensor, out: Path,
               n: int, rounds: int) -> dict:
    generic = edgeseq.convert(user.eval(), example=example)
    reg = edgeseq.convert(registered.eval())
    assert type(generic).__name__ == "GraphStep" and type(reg).__name__ != "GraphStep"
    x = torch.randn(1, 1000, example.shape[-1])
    with torch.no_grad():
        same = float((user(x) - registered.forward_steps(x) if hasattr(registered, "forward_steps")
                      else user(x) - registered(x)).abs().max())
    arts = {"generic": edgeseq.export(generic, out / f"{name}-generic", target="executorch", steps=300),
            "registered": edgeseq.export(reg, out / f"{name}-registered", target="executorch", steps=300)}
    x_np = torch.randn(1, generic.d_in).numpy()
    fns = {k: runtime_step(art, x_np) for k, art in arts.items()}
    us = interleaved(fns, n=n, rounds=rounds, warmup=max(5, n))
    graphs = {k: a.manifest["graph"] for k, a in arts.items()}
    return {"name": name, "us": us, "ratio": us["generic"] / us["registered"], "same_outputs": same,
            "delegation": {k: (g["partitions"], g["delegated_ops"], g["non_delegated_ops"]) for k, g in graphs.items()},
            "flops": {"generic": step_flops(generic), "registered": step_flops(reg)}}


def render(rows: list[dict], pairs: list[dict], deep: dict, quick: bool) -> str:
    import executorch
    import onnxruntime

    et = getattr(executorch, "__version__", "1.5.x")
    lines = [
        "## Own models: the graph converter's steps (`benchmarks/own_models.py`)",
        "",
        f"Single thread, batch 1, fp32, random-init weights. {platform.machine()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, executorch {et}." + (" Quick run (fewer rounds)." if quick else ""),
        "",
        "Users' own classes converted with `edgeseq.convert(model, example=x)`. *window* = the model recomputed on the "
        "last W frames for every new frame (W = the receptive field of the TCN; 100 frames, 1 s, for the recurrent "
        "models). FLOPs counted from the graph (`edgeseq.flops`). µs per frame, median of interleaved rounds. *parity* "
        "= the step against the model over 2,000 frames; *export* = the exported artifacts against the eager step.",
        "",
        "| model | params | W | FLOPs / step | FLOPs / window | ratio | ET µs | ORT µs | eager step µs | window eager µs | "
        "window / ET | ET partitions (ops outside) | parity | export |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        us = r["us"]
        lines.append(
            f"| {r['name']} | {r['params_k']:.0f} k | {r['window']} | {r['flops_step'] / 1e3:.1f} k | "
            f"{r['flops_window'] / 1e3:.1f} k | **{r['flops_window'] / r['flops_step']:.1f}x** | {us['executorch']:.1f} | "
            f"{us['onnx']:.1f} | {us['eager']:.0f} | {us['window']:.0f} | **{us['window'] / us['executorch']:.0f}x** | "
            f"{r['partitions']} ({r['outside']}) | {r['parity']:.1e} | {r['export_parity']:.1e} |")
    lines += [
        "",
        "Generic step vs the registered converter on the same weights, both exported to ExecuTorch (target: generic "
        "within 1.1x, same delegation). Delegation = (partitions, ops delegated, ops outside).",
        "",
        "| model | generic µs | registered µs | generic / registered | delegation generic | delegation registered | "
        "FLOPs / step generic | registered | max abs diff of the models |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for p in pairs:
        d = p["delegation"]
        lines.append(f"| {p['name']} | {p['us']['generic']:.1f} | {p['us']['registered']:.1f} | **{p['ratio']:.2f}x** | "
                     f"{d['generic']} | {d['registered']} | {p['flops']['generic']:,} | {p['flops']['registered']:,} | "
                     f"{p['same_outputs']:.1e} |")
    lines += ["", f"Converting a 20-layer model (10 residual blocks of two causal Conv1d, 32 channels; trace, time-axis "
                  f"analysis, locality checks, rewrite, and the proof against the model over 256 frames): "
                  f"**{deep['seconds']:.2f} s** (target < 1 s), "
                  f"{deep['ops']} stream ops, parity over 2,000 frames {deep['parity']:.1e}. The same conversion as the "
                  f"first thing a fresh process does: {deep['cold']:.2f} s (torch.export's one-time start-up, about "
                  f"{max(0.0, deep['cold'] - deep['seconds']):.1f} s, is the difference)."]
    return "\n".join(lines)


def main() -> None:
    args = standard_args(__doc__, "fewer rounds (a smoke run)").parse_args()
    single_thread_quiet()
    n, rounds = (50, 3) if args.quick else (300, 9)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [
            bench_model("keyword: Conv1d + GRU", KeywordNet(c=40, ch=64, h=128, n=12), torch.randn(1, 40, 40), 1, WINDOW, out, n, rounds),
            bench_model("chomp TCN (4 levels)", ChompTCN(c_in=16, width=64, levels=4, c_out=8), torch.randn(1, 16, 80),
                        -1, 61, out, n, rounds),
            bench_model("audio front-end + LSTM", AudioFrontLSTM(), torch.randn(1, 40, 160), 1, WINDOW, out, n, rounds),
        ]
        lstm = UserLSTM()
        from edgeseq.models.rnn import RNNModel

        tcn = edgeseq.build("continual", d_in=16, d_out=8, channels=(64, 64, 64, 64), kernel_size=3, padding="causal",
                            residual=True, pool="none", task="sequence").eval()
        pairs = [
            bench_pair("user LSTM 2x128 + Linear vs RNN family", lstm, RNNModel.from_module(lstm.lstm, lstm.head),
                       torch.randn(1, 20, 64), out, n, rounds),
            bench_pair("plain-class TCN vs TemporalCNN (continual family)", PlainTCN(tcn), tcn, torch.randn(1, 40, 16),
                       out, n, rounds),
        ]
        loop = UserCellLoop().eval()
        pairs.append(bench_pair("LSTMCell loop 1x128 + Linear vs RNN family", loop,
                                RNNModel.from_module(loop.as_lstm(), loop.head), torch.randn(1, 20, 64), out, n, rounds))
    deep_model = Deep().eval()
    t0 = time.perf_counter()
    deep_step = edgeseq.convert(deep_model, example=torch.randn(1, 32, 64), time_axis=-1)
    seconds = time.perf_counter() - t0
    deep = {"seconds": seconds, "ops": len(deep_step.names), "cold": _cold_convert_seconds(),
            "parity": edgeseq.check_parity(deep_model, deep_step, torch.randn(1, 32, 2000)).max_abs_error}
    md = render(rows, pairs, deep, args.quick)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "own-models", md)


if __name__ == "__main__":
    main()

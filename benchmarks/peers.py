"""Against what you would use instead: edgeseq's artifacts beside what a user gets without edgeseq, same weights.

One run, single thread, batch 1, rounds interleaved (``_common.interleaved``: every function takes its turn in
each round, so a noisy neighbour slows all alike), medians. Rows:

- ``nn.LSTM`` / ``nn.GRU`` (2 x 256, input 64; 1 x 64, input 16; a 1 x 8 GRU, the per-call floor): a hand
  ``torch.onnx.export`` of the module (ONNX's fused LSTM/GRU op) on onnxruntime called as its docs show
  (``sess.run`` with the state fed back), and eager PyTorch stepping the module one frame at a time;
- pytorch-tcn's ``TCN`` (4 x 64 channels, kernel 3, dilations 1-8, skip connections) against its own streaming mode
  (``inference`` with its internal buffers);
- Mamba 256 x 4: the Hugging Face ``MambaForCausalLM`` cached step (token in, logits out) and ``mambapy``'s
  ``Mamba.step``, each against the same model imported into edgeseq; the HF model also with int8-dynamic weights on
  ExecuTorch, at the scheme's own tolerance: its free-running stream parts from the eager quantized step at int8
  roundings (the parity column), and export proves it step by step instead (docs/compression.md; the column says
  how many steps one rounding taken the other way explains); and both exported with ``custom_ops=True`` (each
  layer's scan update as edgeseq's own ExecuTorch kernel, docs/custom-ops.md); a Mamba-2 256 x 4 (HF
  ``Mamba2ForCausalLM``, state 64, 8 heads of 64) the same way, standard and with ``custom_ops=True``;
- a ``continual-inference`` network (4 x ``co.Conv1d`` 64 channels, kernel 3): its ``forward_step`` against the same
  network converted;
- Silero VAD (the ``silero-vad`` package; examples/vad_stream.py): the authors' own stateful ONNX on onnxruntime,
  stepped by their ``OnnxWrapper`` and by a bare ``sess.run`` with the context kept in numpy, against the model
  written in PyTorch with their weights, converted by edgeseq.

For every model, edgeseq's rows: ``push`` on onnxruntime, on ExecuTorch's Python bindings and on runtime ``native``
(the same ExecuTorch program stepped by edgeseq's C runtime from Python, runtimes/inproc.py) (``StreamSession.push``,
every check included), the runtime call under each push alone (``bare``), the C runtime's own timing of ``es_push``
and of a bare ``Module::execute`` (the runner's ``--bench``, not interleaved), and the GEMV floor: the
model's weight matrices against one input vector each, numpy (OpenBLAS) into preallocated outputs, what any fp32
step must at least spend. Each row ends in a verdict: edgeseq's onnx push against the best peer on onnxruntime
(where the peer is an ONNX file), else edgeseq's best push against the best peer.

Run: python benchmarks/peers.py [--quick] [--no-write] [--only NAME,...]   (writes the "peers" section of
docs/benchmarks.md)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from _common import (bound_call, gemv_floor, interleaved, linear_mats, native_bench, native_us,  # noqa: E402
                     single_thread_quiet, standard_args, write_section)

ROOT = Path(__file__).resolve().parent.parent
RNNS = [("lstm", 64, 256, 2), ("gru", 64, 256, 2), ("lstm", 16, 64, 1), ("gru", 16, 64, 1), ("gru", 8, 8, 1)]


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


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def hand_onnx(mod: nn.Module, kind: str, d_in: int, width: int, layers: int, path: Path):
    """``torch.onnx.export`` of the module on one frame, state in and out (the TorchScript exporter, which writes
    ONNX's fused LSTM/GRU op), stepped with ``sess.run`` and the state fed back."""
    lstm = kind == "lstm"
    x, h = torch.zeros(1, 1, d_in), torch.zeros(layers, 1, width)
    args = (x, h, torch.zeros(layers, 1, width)) if lstm else (x, h)
    names = ["x", "h", "c"] if lstm else ["x", "h"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Stepped(mod, lstm).eval(), args, str(path), input_names=names, dynamo=False,
                          output_names=["y", *(f"{n}_out" for n in names[1:])])
    sess = _ort_session(path)
    state = {n: np.zeros((layers, 1, width), np.float32) for n in names[1:]}
    frame = np.random.default_rng(0).standard_normal((1, 1, d_in)).astype(np.float32)
    outs = ["y", *(f"{n}_out" for n in names[1:])]

    def call():
        y, *new = sess.run(outs, {"x": frame, **state})
        for n, v in zip(names[1:], new):
            state[n] = v

    return call


def weight_mats(module: nn.Module) -> list[np.ndarray]:
    """The matrices a step of ``module`` multiplies by: linear weights, recurrent weights, and each temporal
    convolution as (out, in x kernel) (all its taps meet one step's window)."""
    mats = []
    for name, p in module.named_parameters():
        if p.dim() < 2 or "embed" in name:
            continue
        w = p.detach().reshape(p.shape[0], -1).numpy().astype(np.float32)
        mats.append(np.ascontiguousarray(w))
    return mats


def edgeseq_rows(step, model, frame, out: Path, name: str, native_build, n: int, rounds: int,
                 export_kwargs: dict | None = None, targets=("onnx", "executorch")) -> tuple[dict, dict, dict]:
    """edgeseq's functions for ``step``: push and the bare bound call on onnxruntime and ExecuTorch; the native
    runner's (execute, es_push) µs; and what the exports recorded (parity, the onnx form of recurrent cells)."""
    fns, info = {}, {}
    for target in targets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = edgeseq.export(step, out / f"{name}_{target}", target=target, steps=300, model=model,
                                 **(export_kwargs or {}))
        sess = edgeseq.open(art.path)
        x = int(frame[0, 0]) if frame.dtype == np.int64 else frame  # a token id as an app pushes it: an int
        fns[f"{target}_push"] = functools.partial(sess.push, x)  # as an app calls it: no wrapper frame
        fns[f"{target}_bare"] = bound_call(sess, frame)
        info[f"{target}_parity"] = (art.manifest.get("model_parity") or art.manifest["parity"])["max_scaled_error"]
        if "stepwise" in art.manifest["parity"]:  # the free run parted at a rounding: each step proven instead
            info[f"{target}_stepwise"] = art.manifest["parity"]["stepwise"]
        info[f"{target}_bound"] = sess.bound
        if target == "onnx":
            info["rnn_ops"] = art.manifest["runtime"].get("rnn_ops")
        else:
            info["pte"] = art.path
            info["partitions"] = art.manifest["graph"].get("partitions")
            if native_build is not None:  # the same program from Python through the C runtime (runtime "native")
                ns = edgeseq.open(art.path, runtime="native")
                fns["native_push"] = functools.partial(ns.push, x)
                fns["native_bare"] = functools.partial(ns._es_push, *ns._args)  # the one C call under push
                info["native_bound"] = True
    native = native_us(native_build, info["pte"], max(200, n * 2), 3) if native_build is not None else None
    return fns, info, native


def rnn_row(kind, d_in, width, layers, tmp: Path, b, n, rounds) -> dict:
    torch.manual_seed(0)
    mod = (nn.LSTM if kind == "lstm" else nn.GRU)(d_in, width, num_layers=layers, batch_first=True).eval()
    x = np.random.default_rng(0).standard_normal((1, d_in)).astype(np.float32)
    peers = {"hand ONNX (`sess.run`)": hand_onnx(mod, kind, d_in, width, layers, tmp / f"hand_{kind}_{width}.onnx")}
    x3, box = torch.from_numpy(x)[:, None], {"s": None}

    def eager():
        with torch.no_grad():
            _, box["s"] = mod(x3, box["s"])

    peers["eager `nn` module"] = eager
    ours, info, native = edgeseq_rows(edgeseq.convert(mod), None, x, tmp, f"{kind}{width}x{layers}", b, n, rounds)
    name = f"`nn.{kind.upper()}` {layers}x{width} (input {d_in})"
    return _row(name, peers, ours, info, native, weight_mats(mod), n, rounds, onnx_peer="hand ONNX (`sess.run`)")


def tcn_row(tmp: Path, b, n, rounds) -> dict:
    from pytorch_tcn import TCN

    torch.manual_seed(0)
    tcn = TCN(num_inputs=64, num_channels=[64] * 4, kernel_size=3, dilations=[1, 2, 4, 8], causal=True,
              use_skip_connections=True, output_projection=16).eval()
    xt = torch.randn(1, 64, 1)
    tcn.reset_buffers()

    def lib_stream():
        with torch.no_grad():
            tcn.inference(xt)

    step = edgeseq.convert(tcn, example=torch.randn(1, 64, 64), time_axis=-1)
    ours, info, native = edgeseq_rows(step, tcn, xt[..., 0].numpy(), tmp, "tcn", b, n, rounds)
    return _row("pytorch-tcn `TCN` 4x64, kernel 3, dilations 1-8", {"its `inference` (streaming buffers)": lib_stream},
                ours, info, native, weight_mats(tcn), n, rounds)


def mamba_row(tmp: Path, b, n, rounds) -> list[dict]:
    from mambapy.mamba import Mamba as MambapyMamba, MambaConfig as MambapyConfig
    from transformers import MambaConfig as HfConfig, MambaForCausalLM

    torch.manual_seed(0)
    width, layers, d_state = 256, 4, 16
    hf = MambaForCausalLM(HfConfig(vocab_size=1024, hidden_size=width, state_size=d_state,
                                   num_hidden_layers=layers)).eval()
    mp = MambapyMamba(MambapyConfig(d_model=width, n_layers=layers, d_state=d_state)).eval()
    tok = torch.tensor([[7]])
    with torch.no_grad():
        box = {"cache": hf(tok, use_cache=True).cache}

    def hf_step():
        with torch.no_grad():
            box["cache"] = hf(tok, cache=box["cache"], use_cache=True).cache

    xh = torch.randn(1, width)
    mp_box = {"c": [(torch.zeros(1, 2 * width, d_state), torch.zeros(1, 2 * width, 3)) for _ in range(layers)]}

    def mp_step():
        with torch.no_grad():
            _, mp_box["c"] = mp.step(xh, mp_box["c"])

    rows = []
    step_hf = edgeseq.convert(edgeseq.from_huggingface(hf))
    ours, info, native = edgeseq_rows(step_hf, None, np.array([[7]], np.int64), tmp, "mamba_hf", b, n, rounds)
    rows.append(_row(f"Mamba {width}x{layers} LM (HF `MambaForCausalLM`, vocab 1024)", {"HF cached step": hf_step},
                     ours, info, native, linear_mats(step_hf), n, rounds))
    # the same program with edgeseq's own scan-update kernel (export custom_ops=True; docs/custom-ops.md)
    ours, info, native = edgeseq_rows(step_hf, None, np.array([[7]], np.int64), tmp, "mamba_hf_ops", b, n, rounds,
                                      export_kwargs={"custom_ops": True}, targets=("executorch",))
    rows.append(_row(f"Mamba {width}x{layers} LM, `custom_ops=True` (ExecuTorch only)", {"HF cached step": hf_step},
                     ours, info, native, linear_mats(step_hf), n, rounds))
    standard_pte = rows[-2]["info"]["pte"]
    if b is not None:
        rows[-1]["ab"] = custom_ops_ab(b, standard_pte, info["pte"])
    # int8-dynamic weights (ExecuTorch's scheme), at its own tolerance (each step proven where the free run parts)
    from edgeseq.quant import Int8DynamicConfig, quantize_

    step_q = quantize_(edgeseq.convert(edgeseq.from_huggingface(hf)), Int8DynamicConfig(), target="executorch")
    ours, info, native = edgeseq_rows(step_q, None, np.array([[7]], np.int64), tmp, "mamba_hf_int8", b, n, rounds,
                                      targets=("executorch",))
    rows.append(_row(f"Mamba {width}x{layers} LM, int8-dynamic weights (ExecuTorch only)", {"HF cached step": hf_step},
                     ours, info, native, linear_mats(step_hf), n, rounds))
    ours, info, native = edgeseq_rows(step_q, None, np.array([[7]], np.int64), tmp, "mamba_hf_int8_ops", b, n, rounds,
                                      export_kwargs={"custom_ops": True}, targets=("executorch",))
    rows.append(_row(f"Mamba {width}x{layers} LM, int8-dynamic weights, `custom_ops=True` (ExecuTorch only)",
                     {"HF cached step": hf_step}, ours, info, native, linear_mats(step_hf), n, rounds))
    if b is not None:
        rows[-1]["ab"] = custom_ops_ab(b, rows[-2]["info"]["pte"], info["pte"])
    # Mamba-2 (SSD), HF's implementation: its cached step against the imported model, standard and custom_ops
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    hf2 = Mamba2ForCausalLM(Mamba2Config(vocab_size=1024, hidden_size=width, state_size=64, num_hidden_layers=layers,
                                         head_dim=64, num_heads=2 * width // 64, n_groups=1, expand=2)).eval()
    with torch.no_grad():
        box2 = {"cache": hf2(tok, use_cache=True).cache}

    def hf2_step():
        with torch.no_grad():
            box2["cache"] = hf2(tok, cache=box2["cache"], use_cache=True).cache

    step_hf2 = edgeseq.convert(edgeseq.from_huggingface(hf2))
    name2 = f"Mamba-2 {width}x{layers} LM (HF `Mamba2ForCausalLM`, state 64, {2 * width // 64} heads of 64)"
    ours, info, native = edgeseq_rows(step_hf2, None, np.array([[7]], np.int64), tmp, "mamba2_hf", b, n, rounds)
    rows.append(_row(name2, {"HF cached step": hf2_step}, ours, info, native, linear_mats(step_hf2), n, rounds))
    ours, info, native = edgeseq_rows(step_hf2, None, np.array([[7]], np.int64), tmp, "mamba2_hf_ops", b, n, rounds,
                                      export_kwargs={"custom_ops": True}, targets=("executorch",))
    rows.append(_row(f"Mamba-2 {width}x{layers} LM, `custom_ops=True` (ExecuTorch only)", {"HF cached step": hf2_step},
                     ours, info, native, linear_mats(step_hf2), n, rounds))
    if b is not None:
        rows[-1]["ab"] = custom_ops_ab(b, rows[-2]["info"]["pte"], info["pte"])
    step_mp = edgeseq.convert(edgeseq.from_mambapy(mp))
    ours, info, native = edgeseq_rows(step_mp, None, xh.numpy(), tmp, "mamba_mp", b, n, rounds)
    rows.append(_row(f"Mamba {width}x{layers} (`mambapy` `Mamba`)", {"`mambapy` `step`": mp_step}, ours, info, native,
                     linear_mats(step_mp), n, rounds))
    return rows


def custom_ops_ab(b, standard: Path, custom: Path, rounds: int = 9, steps: int = 2000) -> dict:
    """The C runner's bare ``Module::execute`` of the two programs of one model (standard operators, and
    ``custom_ops=True``), taking turns over ``rounds`` rounds of ``steps`` steps each: the medians (µs), with the
    GEMV floor timed between rounds."""
    times: dict[str, list[float]] = {"standard": [], "custom_ops": []}
    for _ in range(rounds):
        for name, path in (("standard", standard), ("custom_ops", custom)):
            times[name].append(native_bench(b, path, steps, 1)["execute_us"])
    return {k: statistics.median(v) for k, v in times.items()} | {"rounds": rounds, "steps": steps}


def _installed(name: str):
    """Import the installed package ``name``, not the benchmark script of that name beside this one."""
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


def continual_row(tmp: Path, b, n, rounds) -> dict:
    co = _installed("continual")

    torch.manual_seed(0)
    net = co.Sequential(*[m for _ in range(4) for m in (co.Conv1d(64, 64, 3), nn.ReLU())], co.Conv1d(64, 16, 1)).eval()
    x1 = torch.randn(1, 64)
    with torch.no_grad():
        for _ in range(net.delay + 1):
            net.forward_step(x1)

    def co_step():
        with torch.no_grad():
            net.forward_step(x1)

    step = edgeseq.convert(net)
    ours, info, native = edgeseq_rows(step, None, x1.numpy(), tmp, "co", b, n, rounds)
    return _row("`continual-inference` `co.Conv1d` 4x64, kernel 3", {"its `forward_step`": co_step}, ours, info,
                native, weight_mats(net), n, rounds)


def vad_row(tmp: Path, b, n, rounds) -> dict:
    spec = importlib.util.spec_from_file_location("vad_stream", ROOT / "examples" / "vad_stream.py")
    vad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vad)
    threads = torch.get_num_threads()
    from silero_vad.utils_vad import OnnxWrapper  # (its package sets one torch thread: as here anyway)

    torch.set_num_threads(threads)
    model = vad.load()
    chunk = vad.audio(4)[1:2]  # (1, 512)
    theirs = vad.AuthorsOnnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = OnnxWrapper(str(vad.data_file("silero_vad.onnx")), force_onnx_cpu=True)
    chunk_t = torch.from_numpy(chunk)
    peers = {"authors' ONNX, their `OnnxWrapper`": lambda: wrapper(chunk_t, vad.SR),
             "authors' ONNX, bare `sess.run`": lambda: theirs(chunk)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = edgeseq.convert(model, example=torch.from_numpy(vad.audio(16, seed=1))[None])
    ours, info, native = edgeseq_rows(step, model, chunk, tmp, "vad", b, n, rounds)
    return _row("Silero VAD 16 kHz, 512-sample chunks (`silero-vad` 6.2)", peers, ours, info, native,
                weight_mats(model), n, rounds, onnx_peer="authors' ONNX, bare `sess.run`")


def _row(name, peers, ours, info, native, mats, n, rounds, onnx_peer=None) -> dict:
    fns = {**{f"peer:{k}": v for k, v in peers.items()}, **ours, "floor": gemv_floor(mats)}
    us = interleaved(fns, n, rounds, warmup=max(20, n // 5), turn_warmup=3)
    r = {"model": name, "peers": {k: us[f"peer:{k}"] for k in peers}, "us": us, "info": info, "native": native,
         "onnx_peer": onnx_peer}
    print(name, {k: round(v, 1) for k, v in us.items()}, native, file=sys.stderr)
    return r


def verdict(ratio: float) -> str:
    """ahead / behind, or even where the two are within 2% (run-to-run noise on this shared machine is larger)."""
    return "ahead" if ratio >= 1.02 else "behind" if ratio <= 0.98 else "even (within 2%)"


def render(rows: list[dict], n: int, rounds: int, quick: bool) -> str:
    import executorch
    import onnxruntime

    lines = [
        "## Against what you would use instead (`benchmarks/peers.py`)",
        "",
        f"One run on {platform.machine()} ({os.cpu_count()} cores), single thread, batch 1, fp32 (but the int8-dynamic "
        f"rows); µs per step, medians of {rounds} interleaved rounds of {n} calls ({max(20, n // 20)} for the Mamba rows; the native runner: its "
        f"own `--bench`, median of 3 runs); each turn opens with 3 untimed calls, so that no function pays for the "
        f"cache the one before it left cold. "
        f"onnxruntime {onnxruntime.__version__}, ExecuTorch {getattr(executorch, '__version__', '1.5.x')}, torch "
        f"{torch.__version__}." + (" Quick run (`--quick`)." if quick else ""),
        "",
        "*push*: `StreamSession.push`, every check included; *bare*: the runtime call under it alone; *ET*: the "
        "ExecuTorch program on ExecuTorch's Python bindings (runtime `executorch`); *native*: the same program from "
        "Python through edgeseq's C runtime (runtime `native`: one `ctypes` call of `es_push` per push); *C*: that "
        "runtime's own timing in C, `es_push` (bare `Module::execute` in brackets); *floor*: the weight matrices as "
        "numpy GEMVs; */ floor*: the bindings' bare call, and the C `execute`, over the floor. *ratio*: the peer's "
        "time over edgeseq's (> 1: edgeseq is faster): the onnx push against the peer's own ONNX file on the same "
        "runtime where the peer is one, else edgeseq's best push against the best peer; *even*: within 2% either way.",
        "",
        "| model | what you would use instead: µs | onnx push (bare) | ET push (bare) | native push (bare) | C | floor "
        "| / floor: ET; C | ratio | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def pair(u, target):
        return "-" if f"{target}_push" not in u else f"{u[f'{target}_push']:.1f} ({u[f'{target}_bare']:.1f})"

    for r in rows:
        u, p = r["us"], r["peers"]
        peer_txt = "; ".join(f"{k}: {v:.1f}" for k, v in p.items())
        if r["onnx_peer"]:
            ratio, against = p[r["onnx_peer"]] / u["onnx_push"], "onnx push vs " + r["onnx_peer"].split(",")[0]
        else:
            best = min(u[f"{t}_push"] for t in ("onnx", "executorch", "native") if f"{t}_push" in u)
            ratio, against = min(p.values()) / best, "best push vs best peer"
        nat = f"{r['native'][1]:.1f} ({r['native'][0]:.1f})" if r["native"] else "-"
        c_floor = f"; {r['native'][0] / u['floor']:.2f}x" if r["native"] else ""
        lines.append(
            f"| {r['model']} | {peer_txt} | {pair(u, 'onnx')} | {pair(u, 'executorch')} | {pair(u, 'native')} | {nat} "
            f"| {u['floor']:.1f} | {u['executorch_bare'] / u['floor']:.2f}x{c_floor} | **{ratio:.2f}x** ({against}) | "
            f"{verdict(ratio)} |")
    for r in rows:
        if r.get("ab"):
            a = r["ab"]
            lines += ["", f"{r['model']}: the C runner's bare `Module::execute`, the standard program and this one "
                          f"taking turns ({a['rounds']} rounds of {a['steps']} steps, medians): {a['standard']:.1f} µs "
                          f"-> {a['custom_ops']:.1f} µs ({a['custom_ops'] / a['standard'] - 1:+.1%}; over the row's "
                          f"floor: {a['standard'] / r['us']['floor']:.2f}x -> {a['custom_ops'] / r['us']['floor']:.2f}x)."]
    lines += ["", "What push adds to the bare bound call (µs; the same run), and how the onnx artifact writes its "
                  "recurrent cells (decided by timing at export, `runtime.rnn_ops` in its manifest):", "",
              "| model | onnx push - bare | ET push - bare | native push - bare | onnx recurrent cells (fused / gates µs "
              "at export) | parity: onnx / ET (max scaled error, vs the model or its step) |",
              "|---|---:|---:|---:|---|---|"]
    for r in rows:
        u, i = r["us"], r["info"]
        ops = i.get("rnn_ops")
        ops_txt = (f"{ops['form']} ({ops['us_per_step']['fused']:.1f} / {ops['us_per_step']['gates']:.1f})"
                   if ops and "us_per_step" in ops else "no LSTM/GRU/RNN cells" if "onnx_push" in u else "-")
        diff = {t: (f"{u[f'{t}_push'] - u[f'{t}_bare']:.1f}" + ("" if i[f"{t}_bound"] else " (not bound)")
                    if f"{t}_push" in u else "-") for t in ("onnx", "executorch", "native")}
        par = " / ".join(f"{i[f'{t}_parity']:.1e}" + _stepwise(i.get(f"{t}_stepwise")) if f"{t}_parity" in i else "-"
                         for t in ("onnx", "executorch"))
        lines.append(f"| {r['model']} | {diff['onnx']} | {diff['executorch']} | {diff['native']} | {ops_txt} | {par} |")
    return "\n".join(lines)


def _stepwise(sw: dict | None) -> str:
    if not sw:
        return ""
    return (f" (free run; from the eager state every step within {sw['tolerance']:g}, "
            f"{sw['explained_by_boundary_rounding']} of {sw['steps']} once a rounding is taken the other way)")


BUILDERS = {
    "rnn": lambda tmp, b, n, rounds: [rnn_row(*spec, tmp, b, n, rounds) for spec in RNNS],
    "tcn": lambda tmp, b, n, rounds: [tcn_row(tmp, b, n, rounds)],
    "mamba": lambda tmp, b, n, rounds: mamba_row(tmp, b, n, rounds),
    "continual": lambda tmp, b, n, rounds: [continual_row(tmp, b, n, rounds)],
    "vad": lambda tmp, b, n, rounds: [vad_row(tmp, b, n, rounds)],
}


def main() -> None:
    ap = standard_args(__doc__, "fewer calls per round (a smoke run)")
    ap.add_argument("--only", help=f"comma-separated row groups of {', '.join(BUILDERS)} (default: all)")
    ap.add_argument("--no-native", action="store_true", help="leave the native runner out (no C++ build)")
    args = ap.parse_args()
    single_thread_quiet()
    n, rounds = (100, 5) if args.quick else (1000, 15)
    b = None
    if not args.no_native:
        from edgeseq.runtimes import native

        b = native.build("x86_64")
    groups = args.only.split(",") if args.only else list(BUILDERS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in groups:
            rows += BUILDERS[g](Path(tmp), b, n if g != "mamba" else max(20, n // 20), rounds)
    md = render(rows, n, rounds, args.quick)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "peers", md)


if __name__ == "__main__":
    main()

"""Continual networks: per-frame cost of the exported continual step vs recomputing the offline window.

Two window models, both converted with ``edgeseq.convert(OfflineModel(net, frame_shape, window=W, ...))``:
  - an X3D-like clip classifier (3D CNN: spatial stem, temporal depthwise stem, bottleneck blocks with 3x3x3
    depthwise convolutions, global pool over the clip), without temporal padding so that the stream equals the
    clip model on every window;
  - a Transformer encoder window model (Linear -> one TransformerEncoderLayer -> Linear over the last W frames),
    streamed with single-output attention.
For each: FLOPs per step vs per recomputed window (counted from the graph, edgeseq.flops), and µs per frame of
our exported step (ExecuTorch/XNNPACK, onnxruntime) and eager step, the offline model recomputed on the window
every frame (eager and exported to onnxruntime), and continual-inference's eager ``forward_step`` on the same
weights (its outputs are checked equal to ours first). Single thread, batch 1, fp32. Writes its section of
docs/benchmarks.md.

Run: python benchmarks/continual.py [--quick] [--no-write]
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeseq  # noqa: E402
from edgeseq.flops import step_cost  # noqa: E402
from edgeseq.models.continual import OfflineModel, Residual  # noqa: E402
from _common import interleaved, runtime_step, single_thread_quiet, standard_args, write_section  # noqa: E402  (benchmarks/_common.py)

# this script is benchmarks/continual.py: take its folder off the path so that `import continual` finds the
# continual-inference library, not this file
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parent.parent


def _bn(c: int) -> nn.BatchNorm3d:
    bn = nn.BatchNorm3d(c)
    with torch.no_grad():  # trained-looking statistics (latency does not depend on them)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.8, 1.2)
    return bn


def _block(c: int, expand: float, stride: int, kt: int, pad_t: int) -> nn.Module:
    h = int(c * expand)
    body = nn.Sequential(
        nn.Conv3d(c, h, 1, bias=False), _bn(h), nn.ReLU(),
        nn.Conv3d(h, h, (kt, 3, 3), stride=(1, stride, stride), padding=(pad_t, 1, 1), groups=h, bias=False), _bn(h),
        nn.SiLU(), nn.Conv3d(h, c, 1, bias=False), _bn(c),
    )
    return Residual(body) if stride == 1 else body


def x3d_like(size: int, padded: bool, classes: int = 10) -> nn.Sequential:
    """X3D-S-shaped (Feichtenhofer, CVPR 2020) at small width: stem 1x3x3 (stride 2) + 5x1x1 depthwise, stages of
    bottleneck blocks (expansion 2.25, depthwise 3x3 with a temporal kernel), 1x1x1 expansion, global pool, linear
    head. ``padded``: as X3D, every temporal kernel is 3 with padding 1 (streamed with padding='stream', as
    CoX3D does); else only the first block of each stage has a temporal kernel, unpadded (exact per clip)."""
    layers: list[nn.Module] = [nn.Conv3d(3, 24, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
                               nn.Conv3d(24, 24, (5, 1, 1), padding=(2 if padded else 0, 0, 0), groups=24, bias=False),
                               _bn(24), nn.ReLU()]
    c = 24
    for width, blocks in ((24, 2), (48, 2), (96, 3)):
        if width != c:
            layers += [nn.Conv3d(c, width, 1, bias=False), _bn(width), nn.ReLU()]
            c = width
        for b in range(blocks):
            kt = 3 if (padded or b == 0) else 1
            layers.append(_block(c, 2.25, 2 if (b == 0 and width != 24) else 1, kt, 1 if padded else 0))
    layers += [nn.Conv3d(c, 216, 1, bias=False), _bn(216), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
               nn.Linear(216, classes)]
    return nn.Sequential(*layers).eval()


def encoder(d_in: int, d_model: int) -> nn.Sequential:
    layer = nn.TransformerEncoderLayer(d_model, 4, 2 * d_model, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(d_in, d_model), layer, nn.Linear(d_model, 10)).eval()


# ------------------------------------------------------------------ the same weights as continual-inference modules
def to_co(module: nn.Module, pool_frames: int):
    import continual as co

    if isinstance(module, nn.Sequential):
        return co.Sequential(*[to_co(m, pool_frames) for m in module if not isinstance(m, nn.Flatten)])
    if isinstance(module, Residual):
        return co.Residual(to_co(module.body, pool_frames), residual_shrink="leading")  # = edgeseq's Residual
    if isinstance(module, nn.Conv3d):
        conv = co.Conv3d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, module.bias is not None)
        conv.load_state_dict(module.state_dict())
        return conv
    if isinstance(module, nn.AdaptiveAvgPool3d):
        return co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=pool_frames)
    if isinstance(module, nn.Linear):
        lin = co.Linear(module.in_features, module.out_features, channel_dim=1)
        lin.load_state_dict(module.state_dict())
        return lin
    return copy.deepcopy(module)  # BatchNorm, activations: co patches methods onto them, so give it copies


def co_encoder(net: nn.Sequential, window: int):
    import continual as co

    from edgeseq.importers.continual_inference import to_co_single_output_layer

    d = net[1].self_attn.embed_dim
    layer = to_co_single_output_layer(net[1], window)
    lin_in, lin_out = co.Linear(net[0].in_features, d, channel_dim=1), co.Linear(d, net[2].out_features, channel_dim=1)
    lin_in.load_state_dict(net[0].state_dict())
    lin_out.load_state_dict(net[2].state_dict())
    return co.Sequential(lin_in, layer, lin_out).eval()


def _co_matches(step, co_net, frame_shape: tuple[int, ...], window: int) -> float:
    """Max abs difference between our eager step and co's forward_steps over 3 windows of random frames."""
    T = 3 * window
    x = torch.randn(1, T, int(np.prod(frame_shape)))
    ours = edgeseq.parity.rollout(step, x.transpose(0, 1).contiguous())[step.state_spec.delay:, 0]
    with torch.no_grad():
        co_net.clean_state()
        theirs = co_net.forward_steps(x.reshape(1, T, *frame_shape).movedim(1, 2), pad_end=False)
        co_net.clean_state()
    theirs = theirs.reshape(1, theirs.shape[1], theirs.shape[2]).movedim(1, 2)[0]  # (T', d_out)
    if len(ours) != len(theirs):  # a different delay: not the same computation
        return float("inf")
    return float((ours - theirs).abs().max())


def bench(name: str, offline: OfflineModel, co_net, out: Path, n: int, rounds: int) -> dict:
    step = edgeseq.convert(offline)
    cost = step_cost(step)
    res: dict = {"name": name, "cost": cost, "window": offline.window, "frame": offline.frame_shape,
                 "params_k": sum(p.numel() for p in offline.parameters()) / 1e3}
    res["co_error"] = _co_matches(step, co_net, offline.frame_shape, offline.window)
    arts = {t: edgeseq.export(step, out / name, target=t, steps=300) for t in ("executorch", "onnx")}
    res["parity"] = max(a.parity["max_abs_error"] for a in arts.values())
    res["delegated"] = arts["executorch"].manifest["graph"]["delegated_fraction"]
    res["state_bytes"] = step.state_spec.bytes_per_stream
    frame = torch.randn(1, step.d_in)
    clip = offline._to_net(torch.randn(1, offline.window, step.d_in))
    # the offline model on one window, exported for onnxruntime
    import onnxruntime as ort

    onnx_path = out / f"{name}_window.onnx"
    torch.onnx.export(offline.net, (clip,), str(onnx_path), dynamo=True, optimize=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    window_sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    window_feed = {window_sess.get_inputs()[0].name: clip.numpy()}
    st = {"s": step.init_state(1)}
    co_frame = frame.reshape(1, *offline.frame_shape)
    co_net.clean_state()
    with torch.no_grad():
        for _ in range(offline.window):
            co_net.forward_step(co_frame)

    def eager_step():
        with torch.no_grad():
            _, st["s"] = step.step(frame, st["s"])

    def offline_eager():
        with torch.no_grad():
            offline.net(clip)

    def co_step():
        with torch.no_grad():
            co_net.forward_step(co_frame)

    fns = {"eager_step": eager_step, "offline_eager": offline_eager,
           "offline_ort": lambda: window_sess.run(None, window_feed), "co_forward_step": co_step}
    fns.update({target: runtime_step(art, frame.numpy()) for target, art in arts.items()})
    res["us"] = interleaved(fns, n=n, rounds=rounds, warmup=max(5, n))
    return res


def render(results: list[dict], quick: bool) -> str:
    import continual
    import executorch
    import onnxruntime

    lines = [
        "## Continual networks: per-frame cost (`benchmarks/continual.py`)",
        "",
        f"Single thread, batch 1, fp32, random-init weights with BatchNorm statistics set. {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, executorch {getattr(executorch, '__version__', '1.5.x')}, "
        f"continual-inference {continual.__version__}." + (" Quick run (`--quick`)." if quick else ""),
        "",
        "FLOPs counted from the graph (`edgeseq.flops`: matmuls, convolutions, attention; 2 per multiply-add). "
        "µs per frame, median of interleaved rounds. *ours* = the converted step (ExecuTorch/XNNPACK, onnxruntime, "
        "eager PyTorch); *window* = the offline model recomputed on the last W frames for every frame; *co* = "
        "continual-inference's eager `forward_step` on the same weights (max abs difference from our step in the "
        "last column).",
        "",
        "| model | frame | window W | params | FLOPs / step | FLOPs / window | ratio | ours ET | ours ORT | ours eager | "
        "window eager | window ORT | co forward_step | ET vs co | co max abs diff | export parity |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c, us = r["cost"], r["us"]
        lines.append(
            f"| {r['name']} | {'x'.join(map(str, r['frame']))} | {r['window']} | {r['params_k']:.0f} k | "
            f"{c['flops_per_step'] / 1e6:.2f} M | {c['offline_flops_per_output'] / 1e6:.2f} M | **{c['offline_over_step']:.1f}x** | "
            f"{us['executorch']:.0f} | {us['onnx']:.0f} | {us['eager_step']:.0f} | {us['offline_eager']:.0f} | "
            f"{us['offline_ort']:.0f} | {us['co_forward_step']:.0f} | **{us['co_forward_step'] / us['executorch']:.1f}x** | "
            f"{r['co_error']:.1e} | {r['parity']:.1e} |")
    lines += ["", "Delegated to XNNPACK: " + ", ".join(f"{r['name']} {r['delegated']:.0%}" for r in results)
              + ". State per stream: " + ", ".join(f"{r['name']} {r['state_bytes']:,} bytes" for r in results) + "."]
    return "\n".join(lines)


def main() -> None:
    args = standard_args(__doc__, "smaller frames and fewer repetitions").parse_args()
    single_thread_quiet()
    size, window, n, rounds = (32, 16, 3, 3) if args.quick else (64, 16, 10, 7)
    models = []
    for padded in (True, False):
        net = x3d_like(size, padded)
        name = "X3D-like, temporal padding (padding='stream')" if padded else "X3D-like, unpadded (exact per clip)"
        model = OfflineModel(net, (3, size, size), window=window, padding="stream" if padded else "clip")
        (pool_frames,) = model.clip_pool_frames().values()  # the frames the clip's global pool averages
        models.append((name, model, to_co(net, pool_frames).eval()))
    enc_window, d_in = 64, 32
    enc = OfflineModel(encoder(d_in, 128), d_in, window=enc_window, layout="btc")
    models.append(("Transformer encoder", enc, co_encoder(enc.net, enc_window)))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model, co_net) in enumerate(models):
            print(f"benchmarking {name}", file=sys.stderr)
            results.append(bench(f"model{i}", model, co_net, Path(tmp), n, rounds))
            results[-1]["name"] = name
            print(results[-1], file=sys.stderr)
    md = render(results, args.quick)
    print(md)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "continual", md)


if __name__ == "__main__":
    main()

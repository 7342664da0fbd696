"""Compression table: each family x scheme on JapaneseVowels (real task), per runtime.

For every model (trained here on the bundled JapaneseVowels data) and every scheme a target runs, the artifact is
exported (validated against its eager quantized step), then measured: file size and its ratio to the fp32 file;
per-step latency (bare runtime calls, single thread, batch 1, interleaved with the fp32 artifact of the same runtime)
as a ratio to fp32; accuracy of the test split streamed series by series through the artifact, vs fp32; and drift:
a 10,000-step rollout on the test stream, artifact vs the float eager step (mean relative output error, and whether
it grows after step 1,000). Structured pruning (50% of units, 10 epochs of fine-tuning) is one more row of each LSTM.
Per-step latency includes each runtime's per-call cost from Python, which quantization does not shrink; the table
gives it (a 2-unit Elman RNN: next to no arithmetic), and the speed-up of the time above it (what the kernels do, and
what a C++ caller on the device sees more of). Small models show the floor, the 2x512 LSTM shows the kernels.

Run: python benchmarks/compression.py [--quick]   (writes docs/compression.md and a section of docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

import edgeseq  # noqa: E402
from _common import interleaved, runtime_step, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    # name: (family, config, epochs, learning rate)
    "LSTM 1x256": ("rnn", dict(cell="lstm", d_hidden=256), 15, 1e-2),
    "LSTM 2x512": ("rnn", dict(cell="lstm", d_hidden=512, num_layers=2), 10, 2e-3),  # 1e-2 diverged (accuracy 0.22)
    "Aaren 2x64": ("aaren", dict(d_model=64, n_layers=2), 15, 1e-2),
    "Mamba 2x64": ("mamba", dict(d_model=64, n_layers=2), 15, 1e-2),
    "TCN 3x64": ("continual", dict(channels=(64, 64, 64), kernel_size=3), 15, 1e-2),  # convolutions only
}
QUICK = {"LSTM 1x64": ("rnn", dict(cell="lstm", d_hidden=64), 5, 1e-2)}
FINETUNE = 10  # epochs of fine-tuning after structured pruning
SCHEMES = [("int8-dynamic", None), ("int8-static", "japanese-vowels"), ("fp16", None), ("int8-weight-only", None),
           ("int4-weight-only", None)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--drift-steps", type=int, default=10_000)
    ap.add_argument("--only", action="append", default=[], metavar="MODEL",
                    help=f"re-run only these models (repeatable; {', '.join(MODELS)}) and merge their rows into the "
                         "existing docs/compression-results.json (each row keeps the per-call floor of its own run)")
    ap.add_argument("--target", action="append", default=[], choices=["executorch", "onnx"],
                    help="measure only these runtimes (repeatable; default both); with --only, the other runtime's rows "
                         "of those models are kept from their earlier run")
    args = ap.parse_args()
    targets = tuple(args.target) or ("executorch", "onnx")
    unknown = [m for m in args.only if m not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from edgeseq.data import load_dataset
    from edgeseq.pipeline import real_stream
    from edgeseq.quant import SCHEMES as REG, StructuredConfig, prune_
    from edgeseq.quant.prune_structured import REWRITERS
    from edgeseq.quant.drift import evaluate
    from edgeseq.quant.qlinear import default_weights
    from edgeseq.train import TrainConfig, fit, stream_outputs

    ds = load_dataset("japanese-vowels")
    val = real_stream(ds.test, 2000)[:, None, :]
    rows = []
    refused: list[dict] = []
    skipped: list[dict] = []  # schemes with nothing to quantize in a model
    n, rounds = (300, 5) if args.quick else (1000, 9)
    drift_steps = 1000 if args.quick else args.drift_steps
    tmp = Path(tempfile.mkdtemp())
    cpu = cpu_label()
    floor = {}
    for target in targets:
        tiny = edgeseq.build("rnn", d_in=ds.d_in, d_out=ds.d_out, cell="rnn_tanh", d_hidden=2)
        art = edgeseq.export(edgeseq.convert(tiny), tmp / f"floor-{target}", target=target, steps=10)
        floor[target] = interleaved({"f": runtime_step(art, val[0])}, n, rounds)["f"]
        print(f"per-call floor on {target}: {floor[target]:.1f} us", file=sys.stderr)
    todo = QUICK if args.quick else {k: v for k, v in MODELS.items() if not args.only or k in args.only}
    for label, (family, kw, epochs, lr) in todo.items():
        torch.manual_seed(0)
        model = edgeseq.build(family, d_in=ds.d_in, d_out=ds.d_out, task="classify", **kw)
        t0 = time.perf_counter()
        res = fit(model, ds, TrainConfig(epochs=epochs if not args.quick else 3, lr=lr, seed=0))
        print(f"{label}: trained in {time.perf_counter() - t0:.0f} s, test accuracy {res.metrics['accuracy']:.4f}", file=sys.stderr)
        variants = [("fp32", model, None)]
        for scheme, calib in SCHEMES:
            variants.append((scheme, model, (scheme, calib)))
        if REWRITERS.find(lambda k, _v: isinstance(model, k)) is not None:  # families with a structured rewriter
            pruned = copy.deepcopy(model)
            prune_(pruned, StructuredConfig(0.5), data="japanese-vowels", finetune_epochs=FINETUNE)
            variants.append((f"structured 50% + {FINETUNE} ep", pruned, None))
        for target in targets:
            arts = {}
            for name, mdl, q in variants:
                if q is not None and target not in REG.get(q[0]).targets:
                    continue
                step = edgeseq.convert(mdl)
                if q is not None:
                    cfg_cls = REG.get(q[0]).config
                    has_w = "weights" in cfg_cls.__dataclass_fields__  # int8 schemes: the default weight format per target
                    cfg = cfg_cls(weights=default_weights(target)) if has_w else cfg_cls()
                    try:
                        edgeseq.quant.quantize_(step, cfg, calib=q[1], target=target)
                    except edgeseq.errors.ConfigError as exc:  # e.g. a step with no layer the scheme quantizes
                        skipped.append({"model": label, "target": target, "variant": name, "reason": str(exc)})
                        continue
                try:
                    art = edgeseq.export(step, tmp / f"{label}-{name}-{target}".replace(" ", "_").replace("%", ""), target=target, inputs=val)
                except edgeseq.EdgeseqError as exc:  # reported as a row: the export refused to write
                    print(f"{label} {target} {name}: export refused: {exc}", file=sys.stderr)
                    refused.append({"model": label, "target": target, "variant": name, "reason": str(exc)})
                    continue
                arts[name] = (art, step, mdl)
            calls = {}
            for name, (art, _s, _m) in arts.items():
                calls[name] = runtime_step(art, val[0])
            lat = interleaved(calls, n, rounds)
            fp_bytes = arts["fp32"][0].manifest["file_bytes"]
            fp_acc = None
            for name, (art, step, mdl) in arts.items():
                sess = edgeseq.open(art.path)
                acc = float((stream_outputs(sess, ds.test).argmax(-1) == ds.test.y).mean())
                fp_acc = acc if name == "fp32" else fp_acc
                rep = evaluate(edgeseq.convert(mdl if name.startswith("structured") else model), art.path, "japanese-vowels", drift_steps)
                s = rep.summary()
                rows.append({
                    "model": label, "target": target, "variant": name, "bytes": art.manifest["file_bytes"],
                    "size_ratio": art.manifest["file_bytes"] / fp_bytes, "us": lat[name], "speedup": lat["fp32"] / lat[name],
                    "acc": acc, "acc_change": 100 * (acc - fp_acc), "parity": art.parity["max_abs_error"],
                    "drift_mean": s["output_rel_error_mean"], "drift_growth": s["growth_late_over_early"], "bounded": s["bounded"],
                    "floor_us": floor[target], "run_floors": dict(floor), "cpu": cpu,
                })
                r = rows[-1]
                print(f"{label:11s} {target:10s} {name:22s} {r['bytes']:>9,} B ({r['size_ratio']:.2f}x)  {r['us']:8.1f} us "
                      f"({r['speedup']:.2f}x)  acc {acc:.4f} ({r['acc_change']:+.1f})  drift {r['drift_mean']:.2e} "
                      f"growth {r['drift_growth']:.2f}", file=sys.stderr)
    import json

    results = ROOT / "docs" / "compression-results.json"
    if args.only and results.is_file():  # merge: keep the other models' rows from their own run
        old = json.loads(results.read_text())
        for r in old["rows"]:
            r.setdefault("floor_us", old["floor_us"][r["target"]])
        def kept(r):
            return r["model"] not in args.only or r["target"] not in targets

        rows = [r for r in old["rows"] if kept(r)] + rows
        refused = [r for r in old.get("refused", []) if kept(r)] + refused
        skipped = [r for r in old.get("skipped", []) if kept(r)] + skipped
        for target, f in old["floor_us"].items():
            floor.setdefault(target, f)
        order = list(MODELS)
        rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    md = render(rows, args.quick, drift_steps, floor, refused, skipped)
    if not args.quick:
        (ROOT / "docs" / "compression-results.json").write_text(json.dumps({"floor_us": floor, "rows": rows, "refused": refused, "skipped": skipped}, indent=1) + "\n")
    print(md)
    if not args.quick:
        (ROOT / "docs" / "compression-results.md").write_text(md + "\n")
        write_section(ROOT / "docs" / "benchmarks.md", "compression", md)


def render(rows, quick: bool, drift_steps: int, floor: dict, refused: list, skipped: list | None = None) -> str:
    import platform

    lines = [
        f"## Compression (benchmarks/compression.py{' --quick' if quick else ''})",
        "",
        f"JapaneseVowels (real task), models trained in the script; one run on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, single thread, batch 1. Size and latency are ratios to the fp32 artifact of the same "
        f"runtime in the same run (latency: bare runtime calls, interleaved, median of rounds). Accuracy: the test split "
        f"streamed series by series through the artifact. Drift: {drift_steps:,}-step rollout on the test stream vs the "
        "float eager step, mean relative output error; growth = mean error of the last third / of the third after step "
        f"{drift_steps // 10:,} (bounded: <= 1.5). int8 weights: int8 (-127..127) on executorch, uint8 (0..255, a "
        "zero point per channel) on onnx: the int8 schemes' defaults there (docs/compression.md, weight formats).",
        "",
        "Per-call floor (a 2-unit Elman RNN, same measurement): " + ", ".join(f"{k} {v:.1f} µs" for k, v in floor.items()) + "."
        + _runs(rows),
        "",
        "| model | runtime | variant | file bytes | size vs fp32 | µs/step | speed-up | above the floor | accuracy | Δ points | artifact vs eager | drift (mean rel) | growth |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['target']} | {r['variant']} | {r['bytes']:,} | {r['size_ratio']:.2f} | {r['us']:.1f} | "
            f"{r['speedup']:.2f}x | {_above(r, rows, floor)} | {r['acc']:.4f} | {r['acc_change']:+.1f} | {r['parity']:.2g} | {r['drift_mean']:.2e} | "
            f"{_growth(r)} |"
        )
    if refused:
        lines += ["", "Exports that refused to write (the validation against the eager step failed):", ""]
        lines += [f"- {r['model']}, {r['target']}, {r['variant']}: {r['reason']}" for r in refused]
    if skipped:
        by_model: dict[str, list[str]] = {}
        for r in skipped:
            by_model.setdefault(f"{r['model']} ({r['reason']})", []).append(f"{r['variant']} on {r['target']}")
        lines += ["", "Not applicable: " + "; ".join(f"{m}: {', '.join(v)}" for m, v in by_model.items()) + "."]
    return "\n".join(lines)


def cpu_label() -> str:
    """The CPU, as far as it matters to int8 kernels: x86 with or without VNNI (onnxruntime's u8 x s8 path
    saturates without it, docs/compression.md), else the machine name."""
    import platform

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return f"{platform.machine()} with VNNI"
    if "avx2" in flags:
        return f"{platform.machine()} AVX2, no VNNI"
    return platform.machine()


def _runs(rows) -> str:
    """Which rows were measured together: rows of one run share its measured per-call floor (``--only`` and
    ``--target`` runs merge their rows into the earlier results)."""
    runs: dict[tuple, dict[str, list[str]]] = {}
    for r in rows:
        # rows written before run_floors: their run measured every row of the model that lacks run_floors too
        floors = r.get("run_floors") or {x["target"]: x["floor_us"] for x in rows if x["model"] == r["model"] and "run_floors" not in x}
        models = runs.setdefault((tuple(sorted(floors.items())), r.get("cpu", "?")), {})
        targets = models.setdefault(r["model"], [])
        if r["target"] not in targets:
            targets.append(r["target"])
    if len(runs) < 2:
        return ""
    every = {r["target"] for r in rows}
    cpus = {cpu for _, cpu in runs}
    groups = "; ".join(", ".join(m if set(t) == every else f"{m} ({', '.join(t)})" for m, t in models.items())
                       + (f" [{cpu}]" if len(cpus) > 1 else "") for (_, cpu), models in runs.items())
    return (f" The rows come from {len(runs)} runs ({groups}: `--only` reruns merged into the results); every ratio "
            "is within one run, and each row's 'above the floor' uses its own run's floor.")


def _above(r, rows, floor) -> str:
    """Speed-up of the time above the runtime's per-call floor (what the kernels do)."""
    fp = next(x for x in rows if x["model"] == r["model"] and x["target"] == r["target"] and x["variant"] == "fp32")
    f = r.get("floor_us", floor.get(r["target"], 0.0))
    if r["us"] - f <= 0.05 * f:
        return "n/a"
    return f"{(fp['us'] - f) / (r['us'] - f):.2f}x"


def _growth(r) -> str:
    if r["drift_mean"] < 1e-5:
        return "n/a (float rounding)"  # a float artifact: the ratio of two rounding noises says nothing
    return f"{r['drift_growth']:.2f}" + ("" if r["bounded"] else " (grows)")


if __name__ == "__main__":
    main()

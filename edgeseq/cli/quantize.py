"""``edgeseq quantize``: quantize a model directory's step, evaluate its drift on real data, export and validate it."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.choices import ActivationGrid, SchemeName, Target, WeightFormat
from edgeseq.cli.common import handle_errors, out, print_stepwise, progress_bar, status
from edgeseq.cli.dataopts import (
    SOURCE_HELP, Features, LabelCol, MaxMemory, SeriesCol, SplitSeed, Task, TimeCol, data_options, load_data,
)
from edgeseq.cli.source import ModelArg, TimeAxisOpt
from edgeseq.errors import ConfigError


def parse_state_policy(items: list[str]) -> dict[str, str]:
    policy = {}
    for item in items:
        name, sep, prec = item.partition("=")
        if not sep or not name or not prec:
            raise ConfigError(f"--state expects NAME=PRECISION (e.g. c0=float16), got {item!r}")
        policy[name.strip()] = prec.strip()
    return policy


@handle_errors
def quantize(
    model_dir: ModelArg,
    scheme: Annotated[SchemeName, typer.Option(help="Quantization scheme (see docs/compression.md).")] = SchemeName("int8-dynamic"),
    target: Annotated[Target, typer.Option(help="Export target; a scheme it cannot run is refused before any work.")] = Target("executorch"),
    calib: Annotated[Optional[str], typer.Option(help=f"Calibration data (its train split, rolled out with the state fed back; labels not needed): {SOURCE_HELP}. Needed by int8-static and int8 state.")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output path stem, file or folder (OUT -> OUT.pte + OUT.pte.edgeseq.json).")] = Path("out/model-quant"),
    state: Annotated[Optional[list[str]], typer.Option(help="Store a state tensor in another precision: NAME=float16|int8 (repeatable). Default: all state float32.")] = None,
    weights: Annotated[Optional[WeightFormat], typer.Option(help="int8 schemes' 8-bit weight format: int8 (-127..127; default for executorch and tensorrt), uint8 (0..255 with a zero point per channel; default for onnx) or int8-reduced (-64..64: 7 bits). onnx refuses int8: its x86 kernels saturate with it.")] = None,
    activations: Annotated[Optional[ActivationGrid], typer.Option(help="int8-static's activation grid: affine (a zero point; default for executorch and onnx) or symmetric (zero point 0; default for tensorrt, whose explicit quantization takes nothing else).")] = None,
    block_size: Annotated[int, typer.Option(help="int8/int4-weight-only: input values per scale (a power of two >= 16).")] = 32,
    eval_: Annotated[bool, typer.Option("--eval", help="Roll fp32 and quantized over --eval-steps real frames; write the rollout beside the artifact as ARTIFACT.drift.json and ARTIFACT.drift.svg (out/model-quant.pte.drift.json).")] = False,
    eval_steps: Annotated[int, typer.Option(min=100, help="Length of the drift rollout.")] = 10_000,
    data: Annotated[Optional[str], typer.Option("--eval-data", "--data", help=f"Real data for the drift rollout, the task metric (with labels) and the validation rollout: {SOURCE_HELP}. Default: japanese-vowels when the model takes its 12 features, else the calibration data.")] = None,
    budget: Annotated[Optional[float], typer.Option(help="Max relative output error vs fp32 over the drift rollout (implies --eval); past it nothing is written.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Length of the artifact-vs-eager-quantized validation rollout.")] = 2000,
    tolerance: Annotated[Optional[float], typer.Option(help="Max scaled error of the artifact vs the eager quantized step (default: the scheme's).")] = None,
    time_axis: TimeAxisOpt = None,
    series_col: SeriesCol = None,
    time_col: TimeCol = None,
    label_col: LabelCol = None,
    features: Features = None,
    split_seed: SplitSeed = 0,
    task: Task = None,
    max_memory: MaxMemory = None,
) -> None:
    """Quantize MODEL's step with SCHEME, export it to TARGET and check it.

    MODEL is an edgeseq model directory or a torch.export archive (.pt2) of your own model (docs/own-models.md).

    Recurrent state stays float32 unless --state opts a tensor in. The artifact is validated against the eager
    quantized step over STEPS real frames, and its state outputs are checked on the exported graph against the
    state policy. Where the two streams part at an int8 rounding (an activation within a hair of a rounding boundary
    rounded the other way by the runtime), each step is checked from the eager state instead: within 1e-4, or once
    such roundings are flipped (docs/compression.md); any other disagreement writes nothing. With --eval (or
    --budget) the quantized step is rolled against fp32 over EVAL_STEPS real frames first: output and state error
    per step, the task metric, and a plot; past BUDGET nothing is written.
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_path, "--out")  # before any work
    import edgeseq
    from edgeseq.data import check_fits, load_dataset
    from edgeseq.pipeline import real_stream
    from edgeseq.quant import SCHEMES, StatePolicy, quantize_
    from edgeseq.quant.config import check_target
    from edgeseq.quant.qlinear import default_grid, default_weights

    sch = SCHEMES.get(scheme.value)
    kwargs = {"state": StatePolicy(parse_state_policy(state or []))}
    fields = {f.name for f in dataclasses.fields(sch.config)}
    if "weights" in fields:
        kwargs["weights"] = weights.value if weights is not None else default_weights(target.value)
    elif weights is not None:
        raise ConfigError(f"--weights applies to the int8-dynamic and int8-static schemes, not {scheme.value}")
    if "activations" in fields:
        kwargs["activations"] = activations.value if activations is not None else default_grid(target.value)
    elif activations is not None:
        raise ConfigError(f"--activations applies to the int8-static scheme, not {scheme.value}")
    if "block_size" in fields:
        kwargs["block_size"] = block_size
    config = sch.config(**kwargs)
    check_target(config, target.value)
    from edgeseq.cli.source import open_model

    with status(f"converting {model_dir}"):
        _model, step = open_model(model_dir, time_axis)
    float_step = copy.deepcopy(step)  # the fp32 reference of the drift rollout
    opts = data_options(series_col, time_col, label_col, features, split_seed, task, max_memory)
    cal = load_data(calib, opts, "calibration data", d_in=step.d_in) if calib else None
    if cal is not None:
        check_fits(cal, step.d_in, what="--calib")
    if data is not None:
        ds = load_data(data, opts, "evaluation data", d_in=step.d_in)
        check_fits(ds, step.d_in, what="--eval-data")
    else:  # the bundled default where the model takes its frames, else the calibration data
        default = load_dataset("japanese-vowels")
        ds = default if default.d_in == step.d_in else cal
    with status(f"quantizing ({scheme.value}{', calibrating on ' + cal.name if cal else ''})"):
        quantize_(step, config, calib=cal, target=target.value)
    inputs = real_stream(ds.test, steps)[:, None, :] if ds is not None else None
    if eval_ or budget is not None:
        from edgeseq.quant.drift import evaluate

        if ds is None:
            raise ConfigError(f"--eval needs real frames of {step.d_in} features: give --eval-data PATH (or --calib)")
        with progress_bar() as bar:
            bar_task = bar.add_task(f"drift rollout on {ds.name}", total=eval_steps)
            rep = evaluate(float_step, step, ds, eval_steps, budget=budget,
                           progress=lambda i, n: bar.update(bar_task, completed=i))
        s = rep.summary()
        step.quant_drift = s
        m = s["metric"]
        acc = (f"; accuracy {m['accuracy_float']:.4f} -> {m['accuracy_quantized']:.4f}" if "accuracy_float" in m else "")
        out.print(f"drift over {s['steps']:,} steps: output rel error mean {s['output_rel_error_mean']:.3g}, "
                  f"max {s['output_rel_error_max']:.3g}; growth (late/early) {s['growth_late_over_early']:.2f}"
                  f" ({'bounded' if s['bounded'] else 'GROWING'}){acc}")
        if not rep.within_budget:
            raise ConfigError(f"quantized output error {s['output_rel_error_max']:.3g} exceeds the budget {budget:g}; nothing written")
    with status(f"exporting to {target.value} and validating over {steps} steps"):
        art = edgeseq.export(step, out_path, target=target.value, steps=steps, inputs=inputs, tolerance=tolerance)
    if eval_ or budget is not None:
        from edgeseq.fsutil import write_json_atomic

        stem = art.path
        write_json_atomic(Path(f"{stem}.drift.json"), rep.to_json())
        Path(f"{stem}.drift.svg").write_text(rep.plot_svg(f"{scheme.value} on {target.value}"))
    p = art.parity
    q = art.manifest["quantization"]
    kept = ", ".join(f"{r['name']}={r['dtype']}" for r in q["state_check"])
    out.print(f"wrote {art.path} ({art.manifest['file_bytes']:,} bytes); vs eager quantized over {p['steps']} steps: "
              f"max abs {p['max_abs_error']:.3g}; state outputs: {kept} (checked on the graph)")
    print_stepwise(p)

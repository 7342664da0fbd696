"""``edgeseq prune``: prune a model directory, optionally fine-tune on real data, write a new model directory."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.common import err, handle_errors, out, progress_bar, status
from edgeseq.cli.dataopts import (
    SOURCE_HELP, Features, LabelCol, MaxMemory, SeriesCol, SplitSeed, Task, TimeCol, data_options, load_data,
)


class Method(str, Enum):
    structured = "structured"
    unstructured = "unstructured"
    nm = "n:m"
    random_graph = "random-graph"


@handle_errors
def prune(
    model_dir: Annotated[Path, typer.Argument(help="Model directory (config.json + model.safetensors).")],
    method: Annotated[Method, typer.Option(help="structured: remove whole hidden units (rnn), attention heads and FF units (aaren), inner channels (mamba1), heads (mamba2) or convolution channels (continual), rewriting smaller matrices (smaller, faster); unstructured: zero the smallest weights (smaller download only); n:m keeps N of every M weights (2:4 for TensorRT sparse tensor cores); random-graph: connectivity from a fixed random graph (sparse-RNN thesis).")] = Method.structured,
    amount: Annotated[float, typer.Option(min=0.0, max=0.99, help="Fraction of hidden units, heads or channels (structured) or of weights (the other methods) to remove.")] = 0.5,
    scope: Annotated[str, typer.Option(help="unstructured: 'global' (one threshold) or 'layer' (the same fraction per matrix).")] = "global",
    n: Annotated[int, typer.Option(help="For method n:m, the weights kept per group.")] = 2,
    m: Annotated[int, typer.Option(help="For method n:m, the group size along the input dimension.")] = 4,
    graph: Annotated[str, typer.Option(help="random-graph: 'watts-strogatz' (small world) or 'erdos-renyi'.")] = "watts-strogatz",
    seed: Annotated[int, typer.Option(help="random-graph: seed of the graph.")] = 0,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="Epochs of fine-tuning on --data after pruning (pruned weights stay zero).")] = 0,
    data: Annotated[Optional[str], typer.Option(help=f"Data for fine-tuning and the before/after metric (labelled, of the model's task): {SOURCE_HELP}. Default: japanese-vowels where it fits the model, else none (no metric).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output model directory.")] = Path("out/model-pruned"),
    series_col: SeriesCol = None,
    time_col: TimeCol = None,
    label_col: LabelCol = None,
    features: Features = None,
    split_seed: SplitSeed = 0,
    task: Task = None,
    max_memory: MaxMemory = None,
) -> None:
    """Prune MODEL_DIR with METHOD, fine-tune, and write the pruned model directory to OUT.

    Convert and export the result as any model directory (edgeseq export / quantize); the pruning record goes
    into its config.json and into every manifest exported from it.
    """
    from edgeseq.fsutil import check_writable

    check_writable(out_dir, "--out")  # before any work
    from edgeseq.cli.common import must_exist

    must_exist(model_dir)
    import edgeseq
    from edgeseq.data import check_fits, load_dataset
    from edgeseq.errors import ConfigError, InputError
    from edgeseq.quant import NMConfig, RandomGraphConfig, StructuredConfig, UnstructuredConfig, prune_
    from edgeseq.train import evaluate

    config = {"structured": lambda: StructuredConfig(amount), "unstructured": lambda: UnstructuredConfig(amount, scope),
              "n:m": lambda: NMConfig(n=n, m=m),
              "random-graph": lambda: RandomGraphConfig(amount, graph=graph, seed=seed)}[method.value]()
    if model_dir.suffix == ".pt2":
        raise ConfigError(f"{model_dir}: prune rewrites edgeseq's own model families; a torch.export archive of your "
                          "own model is converted and quantized as it is (prune it in PyTorch before export)")
    model = edgeseq.load(model_dir)
    before = sum(p.numel() for p in model.parameters())
    c = model.config
    fits = dict(d_out=getattr(c, "d_out", None), task=getattr(c, "task", None))
    if data is not None:  # the user's data: it must fit, or nothing is done
        ds = load_data(data, data_options(series_col, time_col, label_col, features, split_seed, task, max_memory),
                       d_in=c.d_in, labels_for=f"the model's {fits['task']} metric" if fits["task"] else None)
        check_fits(ds, c.d_in, what="--data", **fits)
    else:  # the bundled default, where it fits this model
        ds = load_dataset("japanese-vowels")
        try:
            check_fits(ds, c.d_in, what="--data", **fits)
        except InputError as exc:
            if finetune_epochs:
                raise InputError(f"{exc}; give --data with the model's own data to fine-tune") from None
            err.print(f"no before/after metric: {exc} (give --data)", highlight=False)
            ds = None
    metric0 = evaluate(model, ds.task, ds.test) if ds else {}
    if finetune_epochs:
        with progress_bar() as bar:
            bar_task = bar.add_task(f"pruning ({method.value}) and fine-tuning on {ds.name}", total=finetune_epochs)
            prune_(model, config, data=ds, finetune_epochs=finetune_epochs,
                   progress=lambda e, _n, loss: bar.update(bar_task, completed=e, description=f"fine-tuning, loss {loss:.4f}"))
    else:
        with status(f"pruning ({method.value})"):
            prune_(model, config)
    metric1 = evaluate(model, ds.task, ds.test) if ds else {}
    edgeseq.save(model.eval(), out_dir)
    rec = model.pruning
    after = rec["params"]
    fmt = ", ".join(f"{k} {metric0[k]:.4f} -> {metric1[k]:.4f}" for k in metric0)
    out.print(f"wrote {out_dir}: parameters {before:,} -> {after:,}; zeros in weight matrices {rec['sparsity']:.1%}"
              + (f"; {fmt} on {ds.name} test" if fmt else ""))

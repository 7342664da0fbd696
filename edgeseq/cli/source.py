"""What the model commands take: an edgeseq model directory, or a user's own model as a ``torch.export`` archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.errors import ConfigError

MODEL_HELP = ("Model directory (config.json + model.safetensors), or a torch.export archive (.pt2) of your own model "
              "(see docs/own-models.md).")
ModelArg = Annotated[Path, typer.Argument(help=MODEL_HELP, metavar="MODEL")]
TimeAxisOpt = Annotated[Optional[int], typer.Option(
    "--time-axis", help=".pt2 only: the input's time axis (default: its dynamic axis, else 1; -1 for (batch, channels, time)).")]


def open_model(path: Path, time_axis: int | None = None):
    """(the model as its parallel reference, its step): a model directory through its registered converter, a
    ``.pt2`` archive (checked before it is loaded) through the graph converter."""
    import edgeseq
    from edgeseq.cli.common import must_exist

    must_exist(path)
    if path.is_dir():
        if time_axis is not None:
            raise ConfigError("--time-axis applies to a .pt2 archive, not to a model directory")
        model = edgeseq.load(path)
        return model, edgeseq.convert(model)
    if path.suffix == ".pt2":
        from edgeseq.graph.pt2 import convert_program, load_program

        program = load_program(path, time_axis)
        return program.module, convert_program(program)
    raise ConfigError(f"{path}: expected a model directory (config.json + model.safetensors) or a torch.export "
                      "archive (.pt2)")

"""The ``edgeseq`` command line."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from edgeseq._version import __version__
from edgeseq.cli import convert as _convert
from edgeseq.cli import export as _export
from edgeseq.cli import inspect as _inspect
from edgeseq.cli import native as _native
from edgeseq.cli import profile as _profile
from edgeseq.cli import prune as _prune
from edgeseq.cli import quantize as _quantize
from edgeseq.cli import quickstart as _quickstart
from edgeseq.cli import stream as _stream
from edgeseq.cli import train as _train
from edgeseq.cli.common import DEBUG, quiet_toolchains, usage_error

import typer.rich_utils  # noqa: E402

typer.rich_utils.rich_format_error = usage_error  # one line for a command line that does not parse (exit 2)
_display_type = typer.core.TyperOption.display_type_rich


def _display_type_of_option(self, ctx):
    """The type column of --help: nothing for a flag (typer 0.29 shows every flag as <bool>), and choices with
    spaces around the bars so that a narrow terminal wraps between choices, never inside one."""
    if self.is_flag and not self.count:
        return None
    shown = _display_type(self, ctx)
    return shown.replace("|", " | ") if isinstance(shown, str) and shown.startswith("<") and "|" in shown else shown


typer.core.TyperOption.display_type_rich = _display_type_of_option

app = typer.Typer(
    name="edgeseq",
    help="Ship trained recurrent-form sequence models to edge runtimes as constant-memory step functions, "
    "with parity checked at every stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeseq {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and toolchain logs on errors.")] = False,
) -> None:
    """edgeseq: train, convert, export, stream and inspect step-form sequence models."""
    ctx.obj = {"debug": debug}
    DEBUG.set(debug)
    if debug:
        os.environ["EDGESEQ_DEBUG"] = "1"
    else:
        quiet_toolchains()


app.command("train")(_train.train)
app.command("convert")(_convert.convert)
app.command("export")(_export.export)
app.command("quantize")(_quantize.quantize)
app.command("prune")(_prune.prune)
app.command("stream")(_stream.stream)
app.command("inspect")(_inspect.inspect)
app.command("profile")(_profile.profile)
app.command("devices")(_profile.devices)
app.command("quickstart")(_quickstart.quickstart)
app.command("check-device")(_native.check_device)
app.add_typer(_native.native_app, name="native")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

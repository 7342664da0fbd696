"""Shared CLI plumbing: consoles, one-line errors, progress bars."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings

import contextvars

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgeseq.errors import EdgeseqError

out = Console()
err = Console(stderr=True)


def quiet_toolchains() -> None:
    """Silence the exporters' informational logging (torch.onnx, torchao) unless --debug."""
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "torchao", "onnxscript", "executorch", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


# set by the root callback for the current invocation (--debug)
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("edgeseq_cli_debug", default=False)


def debug_enabled() -> bool:
    return DEBUG.get()


def handle_errors(fn):
    """Run a command; an :class:`EdgeseqError` becomes one line on stderr and exit code 1 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeseqError as exc:
            if debug_enabled():
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def print_stepwise(parity: dict) -> None:
    """The one-line step-by-step proof of a quantized artifact whose free run parted at an int8 rounding, where its
    manifest has one (edgeseq.quant.flips.describe; imported only then, so that inspect stays light)."""
    if parity.get("stepwise"):
        from edgeseq.quant.flips import describe

        out.print(describe(parity))


def must_exist(*paths, what: str = "") -> None:
    """Every given path exists, or one line and exit 1 (the same for every command and every path argument)."""
    from edgeseq.errors import InputError

    for p in paths:
        if p is not None and not os.path.exists(p):
            raise InputError(f"{what + ' ' if what else ''}{p}: no such file or folder")


def usage_error(e) -> None:
    """A command line typer/click cannot parse (unknown option, bad choice, missing argument): one line on
    stderr, exit 2 (click's code for usage errors); replaces typer's boxed message."""
    from rich.markup import escape

    msg = " ".join(e.format_message().replace("Value error, ", "").split())
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    err.print(f"[bold red]error:[/] {escape(msg)}{escape(hint)}", highlight=False, soft_wrap=True, emoji=False)


@contextlib.contextmanager
def progress_bar(transient: bool = True):
    with Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=transient,
    ) as p:
        yield p


@contextlib.contextmanager
def status(message: str):
    with err.status(message):
        yield

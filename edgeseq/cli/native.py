"""``edgeseq native build`` (the C++ runner for x86_64 or aarch64) and ``edgeseq check-device`` (parity of an
artifact on a catalog device's ARM arithmetic, under qemu)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeseq.cli.common import err, handle_errors, must_exist, out, status
from edgeseq.cli.dataopts import SOURCE_HELP

native_app = typer.Typer(help="The native (C++) runner: build it for this machine or for aarch64 (docs/on-device.md).",
                         no_args_is_help=True, rich_markup_mode="rich")


@native_app.command("build")
@handle_errors
def build(
    arch: Annotated[str, typer.Option(help="x86_64 (this machine) or aarch64 (a Raspberry Pi, a Jetson, a phone's Linux; cross-compiled with g++-aarch64-linux-gnu).")] = "x86_64",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for libedgeseq_runtime.so, libedgeseq_kernels.so (edgeseq's own ExecuTorch operators), edgeseq-run and edgeseq-example (default: edgeseq's cache).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print the compiler commands.")] = False,
) -> None:
    """Compile the native runtime (C ABI, runtimes/native/edgeseq.h), the runner edgeseq-run and a C example
    against the ExecuTorch runtime of the installed executorch wheel (aarch64: the same version's aarch64 wheel,
    fetched once with pip download). Copy the folder and the wheel's lib/ folder to the device (docs/on-device.md)."""
    from edgeseq.fsutil import check_writable
    from edgeseq.runtimes.native import build as do_build

    if out_dir is not None:
        check_writable(out_dir, "--out")
    with status(f"building the {arch} runner"):
        b = do_build(arch, out_dir, verbose=verbose)
    out.print(f"built {b.runner} (and {b.library.name}, libedgeseq_kernels.so, {b.example.name}) for {arch}; runtime "
              f"libraries: {b.runtime / 'lib'}")


@handle_errors
def check_device(
    artifact: Annotated[Path, typer.Argument(help="An exported ExecuTorch artifact (.pte) with its manifest.")],
    device: Annotated[str, typer.Option("--device", "-d", help="Catalog device whose CPU to emulate (its qemu_cpu); `edgeseq devices` lists them.")] = "raspberry-pi-5",
    data: Annotated[Optional[str], typer.Option("--input", "--data", help=f"Frames to stream (the test split, series one after another): {SOURCE_HELP}. Default: japanese-vowels when the model takes its 12 features, else seeded N(0, 1) frames.")] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames to stream.")] = 1000,
    record: Annotated[bool, typer.Option(" /--no-record", help="Write the result into the manifest's parity_on (default) or only print it.")] = True,
) -> None:
    """Stream FRAMES through ARTIFACT with the aarch64 runner under qemu-aarch64 emulating DEVICE's CPU, and compare
    with the same program on this machine's ExecuTorch: what ARM's kernels (NEON, dot-product int8, fp16
    arithmetic) change. The result goes into the manifest (parity_on); past the manifest's tolerance it exits 1.
    Emulated time means nothing and is not reported."""
    from edgeseq import manifest as man
    from edgeseq.devices.profiler import ProfileConfig, make_inputs
    from edgeseq.errors import ParityError
    from edgeseq.runtimes.native import check_device as do_check

    must_exist(artifact)
    model_file, _, m = man.resolve_artifact(artifact)
    if data is None and int(m["inputs"][0]["shape"][1]) == 12:
        data = "japanese-vowels"  # the bundled real frames, where the model takes their 12 features
    xs, desc = make_inputs(m, ProfileConfig(data=data), frames)  # the frames `edgeseq profile --input` streams
    what = f"{frames} frames: {desc['what']}"
    with status(f"streaming {what} on emulated {device}"):
        r = do_check(model_file, device, xs, record=record)
    line = (f"{model_file.name} on {r['device']} (aarch64, qemu -cpu {r['qemu_cpu']}, emulated) vs x86_64 ExecuTorch over "
            f"{what}: max abs error {r['max_abs_error']:.3g}, max scaled error {r['max_scaled_error']:.3g}; vs the "
            f"eager step at most {r['vs_eager_bound']:.3g} (with the export's own error; tolerance {r['tolerance']:g})"
            + ("; recorded in the manifest (parity_on)" if record else ""))
    out.print(line, highlight=False)
    if not r["passed"]:
        err.print("[bold red]the artifact's ARM parity fails its tolerance[/] (flagged in the manifest)")
        raise ParityError(f"{model_file.name}: ARM parity vs the eager step (bound {r['vs_eager_bound']:.3g}) exceeds the "
                          f"tolerance {r['tolerance']:g}")

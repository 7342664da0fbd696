"""``edgeseq stream``: push a recorded input stream through an artifact, one step at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from edgeseq.cli.choices import RuntimeName
from edgeseq.cli.common import err, handle_errors, progress_bar
from edgeseq.cli.dataopts import MaxMemory
from edgeseq.errors import EdgeseqError, ShapeError


def read_stream(path: Path, max_memory: int | None = None):
    """(T, d_in) or (T, batch, d_in) from ``.npy`` (no pickle; read in chunks as it is indexed, see
    :class:`~edgeseq.data.sizes.NpyFrames`) or ``.csv`` (one step per row, as an array)."""
    from edgeseq.data.sizes import NpyFrames

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            # read in chunks as it streams (a recording of any length in flat memory); a header that claims more
            # than the file holds is refused here, in one line, before anything is allocated
            arr = NpyFrames(path)
        elif suffix == ".csv":
            from edgeseq.data.sizes import check_table

            check_table(path, max_memory)  # read whole: what that takes against the memory, before reading
            arr = _read_csv(path)
        else:
            raise ShapeError(f"{path}: expected a .npy or .csv file, got {suffix or 'no suffix'}")
    except (OSError, ValueError) as exc:
        if isinstance(exc, EdgeseqError):  # a refusal already in one line (a lying header, a wrong suffix)
            raise
        raise ShapeError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
        raise ShapeError(f"{path}: expected a numeric array of shape (T, d_in) or (T, batch, d_in), got {arr.shape} {arr.dtype}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise ShapeError(f"{path}: no frames to stream (shape {arr.shape})")
    return arr if isinstance(arr, NpyFrames) else np.ascontiguousarray(arr)


def as_model_input(arr: np.ndarray, vocab_size: int, path: Path) -> np.ndarray:
    """float32 features, or int64 token ids for a language model (whole numbers only)."""
    if not vocab_size:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ShapeError(f"{path}: this model takes token ids; the input has values that are not whole numbers")
    return arr.astype(np.int64)


def _read_csv(path: Path) -> np.ndarray:
    with open(path) as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)


def write_outputs(path: Path, ys: np.ndarray) -> None:
    import os

    from edgeseq.fsutil import staging_dir

    with staging_dir(path.parent) as tmp:
        f = tmp / path.name
        if path.suffix.lower() == ".npy":
            np.save(f, ys, allow_pickle=False)
        elif path.suffix.lower() == ".csv":
            np.savetxt(f, ys.reshape(ys.shape[0], -1), delimiter=",", fmt="%.8g")
        else:
            raise ShapeError(f"{path}: output must end in .npy or .csv")
        os.replace(f, path)


@handle_errors
def stream(
    artifact: Annotated[Path, typer.Argument(help="Exported artifact (.onnx / .pte, or its .edgeseq.json), or a model directory.")],
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Input stream: .npy (T, d_in) or (T, batch, d_in), or .csv (one step per row); token ids (T, 1) for language models.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write outputs to .npy or .csv; default: print CSV to stdout.")] = None,
    runtime: Annotated[Optional[RuntimeName], typer.Option(help="Runtime to use (default: the manifest's). 'native': a .pte stepped by edgeseq's C runtime in this process (compiled with g++ on first use, then cached); see docs/streaming.md.")] = None,
    state_in: Annotated[Optional[Path], typer.Option(help="Resume from a state saved by --state-out (must come from the same model).")] = None,
    state_out: Annotated[Optional[Path], typer.Option(help="Save the final state here (.npz) to resume later.")] = None,
    max_memory: MaxMemory = None,
) -> None:
    """Stream INPUT through ARTIFACT one step at a time, feeding the state back, and write the outputs.

    Every step's input is checked against the manifest (shape, dtype, finite values) before the runtime
    sees it. The state can be saved and resumed; a state from another model is refused.
    """
    from edgeseq.cli.common import must_exist
    from edgeseq.fsutil import check_writable

    must_exist(artifact)
    must_exist(input_path, what="--input")
    must_exist(state_in, what="--state-in")

    if output is not None:  # before streaming anything
        if output.suffix.lower() not in (".npy", ".csv"):
            raise ShapeError(f"--output {output}: must end in .npy or .csv")
        check_writable(output, "--output", file=True)
    if state_out is not None:
        if output is not None and state_out.resolve() == output.resolve():
            raise ShapeError("--state-out and --output name the same file")
        check_writable(state_out, "--state-out", file=True)
    import edgeseq
    from edgeseq.runtimes import StreamState

    from edgeseq.data.sizes import check_memory, parse_size

    limit = None if max_memory is None else parse_size(max_memory)
    xs = read_stream(input_path, limit)  # a .npy streams in chunks; its header's claim is checked against the file
    batch = xs.shape[1] if xs.ndim == 3 else 1
    sess = edgeseq.open(artifact, runtime=runtime.value if runtime else None, batch=batch)
    if xs.shape[-1] != sess.d_in:
        raise ShapeError(f"{input_path}: expected {sess.d_in} features per step, got {xs.shape[-1]}")
    # the outputs are kept until they are written: what they take against the memory, before the first step
    check_memory(f"{input_path} (the outputs of its {len(xs):,} steps)", len(xs) * batch * sess.d_out * 4, limit)
    if state_in is not None:
        sess.state = StreamState.load(state_in)
    start = sess.steps
    with progress_bar() as p:
        t = p.add_task(f"streaming on {sess.runtime}", total=len(xs))
        ys_arr = None
        for i in range(len(xs)):
            # frame by frame: an input read in chunks stays so (its dtype converted per frame, not as a copy)
            y = sess.push(as_model_input(np.asarray(xs[i]), sess.vocab_size, input_path))
            if ys_arr is None:
                ys_arr = np.empty((len(xs), *y.shape), y.dtype)
            ys_arr[i] = y
            if i % 64 == 63:
                p.advance(t, 64)
    keep = np.array([sess.spec.is_output(start + i) for i in range(len(ys_arr))], dtype=bool)
    if not keep.all():  # not ready: the network looks `delay` frames ahead of its output
        stride = sess.spec.output_stride
        first = int(np.argmax(keep)) if keep.any() else len(keep)
        ys_arr = ys_arr[keep]
        if stride == 1:
            err.print(f"dropped the first {first} outputs: not ready (the model's delay is {sess.delay} frames)")
        else:
            err.print(f"kept {keep.sum()} of {len(keep)} outputs: the model gives one output every {stride} frames "
                      f"after a delay of {sess.delay} frames")
    if state_out is not None:
        sess.state.save(state_out)
    if output is not None:
        write_outputs(output, ys_arr)
        err.print(f"wrote {output}: {ys_arr.shape[0]} steps x {ys_arr.shape[1:]} outputs ({sess.runtime})")
    else:
        lines = (",".join(f"{v:.8g}" for v in row) for row in ys_arr.reshape(ys_arr.shape[0], -1))
        typer.echo("\n".join(lines))  # plain stdout: no wrapping, pipe-friendly

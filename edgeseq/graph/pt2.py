"""A user's ``torch.export`` archive (``.pt2``) as a model the graph converter takes, checked before it is loaded.

Trust model: ``torch.export.load`` unpickles (``weights_only=False``) every weight or constant that the archive's
JSON configs mark ``"use_pickle": true``, torchbind and opaque constants, legacy ``weights/<model>.pt`` files, and
falls back to a full unpickle of the sample inputs when a weights-only load fails (torch 2.13,
``torch/export/pt2_archive/_package.py``; see ../shared/FACTS.md). An archive is therefore read as a zip first and
refused, by file name, unless it holds only the graph (JSON), raw tensor payloads and sample inputs that load with
``torch.load(weights_only=True)``. Only then is ``torch.export.load`` called. A ``.pt2`` that passes holds tensors
and an ATen graph; it runs no Python of its author's, but it is still a program: convert archives you would run.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn

from edgeseq.errors import ConfigError, ShapeError

# files an archive written by torch.export.save holds (relative to its top folder), and nothing else
_ALLOWED = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
    r"models/[\w.-]+\.json|data/weights/[\w.-]+_weights_config\.json|data/weights/weight_\d+|"
    r"data/constants/[\w.-]+_constants_config\.json|data/constants/tensor_\d+|"
    r"data/sample_inputs/[\w.-]+\.pt|extra/[\w./-]+)$")
EXAMPLE_FRAMES = 16  # the example's length along a dynamic time axis, when the archive's own is not usable


def check_archive(path: Path) -> None:
    """Refuse (one line, naming the file) an archive whose loading would unpickle anything but tensors."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{path}: not a torch.export archive ({exc})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1 or any("/" not in n for n in names):
            raise ConfigError(f"{path}: not a torch.export archive (expected one top folder, found {sorted(tops)[:3]})")
        _check_member_sizes(path, zf)
        rel = {n: n.split("/", 1)[1] for n in names}
        for name, r in rel.items():
            if not _ALLOWED.match(r):
                raise ConfigError(f"{path}: refused: {r} is not part of a tensors-and-graph archive (pickled weights, "
                                  "compiled code or custom objects are not loaded); re-save with torch.export.save")
        models = [r for r in rel.values() if r.startswith("models/")]
        if len(models) != 1:
            raise ConfigError(f"{path}: holds {len(models)} programs; edgeseq converts an archive of one "
                              "(torch.export.save(ep, path))")
        for name, r in rel.items():
            if r.endswith("_config.json") and r.startswith("data/"):
                try:
                    config = json.loads(zf.read(name)).get("config", {})
                except (ValueError, AttributeError):
                    raise ConfigError(f"{path}: {r} is not valid JSON") from None
                for fqn, meta in config.items():
                    if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                        raise ConfigError(f"{path}: refused: {fqn} is stored as a pickle ({r}); loading it could run "
                                          "code. Keep weights and constants as plain dense tensors")
            if r.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                except Exception:
                    raise ConfigError(f"{path}: refused: its sample inputs ({r}) hold more than tensors; loading them "
                                      "could run code") from None


def _check_member_sizes(path: Path, zf: zipfile.ZipFile) -> None:
    """Every member's recorded data within the archive (its offset plus its compressed size), a stored member's
    sizes equal, and all members together (what loading reads: torch.export.load holds the weights in memory) within
    the memory available; from the zip's directory alone."""
    from edgeseq.data.sizes import check_memory, human
    from edgeseq.errors import InputError

    size = path.stat().st_size
    for info in zf.infolist():
        if info.header_offset + info.compress_size > size:
            raise ConfigError(f"{path}: member {info.filename} claims {human(info.compress_size)} at offset "
                              f"{info.header_offset:,}, but the archive holds {human(size)}: it is truncated or its "
                              "directory is wrong")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ConfigError(f"{path}: member {info.filename} is stored uncompressed but records {human(info.file_size)}"
                              f" for {human(info.compress_size)} of data: its directory is wrong")
    try:
        check_memory(f"{path} ({len(zf.infolist())} members)", sum(i.file_size for i in zf.infolist()))
    except InputError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Program:
    """A loaded archive: ``module`` runs the model on its own layout; ``example`` a real-shaped input."""

    module: nn.Module
    example: torch.Tensor
    time_axis: int
    name: str


def plain_module(gm: fx.GraphModule, name: str = "ExportedProgram") -> fx.GraphModule:
    """The program's graph as a plain ``GraphModule``: ``forward(x)`` returning one tensor, without the
    input-shape guards torch.export adds (the step runs the graph on one frame, a length the program was not
    exported for; the converter checks at two lengths that its operations take other lengths), marked as traced
    so that the graph converter keeps its nodes (their module paths and source lines) instead of tracing again."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards_fn") and not node.users:
            graph.erase_node(node)
        elif node.op == "output":
            res = node.args[0]
            while isinstance(res, (tuple, list)) and res:  # (outputs, final state), as RNN-style modules return
                res = res[0]
            node.args = (res,)
    graph._codegen = fx.graph.CodeGen()  # forward(self, x) -> tensor, no pytree (un)flattening
    graph.eliminate_dead_code()
    plain = fx.GraphModule(gm, graph, name)
    plain.meta["edgeseq_traced"] = True
    return plain


def load_program(path: str | Path, time_axis: int | None = None) -> Program:
    """Check and load a ``.pt2`` archive with one tensor input and one tensor output (see the module doc).

    The time axis is the input's one dynamic dimension besides the batch (``Dim("T")`` at export), or
    ``time_axis`` (default 1) for an archive exported at a fixed length (an RNN model: torch 2.13 cannot export
    one with a dynamic length); the converter then checks that the program runs at other lengths."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    check_archive(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise ConfigError(f"{path}: torch.export.load failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    sig = ep.graph_signature
    if len(sig.user_inputs) != 1 or len(sig.user_outputs) != 1:
        raise ShapeError(f"{path}: the program takes {len(sig.user_inputs)} inputs and returns "
                         f"{len(sig.user_outputs)} outputs; edgeseq streams one tensor in, one tensor out")
    placeholder = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == sig.user_inputs[0])
    val = placeholder.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dim() < 2:
        raise ShapeError(f"{path}: the program's input is not a tensor with a batch and a time axis")
    dynamic = [i for i, s in enumerate(val.shape) if not isinstance(s, int) and i > 0]
    if time_axis is None:
        if len(dynamic) > 1:
            raise ShapeError(f"{path}: the input has several dynamic axes {dynamic}; give the time axis (--time-axis)")
        axis = dynamic[0] if dynamic else 1
    elif not -val.dim() <= time_axis < val.dim():
        raise ShapeError(f"--time-axis {time_axis} is not an axis of the input (rank {val.dim()})")
    else:
        axis = time_axis % val.dim()
    args, _kwargs = ep.example_inputs or ((), {})
    example = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
    if example is None or example.dim() != val.dim() or example.shape[axis] < 4:
        lo = 4
        if axis in dynamic:
            sym = val.shape[axis].node.expr
            rng = ep.range_constraints.get(sym)
            lo = max(lo, int(rng.lower) if rng is not None else lo)
        shape = [int(s) if isinstance(s, int) else 1 for s in val.shape]
        shape[axis] = max(lo, EXAMPLE_FRAMES)
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return Program(plain_module(ep.module()).eval(), example.float(), axis, path.stem)


def convert_program(program: Program):
    """The archive's program through the graph converter; a failure to run at other lengths gets the usual cause."""
    from edgeseq.graph.step import convert_graph
    from edgeseq.proof import prove

    try:
        step = convert_graph(program.module, program.example, program.time_axis)
        step.model_parity = prove(program.module, step, program.example)
        return step
    except ShapeError as exc:
        raise ShapeError(f"{exc}. A program exported at a fixed length keeps the sizes it saw (reshapes that fold "
                         "time into the batch); export it with a dynamic time dimension (dynamic_shapes="
                         "{'x': {1: torch.export.Dim('T')}}), or convert the model from Python with "
                         "edgeseq.convert(model, example=x)") from None

"""Mutated data files for the data fuzz (tests/test_fuzz_data.py, benchmarks/fuzz.py --kinds npy,npz,csv,parquet,folder).

The sources are real files made from the bundled Japanese Vowels set (12 LPC features per frame, a speaker per
series): an ``.npy`` of one series, an ``.npz`` of x / lengths / y, a ``.csv`` and a ``.parquet`` table (series,
time, features, label), and a folder of per-series ``.npy`` files with ``labels.csv``. Each case changes one of
them: random bytes, a rewritten ``.npy`` header claiming a huge or odd shape, truncation, a zip directory entry
changed; for text, a BOM, mixed line endings, a very long line, Latin-1 bytes. ``run_cases`` reads each case with
``edgeseq.data.load`` and returns ``ok`` or ``error: <the EdgeseqError>``; any other exception escapes (a crash).
"""

from __future__ import annotations

import io
import random
import shutil
import sys
from pathlib import Path

KINDS = ("npy", "npz", "csv", "parquet", "folder")


def sources(out: Path) -> dict[str, Path]:
    """The real files every case starts from."""
    import numpy as np

    from edgeseq.data import load_dataset

    ds = load_dataset("japanese-vowels")
    x, lengths, y = ds.train.x[:12], ds.train.lengths[:12], ds.train.y[:12]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "series.npy", x[0, : lengths[0]].astype(np.float32))
    np.savez_compressed(out / "set.npz", x=x.astype(np.float32), lengths=lengths, y=y)
    rows = ["series,time," + ",".join(f"f{j}" for j in range(x.shape[2])) + ",label"]
    for i in range(len(x)):
        for t in range(int(lengths[i])):
            rows.append(f"s{i},{t}," + ",".join(f"{v:.5g}" for v in x[i, t]) + f",{int(y[i])}")
    (out / "table.csv").write_text("\n".join(rows) + "\n")
    try:
        import pandas as pd

        header, *body = [r.split(",") for r in rows]
        df = pd.DataFrame(body, columns=header)
        for c in header[1:-1]:
            df[c] = df[c].astype(float)
        df.to_parquet(out / "table.parquet")
    except ImportError:  # pragma: no cover - the [parquet] extra
        pass
    folder = out / "folder"
    folder.mkdir(exist_ok=True)
    for i in range(6):
        np.save(folder / f"s{i}.npy", x[i, : lengths[i]].astype(np.float32))
    (folder / "labels.csv").write_text("file,label\n" + "".join(f"s{i}.npy,{int(y[i])}\n" for i in range(6)))
    return {"npy": out / "series.npy", "npz": out / "set.npz", "csv": out / "table.csv",
            "parquet": out / "table.parquet", "folder": folder}


def _bytes(data: bytes, rng: random.Random, n: int = 8) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _npy_header(data: bytes, rng: random.Random) -> bytes:
    """The same data under a rewritten header: a huge, negative, odd-rank shape or another dtype."""
    import numpy as np

    from edgeseq.data.sizes import npy_header

    f = io.BytesIO(data)
    shape, _dtype, _fortran = npy_header(f, "source")
    rest = data[f.tell():]
    shape = rng.choice([(10 ** 6, 10 ** 6, 12), (2 ** 62,), (-1, 12), (), (0, 12), (3, 0), tuple(s * 7 for s in shape),
                        (shape[0] + 1, *shape[1:]), (1,) * 40])
    descr = rng.choice(["<f4", "<f8", "<i8", "|b1", "<c8", "|u1", "<U4", "|V8", "<M8[s]", ">f4"])
    head = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": rng.random() < 0.2, "shape": shape})
    except ValueError:
        np.lib.format.write_array_header_2_0(head, {"descr": descr, "fortran_order": False, "shape": shape})
    return head.getvalue() + rest


def _text(data: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(7)
    if op == 0:
        return b"\xef\xbb\xbf" + data  # a UTF-8 byte-order mark
    if op == 1:
        return data.replace(b"\n", b"\r\n", rng.randrange(1, 50)).replace(b"\n", b"\r", rng.randrange(1, 50))
    if op == 2:
        lines = data.split(b"\n")
        k = rng.randrange(1, len(lines))
        lines[k] = lines[k] + b"," + b"9" * rng.choice([10 ** 4, 10 ** 6])  # a very long line
        return b"\n".join(lines)
    if op == 3:
        return data[: rng.randrange(len(data))]  # truncated
    if op == 4:
        return _bytes(data, rng, 4).replace(b"s1,", "s1\xe9,".encode("latin-1"), 1)  # Latin-1 in a UTF-8 file
    if op == 5:
        lines = data.split(b"\n")
        k = rng.randrange(1, len(lines))
        lines[k] = b",".join(rng.choice([b"nan", b"inf", b"-", b"", b"1e999", b"0x10", b"1,2"]) for _ in lines[k].split(b","))
        return b"\n".join(lines)
    return _bytes(data, rng, 8)


def _zip(data: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(4)
    if op == 0:
        return data[: rng.randrange(len(data))]
    if op == 1:  # the central directory: its recorded sizes and offsets
        end = data.rfind(b"PK\x01\x02")
        if end > 0:
            b = bytearray(data)
            for _ in range(4):
                b[end + rng.randrange(20, 46)] = rng.randrange(256)
            return bytes(b)
    if op == 2:  # a member's .npy header rewritten (stored again, uncompressed)
        import zipfile

        zin = zipfile.ZipFile(io.BytesIO(data))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            names = zin.namelist()
            pick = rng.choice(names)
            for name in names:
                raw = zin.read(name)
                zout.writestr(name, _npy_header(raw, rng) if name == pick else raw)
        return out.getvalue()
    return _bytes(data, rng, 8)


def make_cases(kind: str, source: Path, out: Path, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        if kind == "folder":
            d = out / f"case{i}"
            shutil.copytree(source, d, dirs_exist_ok=True)
            files = sorted(d.iterdir())
            f = rng.choice(files)
            data = f.read_bytes()
            f.write_bytes(_text(data, rng) if f.suffix == ".csv" else
                          _npy_header(data, rng) if rng.random() < 0.5 else _bytes(data, rng))
            cases.append(d)
            continue
        data = source.read_bytes()
        if kind == "npy":
            data = _npy_header(data, rng) if rng.random() < 0.5 else (
                data[: rng.randrange(len(data))] if rng.random() < 0.3 else _bytes(data, rng))
        elif kind == "npz":
            data = _zip(data, rng)
        elif kind == "csv":
            data = _text(data, rng)
        else:  # parquet
            data = data[: rng.randrange(len(data))] if rng.random() < 0.3 else _bytes(data, rng, rng.choice([1, 8, 64]))
        p = out / f"case{i}{source.suffix}"
        p.write_bytes(data)
        cases.append(p)
    return cases


def run_cases(kind: str, cases: list[Path], emit=None) -> list[str]:
    import edgeseq.data
    from fuzz_cases import outcomes  # tests/fuzz_cases.py (this folder is on sys.path, run as a script or not)

    return outcomes(cases, edgeseq.data.load, emit)


# ------------------------------------------------------------------------------ through the commands that take data
def cli_fixture(out: Path) -> dict[str, Path]:
    """What the commands need besides the data: a tiny rnn classifier of the sources' 12 features and 9 classes (a
    model directory) and its ONNX artifact."""
    import torch

    import edgeseq

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=12, d_out=9, task="classify", d_hidden=4)
    edgeseq.save(model, out / "model")
    art = edgeseq.export(edgeseq.convert(model), out / "art", target="onnx", steps=20)
    return {"model": out / "model", "art": art.path}


# each command that takes data, in its cheapest form, and the data kinds it takes ("out": where it writes)
COMMANDS = {
    "train": (KINDS, lambda case, fx, o: ["train", "--data", case, "--epochs", "1", "--set", "d_hidden=4", "--out", o]),
    "quantize": (KINDS, lambda case, fx, o: ["quantize", fx["model"], "--scheme", "int8-dynamic", "--target", "onnx",
                                             "--calib", case, "--steps", "20", "--out", o]),
    "prune": (KINDS, lambda case, fx, o: ["prune", fx["model"], "--data", case, "--finetune-epochs", "1", "--out", o]),
    "stream": (("npy", "csv"), lambda case, fx, o: ["stream", fx["art"], "--input", case, "--output", f"{o}.npy"]),
    "profile": (KINDS, lambda case, fx, o: ["profile", fx["art"], "--input", case, "--steps", "20", "--warmup", "0",
                                            "--streams", "1", "--op-steps", "0", "--parity-steps", "20", "--out", o]),
}


def commands_for(kind: str) -> list[str]:
    return [name for name, (kinds, _) in COMMANDS.items() if kind in kinds]


def run_cli_cases(kind: str, cases: list[Path], fixture: dict[str, Path], work: Path, emit=None) -> list[str]:
    """Each case through one of the commands that take its kind (in turn), in this process (typer's runner):
    ``ok`` (exit 0), or ``error: <its one error line>`` (exit 1, one line, nothing written where the command
    writes). Anything else raises: a traceback, another exit code, several lines, a half-written output."""
    import warnings

    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    warnings.simplefilter("ignore")
    runner = CliRunner()
    names = commands_for(kind)
    lines = []
    for i, case in enumerate(cases):
        name = names[i % len(names)]
        out = work / f"{name}{i}"
        args = [str(a) for a in COMMANDS[name][1](case, fixture, out)]
        before = set(work.iterdir())
        r = runner.invoke(app, args)
        if r.exit_code not in (0, 1) or (r.exception is not None and not isinstance(r.exception, SystemExit)):
            raise RuntimeError(f"{name} on {case}: exit {r.exit_code}, {type(r.exception).__name__}: {r.output[-500:]}")
        if r.exit_code == 0:
            lines.append(f"ok {name}")
            if emit is not None:
                emit(lines[-1])
            for p in set(work.iterdir()) - before:  # what it wrote: not kept (a thousand cases of it)
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            continue
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        if len(errors) != 1 or "Traceback" in r.output:
            raise RuntimeError(f"{name} on {case}: exit 1 without one error line: {r.output[-500:]}")
        written = sorted(set(work.iterdir()) - before)
        if written:
            raise RuntimeError(f"{name} on {case}: refused, yet wrote {[p.name for p in written]}")
        lines.append(f"error: {name}: " + " ".join(" ".join(errors[0].split()[1:]).split()))
        if emit is not None:
            emit(lines[-1])
    return lines


MARK = "CASE "

if __name__ == "__main__":  # python tests/fuzz_data.py [--cli FIXTURE_DIR] KIND CASE...: a line per case after MARK
    def emit(line):  # as each case ends: a process that dies is blamed on its case
        print(MARK + line, flush=True)

    args = sys.argv[1:]
    if args[0] == "--cli":
        import tempfile

        fixture_dir = Path(args[1])
        fixture = {"model": fixture_dir / "model", "art": fixture_dir / "art.onnx"}
        with tempfile.TemporaryDirectory() as work:
            run_cli_cases(args[2], [Path(p) for p in args[3:]], fixture, Path(work), emit)
    else:
        run_cases(args[0], [Path(p) for p in args[1:]], emit)
    print("PEAK", [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0], flush=True)

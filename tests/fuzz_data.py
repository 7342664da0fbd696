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


def run_cases(kind: str, cases: list[Path]) -> list[str]:
    import edgeseq.data
    from fuzz_cases import outcomes  # tests/fuzz_cases.py (this folder is on sys.path, run as a script or not)

    return outcomes(cases, edgeseq.data.load)


MARK = "CASE "

if __name__ == "__main__":  # python tests/fuzz_data.py KIND CASE...: one line per case on stdout, after MARK
    for line in run_cases(sys.argv[1], [Path(p) for p in sys.argv[2:]]):
        print(MARK + line, flush=True)
    print("PEAK", [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0], flush=True)

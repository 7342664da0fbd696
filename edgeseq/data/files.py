"""A user's own data as a :class:`~edgeseq.data.SequenceDataset`: ``.npz``, ``.npy``, ``.csv`` / ``.tsv``,
``.parquet`` or a folder of per-series files (see docs/data.md for the formats).

Each reader (``READERS``, keyed by suffix; a folder has its own) turns a file into :class:`Raw`: a list of series
(T_i, C) kept at their own lengths, optional labels (a class per series, or per-step targets) and an optional
train/test mark. :func:`assemble` validates them (one line per problem, naming the file, the series and the step)
and builds the data set: the task read from the labels' shape, the split from the file or made with a seed.
Nothing is unpickled: ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeseq.errors import InputError, require
from edgeseq.registry import Registry

TASKS = ("classify", "sequence", "unlabeled")


@dataclass(frozen=True)
class DataOptions:
    """How to read a user's file. Columns default to ``series``, ``time``, ``label`` and ``split`` when a table
    has them; every other numeric column is a feature unless ``features`` lists them."""

    series: str | None = None  # table: the series-id column (default "series" if present; else one series; "": none)
    time: str | None = None  # table: the time column (default "time" if present): rows sorted by it, never backwards
    label: str | None = None  # table: the label column (default "label" if present)
    features: tuple[str, ...] | None = None  # table: the feature columns (default: all other numeric columns)
    split: str | None = None  # table: the train/test column (default "split" if present)
    task: str | None = None  # classify | sequence | unlabeled (default: from the labels' shape)
    test_fraction: float = 0.2  # of the series, when the file has no split
    seed: int = 0  # of that split
    max_memory: int | None = None  # bytes a read may take at most (besides the memory available): --max-memory
    # what the command needs of the data, checked from the file's header (an .npy header, an .npz's members, a
    # table's header row or parquet schema, a folder's listing) before any data is read: see :func:`expect`
    d_in: int | None = None  # the model's features per frame
    labels_for: str | None = None  # why labels are needed ("training", "the model's classify metric"); None: not


@dataclass
class Raw:
    series: list[np.ndarray]  # (T_i, C) each, float64
    labels: list | np.ndarray | None = None  # (N,) class per series (ints or names), or N arrays (T_i, d_out)
    test: np.ndarray | None = None  # (N,) bool: the series is in the test split
    names: list[str] = field(default_factory=list)  # how each series is called in messages
    features: list[str] | None = None


READERS: Registry[Callable[[Path, DataOptions], Raw]] = Registry("data file format")


def _names(path: Path, n: int, what: str = "series") -> list[str]:
    return [f"{path.name} {what} {i}" for i in range(n)]


# ------------------------------------------------------------------------------------------------ arrays
def _npz(path: Path, opts: DataOptions) -> Raw:
    from edgeseq.data.sizes import check_npz

    members = check_npz(path, opts.max_memory)  # every member's header against its size, the whole against memory
    _expect_arrays(path, members, opts)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable .npz ({' '.join(str(exc).split())[:120]})") from None
    keys = sorted(arrays)
    if "x_train" in arrays and "x_test" in arrays:  # the split as separate arrays: x_train, y_train, x_test, y_test
        parts = []
        for part in ("train", "test"):
            sub_arrays = {k[: -len(part) - 1]: v for k, v in arrays.items() if k.endswith(f"_{part}")}
            parts.append(_npz_arrays(path, sub_arrays, sorted(sub_arrays)))
        labels = [p.labels for p in parts]
        if (labels[0] is None) != (labels[1] is None):
            raise InputError(f"{path}: y_train and y_test come together (one of them is missing)")
        both = None
        if labels[0] is not None:
            both = (list(labels[0]) + list(labels[1]) if isinstance(labels[0], list) or isinstance(labels[1], list)
                    else np.concatenate([labels[0], labels[1]]))
        n_train, n_test = len(parts[0].series), len(parts[1].series)
        return Raw(parts[0].series + parts[1].series, both, np.array([False] * n_train + [True] * n_test),
                   _names(path, n_train, "train series") + _names(path, n_test, "test series"))
    return _npz_arrays(path, arrays, keys)


def _npz_arrays(path: Path, arrays: dict, keys: list[str]) -> Raw:
    per = sorted((k for k in keys if k.startswith("x_") and k[2:].isdigit()), key=lambda k: int(k[2:]))
    if "x" in arrays:
        x = arrays["x"]
        if x.ndim != 3:
            raise InputError(f"{path}: x has shape {x.shape}; expected (series, time, features)")
        lengths = arrays.get("lengths")
        if lengths is not None:
            if lengths.dtype.kind not in "iu":
                raise InputError(f"{path}: lengths holds {lengths.dtype} values; expected whole numbers of frames")
            if lengths.shape != (len(x),) or lengths.min(initial=1) < 0 or lengths.max(initial=0) > x.shape[1]:
                raise InputError(f"{path}: lengths has shape {lengths.shape} and range [{lengths.min(initial=0)}, "
                                 f"{lengths.max(initial=0)}]; expected ({len(x)},) within 0..{x.shape[1]}")
            series = [x[i, : int(n)] for i, n in enumerate(lengths)]
        else:
            series = list(x)
    elif per:
        series = [arrays[k] for k in per]
        for k, s in zip(per, series):
            if s.ndim != 2:
                raise InputError(f"{path}: {k} has shape {s.shape}; expected (time, features)")
    else:
        raise InputError(f"{path}: holds {keys or 'no arrays'}; expected x (series, time, features) or x_0, x_1, ... "
                         "(time, features) per series")
    labels = arrays.get("y")
    if labels is not None and labels.ndim == 3:  # per-step targets (N, T, d_out), cut to each series' length
        if len(labels) != len(series) or labels.shape[1] < max(len(s) for s in series):
            raise InputError(f"{path}: y has shape {labels.shape}; per-step targets need ({len(series)}, "
                             f">= {max(len(s) for s in series)}, d_out)")
        labels = [labels[i, : len(s)] for i, s in enumerate(series)]
    elif labels is None and any(k.startswith("y_") for k in keys):
        labels = [arrays.get(f"y_{i}") for i in range(len(series))]
        if any(v is None for v in labels):
            raise InputError(f"{path}: has y_* arrays but not one per series (x_0 ... x_{len(series) - 1})")
    test = None
    if "split" in arrays:
        test = _split_marks(arrays["split"], len(series), f"{path}: split")
    return Raw([np.asarray(s) for s in series], labels, test, _names(path, len(series)))


def _npy(path: Path, opts: DataOptions) -> Raw:
    from edgeseq.data.sizes import check_npy

    shape, dtype = check_npy(path, opts.max_memory)  # the header's claim against the file and the memory
    _expect_arrays(path, {"x": (shape, dtype)}, opts, labels="an .npy holds one array and no labels")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy ({' '.join(str(exc).split())[:120]})") from None
    if a.ndim == 2:
        return Raw([a], None, None, [path.name])
    if a.ndim == 3:
        return Raw(list(a), None, None, _names(path, len(a)))
    raise InputError(f"{path}: an array of shape {a.shape}; expected one series (time, features) or a batch "
                     "(series, time, features)")


def _expect_arrays(path: Path, members: dict, opts: DataOptions, labels: str | None = None) -> None:
    """What ``opts`` expects (features per frame, labels) against an array file's headers, before reading it."""
    x = next((members[k] for k in ("x", "x_train", "x_0") if k in members), None)
    if x is None:
        return  # no series where they belong: the read says what it expected
    shape, dtype = x
    if dtype.kind not in "fiub":
        raise InputError(f"{path}: its header gives values of type {dtype}; expected real numbers")
    if opts.d_in is not None and len(shape) >= 2 and shape[-1] != opts.d_in:
        raise InputError(f"{path}: {shape[-1]} features per frame (from its header, {shape}); the model takes "
                         f"{opts.d_in}; nothing was read")
    if opts.labels_for and not any(k == "y" or k.startswith("y_") for k in members):
        why = labels or f"no y array among its members ({', '.join(sorted(members)) or 'none'})"
        raise InputError(f"{path}: no labels ({why}), and {opts.labels_for} needs them (y, a label column, "
                         "labels.csv or sub-folders); nothing was read")


def _split_marks(values, n: int, where: str) -> np.ndarray:
    marks = [str(v).strip().lower() for v in np.asarray(values).reshape(-1)]
    if len(marks) != n:
        raise InputError(f"{where} has {len(marks)} entries for {n} series")
    bad = sorted({m for m in marks if m not in ("train", "test")})
    if bad:
        raise InputError(f"{where} holds {bad[:3]}; expected 'train' or 'test'")
    return np.array([m == "test" for m in marks])


# ------------------------------------------------------------------------------------------------ tables
def _header_row(path: Path) -> list[str] | None:
    """A CSV / TSV file's first non-empty row, read alone (at most 1 MiB of it); None where it cannot be read so
    (the whole read then says why)."""
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="") as f:
            for _ in range(1000):
                line = f.readline(1 << 20)
                if not line:
                    return None
                row = next(csv.reader([line], delimiter=delim), [])
                if row and any(c.strip() for c in row):
                    return [c.strip() for c in row] if line.endswith(("\n", "\r")) else None
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def _expect_columns(path: Path, header: list[str] | None, opts: DataOptions) -> None:
    """What ``opts`` expects (features per frame, labels) against a table's header, before its rows are read."""
    if header is None or not (opts.d_in is not None or opts.labels_for):
        return
    try:
        cols = {k: _column(header, getattr(opts, k), k, path, what)
                for k, what in (("series", "series-id"), ("time", "time"), ("label", "label"), ("split", "split"))}
    except InputError:
        return  # a column asked for and absent: the read says so, as it always has
    if opts.labels_for and cols["label"] is None:
        raise InputError(f"{path}: no labels (no {opts.label or 'label'!r} column among {', '.join(header[:12])}"
                         f"{' ...' if len(header) > 12 else ''}), and {opts.labels_for} needs them (--label-col names "
                         "it); nothing was read")
    n = len(opts.features) if opts.features is not None else len(header) - len({c for c in cols.values() if c is not None})
    if opts.d_in is not None and n != opts.d_in:
        what = "--features" if opts.features is not None else "every column but the series, time, label and split ones"
        raise InputError(f"{path}: {n} feature columns ({what}, from its header); the model takes {opts.d_in} "
                         "features per frame (--features names them); nothing was read")


def _read_rows(path: Path, max_memory: int | None = None, opts: DataOptions | None = None
               ) -> tuple[list[str], list[list[str]]]:
    from edgeseq.data.sizes import check_table

    if opts is not None:
        _expect_columns(path, _header_row(path), opts)  # the header row alone, before the memory check and the read
    check_table(path, max_memory)  # what reading it takes against the memory, before reading
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=delim))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read it as {'TSV' if delim == chr(9) else 'CSV'} ({exc})") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path}: empty file")
    header, body = [c.strip() for c in rows[0]], rows[1:]
    if not body:
        raise InputError(f"{path}: a header and no rows")
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise InputError(f"{path}: row {i + 2} has {len(r)} fields; the header has {len(header)}")
    return header, body


def _parquet_rows(path: Path, max_memory: int | None = None, opts: DataOptions | None = None
                  ) -> tuple[list[str], list[list[str]]]:
    pd = require("pandas", "parquet")
    require("pyarrow", "parquet")
    from edgeseq.data.sizes import check_parquet

    names = check_parquet(path, max_memory)  # the footer against the file, the table it claims against the memory
    if opts is not None:
        _expect_columns(path, names, opts)  # the schema's column names, from the footer, before the rows are read
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        raise InputError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    if df.empty:
        raise InputError(f"{path}: empty table")
    return [str(c) for c in df.columns], df.astype(str).values.tolist()


def _column(header: list[str], name: str | None, default: str, path: Path, what: str) -> int | None:
    if name == "":
        return None  # asked for none (a table with a 'series' column that is a feature, say)
    if name is None:
        return header.index(default) if default in header else None
    if name not in header:
        raise InputError(f"{path}: no {what} column {name!r} (columns: {', '.join(header)})")
    return header.index(name)


def _float(v: str, path: Path, row: int, col: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise InputError(f"{path}: row {row}, column {col!r}: {v!r} is not a number") from None


def _table(path: Path, opts: DataOptions, rows=None) -> Raw:
    header, body = rows or _read_rows(path, opts.max_memory, opts)
    sid = _column(header, opts.series, "series", path, "series-id")
    tcol = _column(header, opts.time, "time", path, "time")
    lcol = _column(header, opts.label, "label", path, "label")
    scol = _column(header, opts.split, "split", path, "split")
    special = {c for c in (sid, tcol, lcol, scol) if c is not None}
    if opts.features is not None:
        missing = [f for f in opts.features if f not in header]
        if missing:
            raise InputError(f"{path}: no feature column {missing[0]!r} (columns: {', '.join(header)})")
        fcols = [header.index(f) for f in opts.features]
    else:
        fcols = [j for j in range(len(header)) if j not in special]
        for j in fcols:
            bad = _first_text(body, j)
            if bad is not None:
                raise InputError(f"{path}: column {header[j]!r} is not numeric ({body[bad][j]!r} at row {bad + 2}); "
                                 "name the feature columns with --features (and the series, time and label columns "
                                 "with --series-col, --time-col, --label-col)")
    if not fcols:
        raise InputError(f"{path}: no numeric feature columns (columns: {', '.join(header)}); name them with --features")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(body):
        groups.setdefault(r[sid].strip() if sid is not None else "", []).append(i)
    series, labels, marks, names = [], [], [], []
    for key, idx in groups.items():
        name = f"{path.name} series {key!r}" if sid is not None else path.name  # in messages
        if tcol is not None:
            t = [_float(body[i][tcol], path, i + 2, header[tcol]) for i in idx]
            back = next((k for k in range(1, len(t)) if t[k] < t[k - 1]), None)
            if back is not None:
                where = f"{path}: {name}" if sid is not None else str(path)
                raise InputError(f"{where}: the time column {header[tcol]!r} goes backwards at row "
                                 f"{idx[back] + 2} ({t[back - 1]:g} -> {t[back]:g})")
        series.append(np.array([[_float(body[i][j], path, i + 2, header[j]) for j in fcols] for i in idx]))
        names.append(name)
        if lcol is not None:
            vals = {body[i][lcol].strip() for i in idx}
            if len(vals) != 1:
                raise InputError(f"{path}: {name} has {len(vals)} different labels ({sorted(vals)[:3]}); a class "
                                 "label is one per series")
            labels.append(vals.pop())
        if scol is not None:
            vals = {body[i][scol].strip() for i in idx}
            if len(vals) != 1:
                raise InputError(f"{path}: {name} is in both splits; the split column is one value per series")
            marks.append(vals.pop())
    test = _split_marks(marks, len(series), f"{path}: column {header[scol]!r}") if scol is not None else None
    return Raw(series, labels if lcol is not None else None, test, names, [header[j] for j in fcols])


def _first_text(body: list[list[str]], j: int) -> int | None:
    """The first row whose column ``j`` is not a number (None: all are)."""
    for i, r in enumerate(body):
        try:
            float(r[j])
        except ValueError:
            return i
    return None


READERS.register(".npz", _npz)
READERS.register(".npy", _npy)
READERS.register(".csv", _table)
READERS.register(".tsv", _table)
READERS.register(".parquet", lambda path, opts: _table(path, opts, _parquet_rows(path, opts.max_memory, opts)))


# ------------------------------------------------------------------------------------------------ folders
def _folder(path: Path, opts: DataOptions) -> Raw:
    """Per-series .npy / .csv files; labels from labels.csv (file,label) or from sub-folder names."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".npy", ".csv", ".tsv")
                   and p.name != "labels.csv")
    if not files:
        raise InputError(f"{path}: no .npy or .csv series in the folder")
    from dataclasses import replace

    from edgeseq.data.sizes import check_memory, claim

    table = path / "labels.csv"
    if opts.labels_for and not table.exists() and not all(len(f.relative_to(path).parts) > 1 for f in files):
        raise InputError(f"{path}: no labels (no labels.csv, and not every series in a sub-folder named by its class), "
                         f"and {opts.labels_for} needs them; nothing was read")
    # all of its files together against the memory, from their headers and sizes, before reading any
    check_memory(f"{path} ({len(files)} files)", sum(claim(f) for f in files), opts.max_memory)
    series, names = [], []
    member = replace(opts, labels_for=None)  # a series file holds no labels of its own; its features are checked
    for f in files:
        raw = READERS.get(f.suffix.lower())(f, member)
        if len(raw.series) != 1:
            raise InputError(f"{f}: holds {len(raw.series)} series; a folder holds one series per file")
        series.append(raw.series[0])
        names.append(str(f.relative_to(path)))
    labels = None
    if table.exists():
        header, body = _read_rows(table)
        if len(header) < 2:
            raise InputError(f"{table}: expected two columns, file and label")
        given = {r[0].strip(): r[1].strip() for r in body}
        missing = [n for n in names if n not in given and Path(n).name not in given]
        if missing:
            raise InputError(f"{table}: no label for {missing[0]}")
        labels = [given.get(n, given.get(Path(n).name)) for n in names]
    elif all(len(Path(n).parts) > 1 for n in names):
        labels = [Path(n).parts[0] for n in names]  # sub-folder names are the classes
    return Raw(series, labels, None, [f"{path.name}/{n}" for n in names])


# ------------------------------------------------------------------------------------------------ assembling
def read(path: Path, opts: DataOptions) -> Raw:
    if path.is_dir():
        return _folder(path, opts)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise InputError(f"{path}: unknown data format {suffix or '(no suffix)'}; expected one of "
                         f"{', '.join(sorted(READERS.keys()))} or a folder")
    return READERS.get(suffix)(path, opts)


def _check_values(raw: Raw, source: Path) -> None:
    if not raw.series:
        raise InputError(f"{source}: no series")
    widths = {s.shape[1] if s.ndim == 2 else None for s in raw.series}
    if None in widths or len(widths) != 1:
        shapes = sorted({tuple(s.shape) for s in raw.series})[:3]
        raise InputError(f"{source}: series of different feature counts or ranks {shapes}; all must be (time, features)")
    for name, s in zip(raw.names, raw.series):
        if len(s) == 0:
            raise InputError(f"{name}: empty series (0 frames)")
        if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
            raise InputError(f"{name}: values of type {s.dtype}; expected real numbers")
        bad = np.argwhere(~np.isfinite(s))
        if len(bad):
            t, c = bad[0]
            raise InputError(f"{name}: {'NaN' if np.isnan(s[t, c]) else 'Inf'} at step {t}, feature {c}")


def _task(raw: Raw, opts: DataOptions, source: Path) -> tuple[str, int, list | None]:
    """(task, d_out, class names): per-step arrays are targets (sequence), one value per series a class."""
    if opts.task is not None and opts.task not in TASKS:
        raise InputError(f"task {opts.task!r}: expected one of {', '.join(TASKS)}")
    if raw.labels is None:
        if opts.task not in (None, "unlabeled"):
            raise InputError(f"{source}: task {opts.task} needs labels, and the data has none (a label column, y, "
                             "labels.csv or sub-folders)")
        return "unlabeled", 0, None
    per_step = not isinstance(raw.labels, np.ndarray) and all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in raw.labels)
    if per_step:
        for name, s, y in zip(raw.names, raw.series, raw.labels):
            if len(y) != len(s):
                raise InputError(f"{name}: {len(y)} targets for {len(s)} frames")
            if not np.all(np.isfinite(y)):
                raise InputError(f"{name}: NaN or Inf in its targets")
        if opts.task == "classify":
            raise InputError(f"{source}: per-step targets cannot be classes (one label per series)")
        return "sequence", int(np.asarray(raw.labels[0]).reshape(len(raw.labels[0]), -1).shape[1]), None
    if opts.task == "sequence":
        raise InputError(f"{source}: task sequence needs per-step targets; the labels are one per series")
    shape = np.shape(raw.labels) if isinstance(raw.labels, np.ndarray) else (len(raw.labels),)
    if shape not in ((len(raw.series),), (len(raw.series), 1)):  # one class per series (a column of them too)
        raise InputError(f"{source}: labels of shape {shape} for {len(raw.series)} series; expected one class per "
                         f"series ({len(raw.series)},) or per-step targets (series, time, d_out)")
    return "classify", 0, None


def _classes(labels) -> tuple[np.ndarray, list[str]]:
    """Class ids 0..K-1 from labels: integers kept as they are (0..max), anything else in sorted order."""
    vals = [str(v).strip() for v in np.asarray(labels, dtype=object).reshape(-1)]
    if all(v.lstrip("-").isdigit() for v in vals):
        ids = np.array([int(v) for v in vals], dtype=np.int64)
        if ids.min() < 0:
            raise InputError(f"class label {ids.min()} is negative; classes are 0, 1, ...")
        return ids, [str(i) for i in range(int(ids.max()) + 1)]
    names = sorted(set(vals))
    return np.array([names.index(v) for v in vals], dtype=np.int64), names


def _pad(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    x = np.zeros((len(series), int(lengths.max()), series[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(series):
        x[i, : len(s)] = s
    return x, lengths


def assemble(raw: Raw, source: Path, opts: DataOptions):
    from edgeseq.data import SequenceDataset, Split

    _check_values(raw, source)
    task, d_out, _ = _task(raw, opts, source)
    n = len(raw.series)
    classes = None
    if task == "classify":
        ids, classes = _classes(raw.labels)
        d_out = len(classes)
    if raw.test is not None:
        test = raw.test
        how = f"split from the file: {int((~test).sum())} train, {int(test.sum())} test series"
    elif n == 1:
        test = np.array([False])
        how = "one series: it is both the train and the test split"
    else:
        k = min(n - 1, max(1, int(round(n * opts.test_fraction))))
        order = np.random.default_rng(opts.seed).permutation(n)
        test = np.zeros(n, dtype=bool)
        test[order[:k]] = True
        how = f"split made with seed {opts.seed}: {n - k} train, {k} test series ({opts.test_fraction:.0%} test)"
    if not (~test).any() or (not test.any() and n > 1):
        raise InputError(f"{source}: the split leaves no {'train' if not (~test).any() else 'test'} series")

    def split(mask: np.ndarray) -> Split:
        idx = np.flatnonzero(mask)
        x, lengths = _pad([raw.series[i] for i in idx])
        if task == "classify":
            y = ids[idx]
        elif task == "sequence":
            y, _ = _pad([np.asarray(raw.labels[i], dtype=np.float64).reshape(len(raw.series[i]), -1) for i in idx])
        else:
            y = np.zeros(len(idx), dtype=np.int64)
        return Split(x, lengths, y)

    train = split(~test)
    test_split = split(test) if test.any() else train
    ds = SequenceDataset(source.name, task, raw.series[0].shape[1], d_out, train, test_split, source=str(source))
    ds.classes, ds.note, ds.features = classes, how, raw.features
    return ds


def load_file(source: str | Path, opts: DataOptions | None = None):
    path = Path(source)
    opts = opts or DataOptions()
    return assemble(read(path, opts), path, opts)

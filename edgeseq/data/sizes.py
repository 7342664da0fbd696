"""What a user's array file claims, checked before anything is allocated.

A ``.npy`` header states a shape and a dtype; numpy allocates what they take before reading a byte of data, so a
200-byte file that claims (100000, 100000, 12) float32 ends in an allocation error of 447 GiB. Here the claim is
compared with the bytes the file holds after its header (for an ``.npz`` member: the uncompressed size its zip
entry records), and what the arrays would take in memory with the memory available (``MemAvailable`` of
``/proc/meminfo``, or an explicit limit: ``--max-memory``, ``DataOptions.max_memory``); either mismatch is one line
naming the file and both sizes. A parquet file's footer is checked the same way (its column chunks must lie within
the file); a text table, which states no size, is charged what reading it takes per byte (measured below).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeseq.errors import InputError


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


MAX_HEADER = 1 << 16  # bytes of an .npy header read at most (numpy writes ~128; its own reader stops at 10,000)


def npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of the ``.npy`` header at ``f``'s position, read with public parts only (the
    magic, the header's length and a Python literal); ``f`` is left at the start of the data."""
    import ast
    import struct

    def bad(why: str) -> InputError:
        return InputError(f"{where}: not a readable .npy ({why})")

    magic = f.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise bad("no .npy magic at its start")
    major = magic[6]
    if major not in (1, 2, 3):
        raise bad(f"format version {major}.{magic[7]}")
    size_bytes = f.read(2 if major == 1 else 4)
    if len(size_bytes) < (2 if major == 1 else 4):
        raise bad("ends inside its header")
    n = struct.unpack("<H" if major == 1 else "<I", size_bytes)[0]
    if n > MAX_HEADER:
        raise bad(f"a header of {n} bytes")
    raw = f.read(n)
    if len(raw) < n:
        raise bad("ends inside its header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        d = ast.literal_eval(text)
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError("a header without descr, fortran_order and shape")
        shape, fortran = d["shape"], d["fortran_order"]
        if not isinstance(shape, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
            raise ValueError(f"shape {shape!r}")
        if not isinstance(fortran, bool):
            raise ValueError(f"fortran_order {fortran!r}")
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise bad(" ".join(str(exc).split())[:120]) from None
    return shape, dtype, fortran


def npy_claim(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes the data takes) from an ``.npy`` header; ``f`` is left at the start of the data."""
    shape, dtype, _fortran, need = _claim(f, where)
    return shape, dtype, need


def _claim(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    shape, dtype, fortran = npy_header(f, where)
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects (dtype {dtype}); edgeseq reads numbers only, never pickles")
    if any(s < 0 for s in shape):
        raise InputError(f"{where}: its header claims a negative size {shape}")
    return shape, dtype, fortran, math.prod(shape) * dtype.itemsize


def _checked_file(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int, int]:
    """(shape, dtype, fortran_order, bytes of data, data offset) of an ``.npy`` whose header claims no more than
    the file holds."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            shape, dtype, fortran, need = _claim(f, str(path))
            offset = f.tell()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if need > size - offset:
        raise _claimed_over(str(path), shape, dtype, need, size - offset, "the file holds")
    return shape, dtype, fortran, need, offset


def _claimed_over(where: str, shape, dtype, need: int, have: int, holder: str) -> InputError:
    return InputError(f"{where}: its header claims {shape} {dtype} ({human(need)}), but {holder} {human(have)} of "
                      "data: the file is truncated or its header is wrong")


def check_memory(where: str, need: int, max_memory: int | None = None) -> None:
    """Refuse reading ``need`` bytes when they exceed the memory available (or ``max_memory``)."""
    avail = available_memory()
    limit = min(v for v in (avail, max_memory) if v is not None) if (avail, max_memory) != (None, None) else None
    if limit is not None and need > limit:
        what = "the limit given" if max_memory is not None and limit == max_memory else "the memory available"
        raise InputError(f"{where}: reading it takes {human(need)}, more than {what} ({human(limit)})")


def check_whole(path: Path, error=InputError, *, cap: int | None = None, what: str = "file", factor: int = 1) -> int:
    """The size of a file that is read whole (a manifest, a config, a saved state, a weights file), refused with
    ``error`` before it is read when it is past ``cap`` (what such a file never exceeds) or when ``factor`` times it
    (what reading it takes) is more than the memory available. Returns the size."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if cap is not None and size > cap:
        raise error(f"{path}: {human(size)}, but a {what} is at most {human(cap)}: not an edgeseq {what}")
    try:
        check_memory(f"{path} ({what})", size * factor)
    except InputError as exc:
        raise error(str(exc)) from None
    return size


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000 ** 4, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """``"512MiB"``, ``"2G"``, ``"1.5GB"``, ``"1000000"`` as bytes (K/M/G/T and KiB/MiB/... are powers of 1024,
    KB/MB/GB/TB of 1000); a clear error for anything else."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise InputError(f"--max-memory {text!r}: expected a size such as 512MiB, 2GiB or 1500000000 (bytes)")
    return int(float(m.group(1)) * _UNITS[unit])


# what reading a table takes, per byte of a CSV / TSV file and per cell of a parquet table: the readers hold every
# cell as a Python string before converting it (measured here: a 14.5 MiB CSV of 200,000 x 8 values peaked 418 MiB
# above the start, 29x; the same table as parquet 454 MiB, 298 bytes per cell). Rounded up.
TEXT_BYTES_PER_BYTE = 32
PARQUET_BYTES_PER_CELL = 320


def check_table(path: Path, max_memory: int | None = None) -> None:
    """Refuse a CSV / TSV file whose reading would take more memory than there is, before reading it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    check_memory(f"{path} ({human(size)} of text)", size * TEXT_BYTES_PER_BYTE, max_memory)


def check_parquet(path: Path, max_memory: int | None = None) -> list[str]:
    """A parquet file's footer against the file: every column chunk it lists must lie within the file, and the
    table it claims (rows x columns) must fit in memory when read; only the footer is read. Returns the table's
    column names (from the footer's schema, a pandas index left out)."""
    import pyarrow.parquet as pq

    try:
        size = path.stat().st_size
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
        md = pf.metadata
        # one row of every column first: pyarrow's reader checks each column chunk's metadata (and its range
        # against the file) and raises, where the Python accessors below abort the process on some corrupt
        # chunks (pyarrow 26: "Definition level histogram size mismatch" thrown through a Cython call);
        # unbuffered, it reads a page per column, not the row group. A chunk past the end of the file is
        # reported below with both sizes (its metadata was read whole to get there)
        try:
            next(pf.iter_batches(batch_size=1), None)
        except OSError as exc:
            if "Invalid column metadata" not in str(exc):
                raise
        names = [str(n) for n in pf.schema_arrow.names if not str(n).startswith("__index_level_")]
        ends = []
        for i in range(md.num_row_groups):
            for j in range(md.num_columns):
                c = md.row_group(i).column(j)
                start = min(c.data_page_offset, c.dictionary_page_offset) if c.has_dictionary_page else c.data_page_offset
                ends.append((start, c.total_compressed_size))
    except OSError as exc:
        raise InputError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())[:120]})") from None
    except Exception as exc:  # pyarrow's own types for a corrupt footer
        raise InputError(f"{path}: not a readable parquet file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:120]})") from None
    claimed = sum(n for _, n in ends)
    if claimed > size or any(o < 0 or n < 0 or o + n > size for o, n in ends):
        raise InputError(f"{path}: its footer claims {md.num_rows:,} rows in column chunks of {human(claimed)}, but "
                         f"the file holds {human(size)}: the file is truncated or its footer is wrong")
    check_memory(f"{path} ({md.num_rows:,} rows x {md.num_columns} columns)",
                 md.num_rows * md.num_columns * PARQUET_BYTES_PER_CELL, max_memory)
    return names


def claim(path: Path) -> int:
    """Bytes that reading ``path`` (a series file of a folder: ``.npy``, ``.csv``, ``.tsv``) takes, from its header
    or its size; the header is checked against the file as in :func:`check_npy`."""
    if path.suffix.lower() == ".npy":
        return _checked_file(path)[3]
    return path.stat().st_size * TEXT_BYTES_PER_BYTE


def check_npy(path: Path, max_memory: int | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an ``.npy`` file whose header agrees with its size and whose data fits in memory."""
    shape, dtype, _fortran, need, _offset = _checked_file(path)
    check_memory(str(path), need, max_memory)
    return shape, dtype


def check_npz(path: Path, max_memory: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an ``.npz`` whose members' headers agree with their recorded sizes and
    whose arrays fit in memory together; only the members' headers are read."""
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                where = f"{path} member {info.filename}"
                with zf.open(info) as f:
                    shape, dtype, need = npy_claim(f, where)
                    header = f.tell()
                if need > info.file_size - header:
                    raise _claimed_over(where, shape, dtype, need, info.file_size - header, "its zip entry records")
                found[info.filename[:-4]] = (shape, dtype)
                total += need
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable .npz ({' '.join(str(exc).split())[:120]})") from None
    check_memory(str(path), total, max_memory)
    return found


class NpyFrames:
    """The frames of a (T, ...) ``.npy`` read in chunks from the file (never whole, never memory-mapped: mapped
    pages count as resident once read), for streaming a long recording in flat memory. ``len`` is T; indexing
    ``frames[i]`` reads frame i through a chunk cache of ``chunk`` frames."""

    CHUNK_BYTES = 4 << 20

    def __init__(self, path: Path):
        shape, dtype, fortran, _need, self.offset = _checked_file(path)
        if fortran and len(shape) > 1:
            raise InputError(f"{path}: stored in Fortran order; save it in C order (np.save of np.ascontiguousarray)")
        self.path, self.shape, self.dtype, self.ndim = path, shape, dtype, len(shape)
        self.frame_shape = shape[1:]
        self.frame_items = math.prod(self.frame_shape)
        self.size = math.prod(shape)
        self.chunk = max(1, self.CHUNK_BYTES // max(1, self.frame_items * dtype.itemsize))
        self._start, self._block = -1, None

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if not (self._start <= i < self._start + (len(self._block) if self._block is not None else 0)):
            self._start = i - i % self.chunk
            n = min(self.chunk, len(self) - self._start)
            with open(self.path, "rb") as f:
                f.seek(self.offset + self._start * self.frame_items * self.dtype.itemsize)
                block = np.fromfile(f, dtype=self.dtype, count=n * self.frame_items)
            if block.size != n * self.frame_items:
                raise InputError(f"{self.path}: ends inside frame {self._start + block.size // max(1, self.frame_items)}")
            self._block = block.reshape(n, *self.frame_shape)
        return self._block[i - self._start]

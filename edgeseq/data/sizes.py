"""What a user's array file claims, checked before anything is allocated.

A ``.npy`` header states a shape and a dtype; numpy allocates what they take before reading a byte of data, so a
200-byte file that claims (100000, 100000, 12) float32 ends in an allocation error of 447 GiB. Here the claim is
compared with the bytes the file holds after its header (for an ``.npz`` member: the uncompressed size its zip
entry records), and what the arrays would take in memory with the memory available (``MemAvailable`` of
``/proc/meminfo``, or an explicit limit); either mismatch is one line naming the file and both sizes.
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

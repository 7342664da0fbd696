"""Atomic writes: build every file under a temporary name in the destination folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def staging_dir(dest_parent: Path) -> Iterator[Path]:
    """A temporary folder beside the destination (same file system, so renames are atomic); always removed."""
    dest_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgeseq-tmp-", dir=dest_parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit_files(pairs: list[tuple[Path, Path]]) -> None:
    """Move staged files into place; if one move fails, the ones already moved are removed again."""
    done: list[Path] = []
    try:
        for src, dst in pairs:
            if src.is_file():
                publish_mode(src)
            os.replace(src, dst)
            done.append(dst)
    except BaseException:
        for d in done:
            with contextlib.suppress(OSError):
                d.unlink()
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    with staging_dir(path.parent) as tmp:
        f = tmp / path.name
        f.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        os.replace(f, path)


def check_writable(path: Path, what: str = "output", *, file: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: the nearest folder that exists must be a
    folder we can create a file in (probed with a temporary file, removed at once); ``file``: the path names a file,
    so an existing folder there is refused too."""
    from edgeseq.errors import InputError

    path = Path(path).expanduser()
    if file and path.is_dir():
        raise InputError(f"{what} {path}: is a folder; give a file name")
    probe = path if path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".edgeseq-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write in {probe} ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """The mode a plain file gets (0644 under the usual umask): some writers (safetensors) stage files 0600."""
    os.chmod(path, 0o666 & ~_umask())

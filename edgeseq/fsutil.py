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

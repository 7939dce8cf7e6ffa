"""Atomic writes: every file or folder deployzoo writes appears whole under its name, or not at all.

``atomic_path(target)`` yields a hidden temporary path beside the target (same file system, tagged with the
process id); the block writes there, and the temporary is renamed onto the target only when the block ends
without an error. On any error (or Ctrl-C) it is removed, so no run leaves half-written files behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target`` to write a file or a folder into; renamed onto ``target`` on success
    (a folder target must not exist, or be empty), removed on failure."""
    p = Path(target)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
        os.replace(tmp, p)
    finally:
        _remove(tmp)


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(obj: object, target: str | os.PathLike) -> Path:
    return write_text(target, json.dumps(obj, indent=2))

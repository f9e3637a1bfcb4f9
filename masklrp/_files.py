"""Writing output files whole or not at all.

A run killed mid-write (or a disk that fills up) must not leave half a results file that
looks like a finished one, nor destroy the previous good file: every writer here writes to a
temporary file beside the target and renames it into place (``os.replace`` is atomic within
one file system).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that go by the suffix still
    work), renamed onto ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Atomic file output shared by the renderer and the transcoder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path_for(dst: Path) -> Path:
    """A hidden, unique temporary path in the same directory as ``dst``."""
    return dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")


@contextmanager
def atomic_output(dst: Path) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and rename it onto ``dst``.

    On any exception the temporary file is removed and ``dst`` is untouched.
    """
    tmp = temp_path_for(dst)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)

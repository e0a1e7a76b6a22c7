"""Store errors: one line for the user, with the OS reason found inside LanceDB's and FAISS's messages."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rsretrieve.errors import UserError

_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust (LanceDB) writes an errno
_STRERRORS = {os.strerror(code) for code in errno.errorcode}  # FAISS ends its I/O errors with "(strerror)"


class StoreError(UserError):
    """A problem with an index folder; the message is one line for the user."""


@contextlib.contextmanager
def writing(db: Path) -> Iterator[None]:
    """Turn a failed write (disk full, read-only file system, I/O error) into a one-line StoreError."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # FAISS reports I/O failures as RuntimeError
        raise StoreError(f"cannot write to {db}: {reason(error)}") from error


def reason(error: BaseException) -> str:
    """Why an operation failed, in a few words: the OS error, also when inside LanceDB's or FAISS's messages."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if found := _OS_ERROR.search(str(error)):
        return os.strerror(int(found[1]))
    if (found := re.search(r"\(([^()]+)\)\s*$", str(error))) and found[1] in _STRERRORS:
        return found[1]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__

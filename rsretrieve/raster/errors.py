"""``SourceError``: a source that cannot be indexed, said in one line naming it."""

from __future__ import annotations

from pathlib import Path

from rsretrieve.errors import UserError


class SourceError(UserError):
    """A source that cannot be indexed; str(e) is ONE line naming the file and the reason."""


def source_error(path: str | Path, reason: object) -> SourceError:
    """A SourceError whose message is one line: "<path>: <reason>"."""
    return SourceError(f"{path}: {' '.join(str(reason).split())}")

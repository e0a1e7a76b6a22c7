"""Argument types: the text of one option → its value, or an ``argparse.ArgumentTypeError`` (usage error)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path


def bbox(text: str) -> tuple[float, float, float, float]:
    """--bbox: minx,miny,maxx,maxy."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not minx,miny,maxx,maxy") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"'{text}' is not minx,miny,maxx,maxy (four numbers)")
    return values  # type: ignore[return-value]


def iso_date(text: str) -> date:
    """--start, --end: YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date YYYY-MM-DD") from None


def kind_weights(text: str) -> dict[str, float]:
    """--weights: KIND=WEIGHT,..."""
    try:
        pairs = [part.split("=", 1) for part in text.split(",")]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not KIND=WEIGHT,... (e.g. text=2,not_like=0.5)") from None


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def db_location(text: str) -> str | Path:
    """A --db value: an object-storage URI kept as text (Path would fold its "//"), else a folder."""
    return text if "://" in text else Path(text)

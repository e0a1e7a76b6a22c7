"""The ``rsretrieve`` command (``entry``)."""

from rsretrieve.cli.entry import DEMO_ARCHIVE, RANDOM_WEIGHTS_WARNING, build_parser, main

__all__ = ["DEMO_ARCHIVE", "RANDOM_WEIGHTS_WARNING", "build_parser", "main"]

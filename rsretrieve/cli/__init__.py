"""The ``rsretrieve`` command: index, import-embeddings, query, label, classify, info, upgrade, models, eval, app,
serve, demo.

One module per group of commands, each holding its commands' parsers and bodies (``index``, ``query``, ``labels``,
``info``, ``evaluate``, ``serve``, ``demo``), the argument types and options they share (``arg_types``,
``arguments``), log routing (``logs``) and the entry point (``entry``). Heavy libraries (torch, open_clip, lancedb,
faiss) are imported inside the commands so that ``--help`` answers at once. Known problems end with one ``error:``
line on stderr and a non-zero exit code.
"""

from rsretrieve.cli.arguments import RANDOM_WEIGHTS_WARNING, CliError
from rsretrieve.cli.demo import DEMO_ARCHIVE
from rsretrieve.cli.entry import COMMANDS, build_parser, join_negative_values, main
from rsretrieve.cli.logs import show_logs

__all__ = [
    "COMMANDS",
    "DEMO_ARCHIVE",
    "RANDOM_WEIGHTS_WARNING",
    "CliError",
    "build_parser",
    "join_negative_values",
    "main",
    "show_logs",
]

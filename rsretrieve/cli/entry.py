"""The ``rsretrieve`` command's entry point: the parser of every sub-command, and ``main``, which runs one
(on the local copy of an s3:// --db) and turns known problems into one ``error:`` line and exit code 1."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from rsretrieve.cli.demo import add_demo_parser, cmd_demo
from rsretrieve.cli.evaluate import add_eval_parser, cmd_eval
from rsretrieve.cli.index import add_import_parser, add_index_parser, cmd_import_embeddings, cmd_index
from rsretrieve.cli.info import (
    add_info_parser,
    add_models_parser,
    add_upgrade_parser,
    cmd_info,
    cmd_models,
    cmd_upgrade,
)
from rsretrieve.cli.labels import add_classify_parser, add_label_parser, cmd_classify, cmd_label
from rsretrieve.cli.logs import show_logs
from rsretrieve.cli.query import add_query_parser, cmd_query
from rsretrieve.cli.serve import add_app_parser, add_serve_parser, cmd_app, cmd_serve
from rsretrieve.errors import UserError, one_line

EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from rsretrieve import __version__

    parser = argparse.ArgumentParser(prog="rsretrieve", description="Search remote-sensing imagery by text or image.")
    parser.add_argument("--version", action="version", version=f"rsretrieve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_index_parser(commands)
    add_import_parser(commands)
    add_query_parser(commands)
    add_label_parser(commands)
    add_classify_parser(commands)
    add_info_parser(commands)
    add_upgrade_parser(commands)
    add_models_parser(commands)
    add_eval_parser(commands)
    add_app_parser(commands)
    add_serve_parser(commands)
    add_demo_parser(commands)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "import-embeddings": cmd_import_embeddings,
    "query": cmd_query,
    "label": cmd_label,
    "classify": cmd_classify,
    "info": cmd_info,
    "upgrade": cmd_upgrade,
    "models": cmd_models,
    "eval": cmd_eval,
    "app": cmd_app,
    "serve": cmd_serve,
    "demo": lambda args: cmd_demo(args, main),  # the demo's steps are commands run through main
}


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -97.2,47,-96.9,47.2`` → ``--bbox=-97.2,...`` so argparse does not take it for an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--bbox" and arg.startswith("-"):
            joined[-1] = f"--bbox={arg}"
        else:
            joined.append(arg)
    return joined


WRITING_COMMANDS = ("index", "upgrade", "import-embeddings")
WRITING_LABEL_ACTIONS = ("add", "remove", "import")


@contextlib.contextmanager
def _local_db(args: argparse.Namespace) -> Iterator[None]:
    """Run a command on the local copy of an s3:// --db (synced first; published after each commit of a writer)."""
    if not isinstance(getattr(args, "db", None), str):  # a folder, none, or serve's list
        yield
        return
    from rsretrieve.store.remote_db import local_db

    write = args.command in WRITING_COMMANDS or getattr(args, "action", None) in WRITING_LABEL_ACTIONS
    with local_db(args.db, args.cache_dir, write=write) as path:
        args.db, args.db_uri = path, args.db
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsretrieve`` console script."""
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("RUST_LOG", "error")
    show_logs()
    try:
        with _local_db(args):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: committed work is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("RSRETRIEVE_DEBUG"):
            raise
        hint = "" if isinstance(error, UserError) else " (set RSRETRIEVE_DEBUG=1 for a traceback)"
        print(f"error: {one_line(error)}{hint}", file=sys.stderr)
        return EXIT_ERROR

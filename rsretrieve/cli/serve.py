"""``app`` (the Streamlit page) and ``serve`` (the HTTP API): commands whose process becomes a server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rsretrieve.cli.arg_types import positive_int
from rsretrieve.cli.arguments import RANDOM_WEIGHTS_WARNING, CliError, add_db_option, add_model_options


def add_app_parser(commands: argparse._SubParsersAction) -> None:
    """``app``: the index to open, the port and the weights."""
    app = commands.add_parser("app", help="start the search page in the browser (Streamlit)")
    add_db_option(app, help="index folder or s3:// URI to open")
    app.add_argument("--port", type=positive_int, default=8501)
    app.add_argument("--checkpoint", type=Path, help="local weights file")
    app.add_argument("--server", metavar="URL", help="a pure client of `rsretrieve serve` at URL (no --db)")
    app.add_argument("--api-key-file", type=Path, help="with --server: its API key (else $RSRETRIEVE_API_KEY)")
    app.add_argument("--index", metavar="NAME", help="with --server: the served index (default: the first)")


def cmd_app(args: argparse.Namespace) -> int:
    """Start the Streamlit page bound to 127.0.0.1 (this process becomes the server)."""
    page = Path(__file__).resolve().parents[2] / "app" / "search_page.py"
    if args.server and (args.db or args.checkpoint):
        raise CliError("give either --db (and --checkpoint) or --server, not both")
    if not args.server and (args.api_key_file or args.index):
        raise CliError("--api-key-file and --index apply to --server only")
    if args.server and not args.server.startswith(("http://", "https://")):
        raise CliError(f"--server must be an http:// or https:// URL (got '{args.server}')")
    if args.api_key_file and not args.api_key_file.is_file():
        raise CliError(f"API key file not found: {args.api_key_file}")
    command = [
        sys.executable, "-m", "streamlit", "run", str(page),
        "--server.address", "127.0.0.1", "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--",
    ]  # fmt: skip
    if args.db:
        command += ["--db", str(args.db)]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    for flag, value in (("--server", args.server), ("--api-key-file", args.api_key_file), ("--index", args.index)):
        if value:
            command += [flag, str(value)]
    print(f"rsretrieve search page: http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    """``serve``: the indexes, address, authentication, search defaults and micro-batching."""
    serve = commands.add_parser("serve", help="HTTP API with a warm model (FastAPI + uvicorn; docs at /docs)")
    serve.add_argument(
        "--db",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="index folder or s3:// URI to serve (repeat for several)",
    )
    serve.add_argument("--cache-dir", type=Path, help="local copies of s3:// indexes (~/.cache/rsretrieve)")
    serve.add_argument(
        "--refresh-seconds", type=float, default=10.0, help="s3:// indexes: look for a new version this often (10)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=8000, help="port (8000)")
    serve.add_argument("--api-key-file", type=Path, help="require 'Authorization: Bearer KEY' (key in this file)")
    serve.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback --host without an API key")
    serve.add_argument("--root-path", default="", help="path prefix under which a reverse proxy serves it")
    serve.add_argument("--cors-origin", action="append", default=[], help="allow browser calls from this origin")
    serve.add_argument("--nprobe", type=positive_int, help="IVF lists visited (IVF-PQ indexes)")
    serve.add_argument("--rerank", type=positive_int, metavar="R", help="IVF-PQ: re-rank k·R candidates exactly")
    serve.add_argument("--max-batch", type=positive_int, default=64, help="encodings per micro-batch (64)")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0, help="micro-batch collection window (5 ms)")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    add_model_options(serve, default=None)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve indexes over HTTP with a warm model (this process becomes the server)."""
    import ipaddress

    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and args.api_key_file is None and not args.insecure_no_auth:
        raise CliError(
            f"--host {host} is reachable from other machines: give --api-key-file KEY_FILE "
            "(or --insecure-no-auth behind your own authentication)"
        )
    key = None
    if args.api_key_file is not None:
        from rsretrieve.service.guard import read_key

        try:
            key = read_key(args.api_key_file.read_text())
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read --api-key-file {args.api_key_file} ({error})") from None
        if len(key) < 8:
            raise CliError(f"the API key in {args.api_key_file} is too short (8 characters at least)")
    if args.batch_wait_ms < 0:
        raise CliError("--batch-wait-ms must not be negative")
    from rsretrieve.service.serve import load, run

    followers = _follow_remote_dbs(args)
    try:
        app, indexes = load(args, key)
        if any(encoders.model.random_weights for encoders in indexes.encoders):
            print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        shown = f"[{host}]" if ":" in host else host
        names = ", ".join(f"{served.name} ({len(served.searcher.store)} chips)" for served in indexes)
        required = "; API key required" if key else ""
        print(
            f"rsretrieve service: http://{shown}:{args.port} (docs at /docs; serving {names}{required})",
            file=sys.stderr,
        )
        sys.stderr.flush()
        run(app, indexes, args)
    finally:
        for follower in followers:
            follower.stop()
    return 0


def _follow_remote_dbs(args: argparse.Namespace) -> list:
    """Serve s3:// indexes from local copies kept at the newest version (``Follower``s, one per index)."""
    if not any("://" in value for value in args.db):
        return []
    from rsretrieve.service.indexes import parse_db
    from rsretrieve.store.remote_db import Follower, RemoteDb, is_remote_db

    if args.refresh_seconds <= 0:
        raise CliError("--refresh-seconds must be positive")
    followers = []
    for number, value in enumerate(args.db):
        name, sep, uri = value.partition("=")
        if not sep or "://" in name:
            name, uri = "", value
        if is_remote_db(uri):
            remote = RemoteDb(uri, args.cache_dir)
            remote.sync()
            args.db[number] = f"{name or parse_db(uri)[0]}={remote.path}"
            followers.append(Follower(remote, args.refresh_seconds).start())
    return followers

"""``rsretrieve query --server URL``: the query command against a running service.

Standard library only (``urllib``, ``json``, ``base64``): no torch, open_clip, FAISS, LanceDB or even numpy, so a
cold command answers in a fraction of a second. The server renders CSV, table and GeoJSON with the same
renderers as the local command; ``--json`` prints the records exactly as the local ``--json`` does.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from argparse import Namespace
from pathlib import Path
from typing import Any

from rsretrieve.errors import UserError
from rsretrieve.uris import is_remote

SERVER_ENV = "RSRETRIEVE_SERVER"
KEY_ENV = "RSRETRIEVE_API_KEY"
TIMEOUT_S = 120.0
SEARCH_STAGES = ("combine", "filter", "ann", "rerank", "records")


class RemoteError(UserError):
    """The service cannot be reached or refused the request; one line."""


def _b64(path: str | Path) -> str:
    if is_remote(path):
        raise RemoteError(f"--server takes query images as local files (the service fetches nothing): {path}")
    try:
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError as error:
        raise RemoteError(f"cannot read query image {path} ({error.strerror or error})") from None


def _area(path: Path) -> Any:
    """The GeoJSON of a ``--within`` file (the service reads GeoJSON; other formats need a local --db)."""
    if path.suffix.lower() not in (".geojson", ".json"):
        raise RemoteError(f"--within with --server takes a GeoJSON file (got {path.name}): or query with --db")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RemoteError(f"cannot read --within {path} ({error})") from None


def request_body(args: Namespace, form: str) -> dict[str, Any]:
    """The ``POST /v1/search`` body of the query command's arguments."""
    body: dict[str, Any] = {
        "text": args.text,
        "image": [_b64(path) for path in args.image] or None,
        "like": args.like or None,
        "not_text": args.not_text or None,
        "not_image": [_b64(path) for path in args.not_image] or None,
        "not_like": args.not_like or None,
        "weights": args.weights,
        "k": args.k,
        "bbox": list(args.bbox) if args.bbox else None,
        "start": args.start.isoformat() if args.start else None,
        "end": args.end.isoformat() if args.end else None,
        "nprobe": args.nprobe,
        "rerank": args.rerank,
        "index": getattr(args, "index", None),
        "format": form,
        "labels": args.labels,
        "within": _area(args.within) if args.within else None,
        "min_score": args.min_score,
    }
    return {name: value for name, value in body.items() if value is not None}


def api_key(path: Path | None) -> str | None:
    """The key of ``--api-key-file``, else of $RSRETRIEVE_API_KEY, else None."""
    if path is not None:
        try:
            return "".join(path.read_text().split())
        except OSError as error:
            raise RemoteError(f"cannot read the API key file {path} ({error.strerror or error})") from None
    return os.environ.get(KEY_ENV) or None


def call(
    server: str,
    method: str,
    route: str,
    body: dict[str, Any] | None,
    key: str | None,
    params: dict[str, Any] | None = None,
    timeout: float = TIMEOUT_S,
):
    """One request (JSON body when given, query parameters without None values); returns (body bytes, headers).
    Raises RemoteError with the service's one-line error."""
    query = {name: value for name, value in (params or {}).items() if value is not None}
    url = server.rstrip("/") + route + (f"?{urllib.parse.urlencode(query)}" if query else "")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(), response.headers
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            detail = " ".join(detail.split())[:200] or error.reason
        raise RemoteError(f"the service at {server} answered {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise RemoteError(f"cannot reach the rsretrieve service at {server} ({reason})") from None


def post(server: str, route: str, body: dict[str, Any], key: str | None, timeout: float = TIMEOUT_S):
    """POST JSON; returns (body bytes, headers). Raises RemoteError with the service's one-line error."""
    return call(server, "POST", route, body, key, timeout=timeout)


def remote_query(args: Namespace, server: str) -> tuple[str, str | None]:
    """Run the query command's query on ``server``: what the local command prints on stdout, and its summary line
    for stderr (tables only)."""
    if not server.startswith(("http://", "https://")):
        raise RemoteError(f"--server must be an http:// or https:// URL (got '{server}')")
    form = args.format or "table"
    data, headers = post(server, "/v1/search", request_body(args, form), api_key(args.api_key_file))
    if form == "json":
        payload = json.loads(data)
        records = [
            {name: value for name, value in result.items() if name != "footprint"} for result in payload["results"]
        ]
        return json.dumps(records, indent=2) + "\n", None
    if form != "table":
        return data.decode("utf-8"), None
    timings = dict(
        (part.split(";dur=")[0].strip(), float(part.split(";dur=")[1]))
        for part in headers.get("Server-Timing", "").split(",")
        if ";dur=" in part
    )
    search_ms = sum(ms for stage, ms in timings.items() if stage in ("combine", "filter", "ann", "rerank", "records"))
    how = headers.get("X-Rsretrieve-Path", "?")
    candidates = int(headers.get("X-Rsretrieve-Candidates", "0") or 0)
    if candidates:
        how += f", {candidates} candidates re-ranked"
    summary = (
        f"results from {server} (index {headers.get('X-Rsretrieve-Index')}, version "
        f"{headers.get('X-Rsretrieve-Version')}) in {search_ms:.1f} ms of search ({how}; encoding the query "
        f"{timings.get('encode', 0):.0f} ms; {timings.get('total', 0):.1f} ms on the server)"
    )
    return data.decode("utf-8"), summary

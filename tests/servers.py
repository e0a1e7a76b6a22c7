"""Loopback servers for the remote-source tests and benchmark: a moto S3 server and a Range-capable HTTP server.

Both bind 127.0.0.1 on a free port, count the requests and body bytes they serve (``stats``), can deny some
objects (403) and stop themselves (context managers). Nothing here reaches beyond the machine.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

S3_ENV = {  # what a client of the loopback S3 server needs (GDAL, boto3)
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "GDAL_HTTP_MAX_RETRY": "1",  # a stopped server fails fast in tests
    "GDAL_HTTP_RETRY_DELAY": "0.1",
}
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)


class Stats:
    """Requests, body bytes served and body bytes received (uploads), thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.uploaded = 0

    def add(self, requests: int = 0, size: int = 0, uploaded: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.bytes += size
            self.uploaded += uploaded

    def reset(self) -> None:
        with self.lock:
            self.requests = self.bytes = self.uploaded = 0


class _Counting:
    """WSGI middleware: counts requests and bytes, answers 403 for denied paths and 503 while ``down``."""

    def __init__(self, app: Any, stats: Stats, deny: set[str]):
        self.app, self.stats, self.deny = app, stats, deny
        self.down = False

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        self.stats.add(requests=1, uploaded=int(environ.get("CONTENT_LENGTH") or 0))
        if self.down:
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        if environ.get("PATH_INFO", "") in self.deny:
            start_response(
                "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(ACCESS_DENIED)))]
            )
            return [ACCESS_DENIED]
        return self._counted(self.app(environ, start_response))

    def _counted(self, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                self.stats.add(size=len(chunk))
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()


class S3Server:
    """moto's S3 on 127.0.0.1 (a free port, or ``port`` to come back on the same one), counting what it serves.

    ``deny`` holds paths (``/bucket/key``) answered 403 AccessDenied, as a bucket policy denying them would.
    moto keeps buckets in this process, so a server restarted on the same port serves the same objects.
    """

    def __init__(self, port: int = 0, deny: set[str] | None = None):
        self.port = port
        self.stats = Stats()
        self.deny = deny if deny is not None else set()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: _Counting | None = None

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:
                pass

        self._app = _Counting(DomainDispatcherApplication(create_backend_app), self.stats, self.deny)
        self._server = make_server("127.0.0.1", self.port, self._app, True, request_handler=QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables pointing AWS clients (GDAL, boto3) at this server."""
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.url}

    def stop(self) -> None:
        """Stop answering: requests in flight on kept-alive connections get 503, new connections are refused."""
        if self._server is None:
            return
        assert self._app is not None and self._thread is not None
        self._app.down = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ranges(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range, or None for the whole file."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or not (match[1] or match[2]):
        raise ValueError(header)
    if not match[1]:
        return max(0, size - int(match[2])), size - 1
    return int(match[1]), min(size - 1, int(match[2])) if match[2] else size - 1


class RangeServer:
    """Serves a folder read-only over HTTP/1.1 with single byte ranges (206), on 127.0.0.1 and a free port;
    names in ``deny`` get 403. Python's http.server lacks Range, which GDAL's /vsicurl/ needs."""

    def __init__(self, folder: Path, deny: set[str] | None = None):
        self.folder = Path(folder)
        self.deny = deny or set()
        self.stats = Stats()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                owner.stats.add(requests=1)
                name = self.path.split("?", 1)[0].lstrip("/")
                file = (owner.folder / name).resolve()
                if name in owner.deny:
                    return self._empty(403)
                if not file.is_file() or owner.folder.resolve() not in file.parents:
                    return self._empty(404)
                size = file.stat().st_size
                try:
                    span = _ranges(self.headers.get("Range"), size)
                except ValueError:
                    return self._empty(416)
                start, end = span or (0, size - 1)
                if start >= size:
                    return self._empty(416)
                self.send_response(206 if span else 200)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if span:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if body:
                    with file.open("rb") as handle:
                        handle.seek(start)
                        data = handle.read(end - start + 1)
                    owner.stats.add(size=len(data))
                    self.wfile.write(data)

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RangeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def upload(folder: Path, bucket: str, env: dict[str, str], prefix: str = "") -> list[str]:
    """Upload every file under ``folder`` to ``s3://bucket/prefix...`` (bucket created); their URIs."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    uris = []
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        key = prefix + file.relative_to(folder).as_posix()
        client.upload_file(str(file), bucket, key)
        uris.append(f"s3://{bucket}/{key}")
    return uris


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (in this process), restoring them after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

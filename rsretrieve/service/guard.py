"""One pure ASGI middleware in front of every route: API key, body limit, metrics, last-resort errors.

- With a key, every path but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer KEY`` (compared with
  ``hmac.compare_digest``) → else 401.
- A body over ``max_body`` bytes → 413, from ``Content-Length`` before reading, or while streaming it.
- Every request is counted per route template, status and latency (``Metrics``), and while it is answered in
  ``Metrics.in_flight``.
- An unexpected exception → 500 ``{"error": "internal error: <type>"}`` (one line, no traceback; the traceback
  goes to the server log) and the service stays up.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from rsretrieve.errors import UserError
from rsretrieve.service.metrics import Metrics

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BODY_BYTES = 20 * 1024 * 1024


class ApiError(UserError):
    """A request the service refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit // (1024 * 1024)} MB")


def read_key(text: str) -> str:
    """The API key of a key file's text (all whitespace ignored)."""
    return "".join(text.split())


async def send_json(send: Any, status: int, payload: dict[str, Any], headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: auth, body limit, metrics and last-resort 500s (see the module docstring)."""

    def __init__(self, app: Any, metrics: Metrics, key: str | None = None, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.metrics = metrics
        self.key = key.encode() if key else None
        self.max_body = max_body

    def _authorised(self, scope: dict[str, Any]) -> bool:
        if self.key is None or scope["path"] in OPEN_PATHS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)
        return False

    def _declared_length(self, scope: dict[str, Any]) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "started": False}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            await send(message)

        received = 0

        async def receiving() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        self.metrics.in_flight += 1
        try:
            if not self._authorised(scope):
                await send_json(
                    sending,
                    401,
                    {"error": "missing or wrong API key: send the header 'Authorization: Bearer KEY'"},
                    [(b"www-authenticate", b"Bearer")],
                )
            elif (self._declared_length(scope) or 0) > self.max_body:
                await send_json(sending, 413, {"error": str(BodyTooLarge(self.max_body))})
            else:
                await self.app(scope, receiving, sending)
        except ApiError as error:
            if not state["started"]:
                await send_json(sending, error.status, {"error": str(error)})
        except Exception as error:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if not state["started"]:
                await send_json(sending, 500, {"error": f"internal error: {type(error).__name__}"})
        finally:
            self.metrics.in_flight -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.request(endpoint, scope.get("method", ""), state["status"], time.perf_counter() - started)

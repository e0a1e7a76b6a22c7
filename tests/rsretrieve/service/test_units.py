"""Fast in-process tests of the service's parts: MicroBatcher, Metrics, Guard, request parsing, image checks."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from PIL import Image

from rsretrieve.service.batching import MicroBatcher
from rsretrieve.service.guard import ApiError, Guard, read_key
from rsretrieve.service.images import checked_image, decode_base64
from rsretrieve.service.metrics import Metrics
from rsretrieve.service.schemas import SearchRequest, parse


def test_micro_batcher_batches_concurrent_items_into_few_calls() -> None:
    calls: list[int] = []

    def slow_double(items: list[int]) -> list[int]:
        calls.append(len(items))
        time.sleep(0.02)
        return [item * 2 for item in items]

    batcher = MicroBatcher(slow_double, max_batch=8, max_wait=0.005)
    results: dict[int, int] = {}

    def client(item: int) -> None:
        results[item] = batcher.submit(item).result(timeout=10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert results == {i: i * 2 for i in range(24)}
    assert sum(calls) == 24 and max(calls) <= 8
    assert len(calls) < 24  # concurrent items shared model calls


def test_micro_batcher_alone_does_not_wait_and_errors_reach_every_caller() -> None:
    def fail_on_three(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("three")
        return items

    batcher = MicroBatcher(fail_on_three, max_wait=1.0)
    started = time.perf_counter()
    assert batcher.map([1]) == [1]
    assert time.perf_counter() - started < 0.5  # an idle batcher does not linger for max_wait
    with pytest.raises(ValueError, match="three"):
        batcher.submit(3).result(timeout=5)
    assert batcher.map([4]) == [4]  # the worker survives a failing batch
    batcher.close()


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.request("/v1/search", "POST", 200, 0.004)
    metrics.request("/v1/search", "POST", 400, 0.001)
    metrics.stage("ann", 0.0005)
    metrics.batch("text", 3)
    text = metrics.render()
    assert 'rsretrieve_requests_total{endpoint="/v1/search",method="POST",status="200"} 1' in text
    assert 'rsretrieve_errors_total{endpoint="/v1/search",status="400"} 1' in text
    assert 'rsretrieve_request_seconds_bucket{endpoint="/v1/search",le="0.005"} 2' in text
    assert 'rsretrieve_request_seconds_count{endpoint="/v1/search"} 2' in text
    assert 'rsretrieve_search_stage_seconds_bucket{stage="ann",le="+Inf"} 1' in text
    assert 'rsretrieve_encode_batch_size_bucket{kind="text",le="4"} 1' in text


def guarded_app(key: str | None = None, max_body: int = 1000, metrics: Metrics | None = None) -> TestClient:
    app = FastAPI()
    metrics = metrics or Metrics()

    @app.get("/in-flight")
    async def in_flight() -> dict[str, int]:
        return {"in_flight": metrics.in_flight}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail\nwith traceback")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": str(error)}, status_code=error.status)

    app.add_middleware(Guard, metrics=metrics, key=key, max_body=max_body)
    return TestClient(app, raise_server_exceptions=False)


def test_guard_counts_requests_in_flight() -> None:
    metrics = Metrics()
    client = guarded_app(metrics=metrics)
    assert client.get("/in-flight").json() == {"in_flight": 1}  # the asking request itself
    assert client.get("/boom").status_code == 500
    assert client.post("/echo", content=b"x" * 2000).status_code == 413
    assert metrics.in_flight == 0  # every way out, errors included, counts the request out
    assert "rsretrieve_requests_in_flight 0" in metrics.render()


def test_guard_turns_an_unexpected_exception_into_one_json_line_and_stays_up() -> None:
    client = guarded_app()
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError"}
    assert client.get("/healthz").status_code == 200


def test_guard_body_limit_from_header_and_from_stream() -> None:
    client = guarded_app(max_body=1000)
    assert client.post("/echo", content=b"x" * 1000).json() == {"bytes": 1000}
    assert client.post("/echo", content=b"x" * 1001).status_code == 413

    def chunks():
        for _ in range(5):
            yield b"x" * 400

    response = client.post("/echo", content=chunks())  # no Content-Length: counted while streaming
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_guard_api_key() -> None:
    client = guarded_app(key=read_key("  abc123xyz \n"))
    assert client.get("/healthz").status_code == 200  # open
    assert client.post("/echo", content=b"1").status_code == 401
    assert client.post("/echo", content=b"1", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/echo", content=b"1", headers={"Authorization": "Basic abc123xyz"}).status_code == 401
    assert client.post("/echo", content=b"1", headers={"Authorization": "Bearer abc123xyz"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"[1]", "JSON object"),
        (b"{", "not valid JSON"),
        (b'{"text": "a", "k": 0}', "k: "),
        (b'{"text": "a", "k": 10001}', "k: "),
        (b'{"text": "a", "bbox": [1, 2]}', "bbox: "),
        (b'{"text": "a", "start": "yesterday"}', "start: "),
        (b'{"text": "a", "colour": "red"}', "colour: "),
        (b'{"text": "' + b"a" * 1001 + b'"}', "text: "),
    ],
)
def test_search_request_errors_are_one_line_400s(body: bytes, fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(SearchRequest, body)
    assert caught.value.status == 400 and fragment in str(caught.value) and "\n" not in str(caught.value)


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_image_checks_before_decoding() -> None:
    data = png(20, 10)
    assert decode_base64("data:image/png;base64," + base64.b64encode(data).decode()) == data
    assert checked_image(data) == data
    with pytest.raises(ApiError, match="base64") as caught:
        decode_base64("not base64!")
    assert caught.value.status == 400
    with pytest.raises(ApiError, match="not a readable") as caught:
        checked_image(b"hello")
    assert caught.value.status == 400
    with pytest.raises(ApiError, match="over the limit") as caught:
        checked_image(png(30_000, 30_000, "1"))  # 48 kB declaring 900 Mpx: a decompression bomb
    assert caught.value.status == 413


class NoIndexes:
    """Enough of ``Indexes`` for routes that do not search."""

    by_name: dict = {}  # noqa: RUF012
    default = "none"
    encoders: list = []  # noqa: RUF012
    metrics = None

    def __iter__(self):
        return iter(())

    def get(self, name: str | None) -> None:
        raise ApiError(404, f"no index named '{name}'")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("origins", [(), ("https://maps.example.org",)])
def test_cors_is_off_unless_an_origin_is_given(origins: tuple[str, ...]) -> None:
    from rsretrieve.service.app import create_app

    app = create_app(NoIndexes(), Metrics(), key="secret-key-1", cors_origins=origins)  # type: ignore[arg-type]
    with TestClient(app) as client:
        preflight = client.options(
            "/v1/search",
            headers={"Origin": "https://maps.example.org", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        allowed = preflight.headers.get("access-control-allow-origin")
        assert allowed == ("https://maps.example.org" if origins else None)
        other = client.get("/healthz", headers={"Origin": "https://evil.example.com"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        assert client.get("/v1/indexes/x", headers={"Authorization": "Bearer secret-key-1"}).status_code == 404
        missing = client.get("/nowhere", headers={"Authorization": "Bearer secret-key-1"})
        assert missing.status_code == 404 and missing.json()["error"].startswith("no such endpoint")

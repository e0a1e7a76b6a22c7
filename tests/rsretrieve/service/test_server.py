"""The real service: ``rsretrieve serve`` as a uvicorn subprocess on a free 127.0.0.1 port over a tiny-model index.

One index is built once (``small_archive``, chip size 64); one server without auth serves it under two names
(sharing one model), one with an API key. The reload test appends to the index while a thread queries: it runs
last in this module.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import assert_one_line_error, run_cli, write_geotiff

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error", "OMP_NUM_THREADS": "1"}
ENV.pop("RSRETRIEVE_SERVER", None)
ENV.pop("RSRETRIEVE_API_KEY", None)
RANDOM = ["--model", "tiny-test", "--random-weights"]
KEY = "test-key-0123456789"


def rsretrieve(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, env=ENV, timeout=timeout)


def local(*args: str | Path) -> str:
    """stdout of the local command, run in this process (the same code path, without a fresh interpreter)."""
    from rsretrieve.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(arg) for arg in args])
    assert code == 0
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``rsretrieve serve`` in a subprocess; ``url`` once /readyz answers."""

    def __init__(self, log: Path, *args: str | Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "rsretrieve.cli", "serve", "--port", str(self.port), *map(str, args)]
        self.handle = log.open("w")
        self.process = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT, env=ENV)

    def wait_ready(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server did not get ready in {timeout} s: {self.log.read_text()}")

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.handle.close()
        return self.log.read_text()


@pytest.fixture(scope="module")
def service_db(tmp_path_factory: pytest.TempPathFactory, small_archive: Path) -> Path:
    db = tmp_path_factory.mktemp("service") / "archive.lance"
    local("index", small_archive, "--db", db, *RANDOM, "--chip-size", "64", "--quiet")
    return db


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, service_db: Path) -> Iterator[tuple[Server, Server]]:
    """(open server serving main= and again= the same index, server requiring the API key); started together."""
    logs = tmp_path_factory.mktemp("logs")
    key_file = logs / "key.txt"
    key_file.write_text(f"  {KEY}\n\n")
    open_server = Server(logs / "open.log", "--db", f"main={service_db}", "--db", f"again={service_db}")
    keyed = Server(logs / "keyed.log", "--db", service_db, "--api-key-file", key_file)
    try:
        yield open_server.wait_ready(), keyed.wait_ready()
    finally:
        for server in (open_server, keyed):
            output = server.stop()
            assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_health_readiness_and_indexes(client: httpx.Client, service_db: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["indexes"]) == {"main", "again"}
    assert ready["models"] == 1  # two indexes of one model share one model object
    listed = client.get("/v1/indexes").json()
    assert listed["default"] == "main"
    assert [(i["name"], i["chips"], i["dim"]) for i in listed["indexes"]] == [("main", 31, 32), ("again", 31, 32)]
    info = client.get("/v1/indexes/main").json()
    expected = json.loads(local("info", "--db", service_db, "--json"))
    assert {key: info[key] for key in expected} == expected
    assert client.get("/v1/indexes/nope").status_code == 404


def result_rows(text: str, form: str) -> list[dict]:
    """The records of a query's output: JSON records, GeoJSON features (properties and geometry) or CSV rows."""
    if form == "--csv":
        return list(csv.DictReader(io.StringIO(text)))
    parsed = json.loads(text)
    if form == "--geojson":
        return [{**feature["properties"], "geometry": feature["geometry"]} for feature in parsed["features"]]
    return parsed


def assert_same_results(remote: str, local_text: str, form: str) -> None:
    """The same records in the same order; scores equal to 2e-6 (the service encodes a request's texts in one
    micro-batch, the CLI one text at a time: the embeddings agree to ~1e-6, which can move the 6th decimal)."""
    remote_rows, local_rows = result_rows(remote, form), result_rows(local_text, form)
    assert [row["id"] for row in remote_rows] == [row["id"] for row in local_rows]
    for there, here in zip(remote_rows, local_rows, strict=True):
        assert abs(float(there.pop("score")) - float(here.pop("score"))) <= 2e-6
        assert there == here


def test_cli_server_output_is_identical_to_local(server: Server, service_db: Path, small_archive: Path) -> None:
    first = json.loads(local("query", "farmland", "--db", service_db, "-k", "31", "--json"))
    dated = next(r for r in first if r["date"] == "2019-07-15")
    mixed = [
        "farmland", "--image", small_archive / "plain.jpg", "--like", dated["id"], "--not-text", "clouds",
        "--weights", "text=2,not_text=0.5", "--start", "2015-01-01", "--end", "2021-12-31", "-k", "7",
    ]  # fmt: skip
    for args in (["a harbour with cranes", "-k", "5"], mixed):
        for form in ("--json", "--geojson", "--csv"):
            remote = rsretrieve("query", *args, "--server", server.url, form)
            assert remote.returncode == 0, remote.stderr
            assert_same_results(remote.stdout, local("query", *args, "--db", service_db, form), form)
    table = rsretrieve("query", "farmland", "--server", server.url, "-k", "3")
    assert table.stdout.splitlines()[0].split()[:3] == ["#", "score", "chip"] and len(table.stdout.splitlines()) == 4
    env_query = subprocess.run(
        [sys.executable, "-m", "rsretrieve.cli", "query", "farmland", "-k", "3", "--json"],
        capture_output=True, text=True, env={**ENV, "RSRETRIEVE_SERVER": server.url}, timeout=60,
    )  # fmt: skip
    assert [r["id"] for r in json.loads(env_query.stdout)] == [r["id"] for r in first[:3]]


def test_cli_server_does_not_import_the_heavy_libraries(server: Server) -> None:
    code = (
        "import sys, time; from rsretrieve.cli import main; started = time.perf_counter();"
        f"code = main(['query', 'farmland', '--server', '{server.url}', '--json']);"
        "heavy = [m for m in ('torch', 'open_clip', 'faiss', 'lancedb', 'numpy', 'pyarrow') if m in sys.modules];"
        "print(code, heavy, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.stderr.strip().endswith("0 []"), result.stderr


def test_unreachable_server_is_one_error_line() -> None:
    result = rsretrieve("query", "farmland", "--server", f"http://127.0.0.1:{free_port()}", "--json")
    assert_one_line_error(result, "cannot reach the rsretrieve service")
    assert_one_line_error(rsretrieve("query", "farmland"), "--db PATH (or --server URL")


def test_search_response_shape_geojson_and_timings(client: httpx.Client) -> None:
    response = client.post("/v1/search", json={"text": "farmland", "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["index"] == "main" and body["version"] > 0 and body["path"] == "flat"
    assert len(body["results"]) == 5
    assert set(body["results"][0]) == {
        "score", "id", "path", "window", "bbox", "date", "crs", "item_id", "collection", "footprint"
    }  # fmt: skip
    assert {"encode", "ann", "records", "total"} <= set(body["timings_ms"])
    assert "encode;dur=" in response.headers["server-timing"]
    collection = client.post(
        "/v1/search", json={"text": "farmland", "k": 5}, headers={"Accept": "application/geo+json"}
    )
    assert collection.headers["content-type"].startswith("application/geo+json")
    features = collection.json()["features"]
    assert [f["id"] for f in features] == [r["id"] for r in body["results"]]
    same = client.post("/v1/search", json={"text": "farmland", "k": 5, "format": "geojson", "index": "again"})
    assert same.json() == collection.json()


def test_multipart_image_upload_equals_base64(client: httpx.Client, small_archive: Path) -> None:
    jpeg = (small_archive / "plain.jpg").read_bytes()
    as_json = client.post("/v1/search", json={"image": b64(jpeg), "text": "farm", "k": 4}).json()
    as_form = client.post(
        "/v1/search", files={"image": ("plain.jpg", jpeg, "image/jpeg")}, data={"text": "farm", "k": "4"}
    )
    assert as_form.status_code == 200, as_form.text
    assert [(r["id"], r["score"]) for r in as_form.json()["results"]] == [
        (r["id"], r["score"]) for r in as_json["results"]
    ]


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": "x", "k": 10_001}, 400, "k: "),
        ({"text": "x", "k": 0}, 400, "k: "),
        ({"text": "x", "bbox": [10, 50, 5, 51]}, 400, "bbox"),
        ({"text": "x", "bbox": [0, 0, 200, 1]}, 400, "bbox"),
        ({"text": "x", "bbox": [0, 0, 1]}, 400, "bbox"),
        ({"text": "x", "start": "2020-02-30"}, 400, "start"),
        ({"text": "x", "start": "2021-01-01", "end": "2020-01-01"}, 400, "after"),
        ({"image": "%%% not base64 %%%"}, 400, "base64"),
        ({"image": b64(b"just some bytes")}, 400, "not a readable"),
        ({"image": b64(bomb_png())}, 413, "over the limit"),
        ({"text": "x", "index": "nope"}, 404, "no index named 'nope'"),
        ({"like": "0123456789abcdef"}, 400, "no chip with id"),
        ({"not_text": "clouds"}, 400, "give something to search for"),
        ({"text": "x", "weights": {"colour": 2}}, 400, "unknown weight"),
        ({"text": "x" * 1001}, 400, "at most 1000"),
        ({"text": "x", "nprobe": -1}, 400, "nprobe"),
        ({"text": "x", "path": "/etc/passwd"}, 400, "path"),
        ({"vector": [0.1, 0.2]}, 400, "has 2 numbers"),
        ({"vector": [0.0] * 32}, 400, "zero"),
    ],
)
def test_bad_search_requests_are_json_4xx(client: httpx.Client, body: dict, status: int, fragment: str) -> None:
    response = client.post("/v1/search", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error and "\n" not in error and "Traceback" not in response.text


def test_malformed_and_oversize_bodies(client: httpx.Client) -> None:
    assert client.post("/v1/search", content=b"{not json").status_code == 400
    assert client.post("/v1/search", content=b"").status_code == 400
    assert client.post("/v1/search", json=["farmland"]).status_code == 400
    huge = client.post("/v1/search", content=b'{"text": "' + b"a" * (21 * 1024 * 1024) + b'"}')
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/search").status_code == 405
    assert client.get("/healthz").status_code == 200  # still up


def test_chip_record_and_image(client: httpx.Client) -> None:
    top = client.post("/v1/search", json={"text": "farmland", "k": 1}).json()["results"][0]
    chip = client.get(f"/v1/chips/{top['id']}").json()
    assert {key: chip[key] for key in top if key != "score"} == {key: top[key] for key in top if key != "score"}
    assert isinstance(chip["fid"], int)
    image = client.get(f"/v1/chips/{top['id']}/image", params={"size": 128})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(image.content)).size) == 128
    assert client.get("/v1/chips/0123456789abcdef").status_code == 404
    assert client.get("/v1/chips/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get(f"/v1/chips/{top['id']}/image", params={"size": "big"}).status_code == 400
    assert client.get(f"/v1/chips/{top['id']}/image", params={"size": 100_000}).status_code == 400


def test_embed_texts_and_images(client: httpx.Client, small_archive: Path) -> None:
    texts = client.post("/v1/embed", json={"text": ["farmland", "a harbour"]}).json()
    assert texts["dim"] == 32 and len(texts["vectors"]) == 2
    assert all(abs(sum(v * v for v in vector) - 1) < 1e-4 for vector in texts["vectors"])
    jpeg = b64((small_archive / "plain.jpg").read_bytes())
    images = client.post("/v1/embed", json={"image": [jpeg]}).json()
    assert len(images["vectors"]) == 1 and len(images["vectors"][0]) == 32
    # an embedding searches like its text
    by_vector = client.post("/knn-service", json={"embedding_input": texts["vectors"][0], "num_images": 5}).json()
    by_text = client.post("/v1/search", json={"text": "farmland", "k": 5}).json()["results"]
    assert [r["chip_id"] for r in by_vector] == [r["id"] for r in by_text]
    searched = client.post("/v1/search", json={"vector": texts["vectors"][0], "k": 5}).json()["results"]
    assert [r["id"] for r in searched] == [r["id"] for r in by_text]  # scores to ~1e-7: embedded in a batch of 2
    assert [r["score"] for r in searched] == pytest.approx([r["score"] for r in by_text], abs=1e-5)
    assert client.post("/v1/embed", json={}).status_code == 400
    assert client.post("/v1/embed", json={"text": ["a"], "image": [jpeg]}).status_code == 400
    assert client.post("/v1/embed", json={"text": [""]}).status_code == 400


def test_clip_retrieval_requests_as_clip_client_sends_them(client: httpx.Client, small_archive: Path) -> None:
    def clip_client_body(**query: object) -> bytes:  # ClipClient's field set, posted without a Content-Type
        body = {
            "text": None, "image": None, "image_url": None, "embedding_input": None, "deduplicate": True,
            "use_safety_model": True, "use_violence_detector": True, "indice_name": "main", "use_mclip": False,
            "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image", "num_images": 6,
            "num_result_ids": 6, "verbose": False,
        }  # fmt: skip
        return json.dumps({**body, **query}).encode()

    assert client.get("/indices-list").json() == ["main", "again"]
    results = client.post("/knn-service", content=clip_client_body(text="farmland")).json()
    expected = client.post("/v1/search", json={"text": "farmland", "k": 6}).json()["results"]
    assert [(r["chip_id"], r["similarity"]) for r in results] == [(r["id"], r["score"]) for r in expected]
    assert all(isinstance(r["id"], int) for r in results)
    assert results[0]["url"].endswith(f"/v1/chips/{results[0]['chip_id']}/image")
    jpeg = b64((small_archive / "plain.jpg").read_bytes())
    by_image = client.post("/knn-service", content=clip_client_body(image=jpeg, indice_name="again")).json()
    assert by_image[0]["path"].endswith("plain.jpg")
    ids = [r["id"] for r in results[:3]]
    metadata = client.post("/metadata", content=json.dumps({"ids": ids, "indice_name": "main"}).encode()).json()
    assert [m["id"] for m in metadata["metadata"]] == ids
    assert [m["metadata"]["chip_id"] for m in metadata["metadata"]] == [r["chip_id"] for r in results[:3]]
    refused = client.post("/knn-service", content=clip_client_body(image_url="http://example.com/a.png"))
    assert refused.status_code == 400 and "image_url" in refused.json()["error"]
    assert client.post("/knn-service", content=clip_client_body(indice_name="laion5B")).status_code == 404
    assert client.post("/knn-service", content=clip_client_body(embedding_input=[0.1, 0.2])).status_code == 400
    assert client.post("/metadata", json={"ids": [10_000], "indice_name": "main"}).status_code == 404


def test_concurrent_queries_all_answer_like_sequential_ones(client: httpx.Client, server: Server) -> None:
    texts = [f"scene number {i}" for i in range(16)]
    sequential = {text: client.post("/v1/search", json={"text": text, "k": 3}).json()["results"] for text in texts}
    answers: dict[str, list] = {}

    def ask(text: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            answers[text] = own.post("/v1/search", json={"text": text, "k": 3}).json()["results"]

    threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for text in texts:
        assert [r["id"] for r in answers[text]] == [r["id"] for r in sequential[text]]
        assert [r["score"] for r in answers[text]] == pytest.approx([r["score"] for r in sequential[text]], abs=1e-5)


def test_metrics(client: httpx.Client) -> None:
    client.post("/v1/search", json={"text": "farmland"})
    client.post("/v1/search", json={"text": "x", "k": 0})
    text = client.get("/metrics").text
    assert 'rsretrieve_requests_total{endpoint="/v1/search",method="POST",status="200"}' in text
    assert 'rsretrieve_errors_total{endpoint="/v1/search",status="400"}' in text
    assert 'rsretrieve_request_seconds_bucket{endpoint="/v1/search",le="+Inf"}' in text
    for stage in ("encode", "ann", "records", "total"):
        assert f'rsretrieve_search_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'rsretrieve_encode_batch_size_count{kind="text"}' in text
    assert 'rsretrieve_index_chips{index="main"} 31' in text
    assert "rsretrieve_requests_in_flight 1" in text  # the scrape itself


def test_api_key(servers: tuple[Server, Server], tmp_path: Path) -> None:
    keyed = servers[1]
    good = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=keyed.url, timeout=60) as http:
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        for method, route in (("POST", "/v1/search"), ("GET", "/v1/indexes"), ("GET", "/metrics"),
                              ("GET", "/indices-list"), ("POST", "/knn-service"), ("GET", "/docs")):  # fmt: skip
            assert http.request(method, route, json={"text": "a"}).status_code == 401
            wrong = http.request(method, route, json={"text": "a"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        assert http.post("/v1/search", json={"text": "farmland"}, headers=good).status_code == 200
        assert http.get("/v1/indexes", headers=good).json()["default"] == "archive"  # named after the folder
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    ok = rsretrieve("query", "farmland", "--server", keyed.url, "--api-key-file", key_file, "--json")
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 10, ok.stderr
    assert_one_line_error(rsretrieve("query", "farmland", "--server", keyed.url), "401")


def test_non_loopback_host_needs_a_key(service_db: Path) -> None:
    result = rsretrieve("serve", "--db", service_db, "--host", "0.0.0.0", timeout=60)
    assert_one_line_error(result, "--api-key-file")


def test_reload_after_an_append_while_queries_run(
    client: httpx.Client, server: Server, service_db: Path, tmp_path: Path
) -> None:
    """Runs last: a thread queries while `rsretrieve index` adds files; no query fails and the version grows."""
    before = client.get("/readyz").json()["indexes"]["main"]
    for seed in range(3):
        write_geotiff(tmp_path / f"extra_{seed}" / f"new_2022010{seed + 1}.tif", 256, 128, seed=40 + seed)
    stop = threading.Event()
    failures: list[str] = []
    versions: list[int] = []

    def keep_querying() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            while not stop.is_set():
                response = own.post("/v1/search", json={"text": "farmland", "k": 50})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    versions.append(response.json()["version"])
                chip = own.get("/v1/indexes/main")
                if chip.status_code != 200:
                    failures.append(f"{chip.status_code} {chip.text}")

    thread = threading.Thread(target=keep_querying)
    thread.start()
    try:
        result = rsretrieve("index", tmp_path, "--db", service_db, *RANDOM, "--chip-size", "64", "--quiet",
                            "--commit-chips", "8")  # fmt: skip
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not versions or versions[-1] == before):
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures[:3]
    assert versions and versions[-1] > before
    assert versions == sorted(versions)
    after = client.post("/v1/search", json={"text": "farmland", "k": 100}).json()
    assert len(after["results"]) == 31 + 24  # three 256×128 scenes: 8 chips each
    assert client.get("/v1/indexes").json()["indexes"][0]["chips"] == 55

"""Speed of ``rsretrieve serve`` (issue 13): latency and throughput over HTTP, overhead, cold client.

    python benchmarks/service_speed.py [--sources ../shared/data/geotiff] [--model remoteclip-vit-b-32]
        [--large 1000000] [--clients 1 8 32] [--duration 5] [--workdir DIR] [--out FILE.json]

(``--workdir``: keep the built indexes there and reuse them; the 1M IVF-PQ index takes ~25 min on 2 busy cores.)

Two indexes are served by one ``rsretrieve serve`` process (sharing one model): ``demo``, the real demo archive
indexed with the model's seeded random weights, and ``large``, ``--large`` synthetic chips (8×8-chip scenes over
Europe, vectors from ``speed.Mixture``) written through the store API with an IVF-PQ index, recorded as built
with the same model. Per index, per query kind and per number of concurrent clients (asyncio + httpx in this
process, one keep-alive connection each, a minimal HTTP/1.1 client, for ``--duration`` seconds after a warm-up):

- text: ``POST /v1/search {"text": <a distinct sentence>, "k": 10}`` (the model encodes it, micro-batched);
- vector: ``POST /v1/search {"vector": <512 floats>, "k": 10}`` (no encoding: the search path alone);

→ p50/p95/p99 latency in ms, requests/s, errors, and the mean micro-batch size of the text cells (from /metrics).
``overhead``: median over the same sequential queries of (HTTP round trip with the standard library's keep-alive
``http.client``, JSON encode and decode included) minus (``Searcher.search`` on the query in this process; text:
with this process's own copy of the model; vector: no model). ``client_floor``: ``GET /healthz`` with
``http.client`` and with httpx (httpx alone costs ~3 ms a request here). ``cold_cli``: wall time of
``python -m rsretrieve.cli query ... --server URL --json`` in a fresh interpreter (median of 5).
The client shares the machine's cores with the server: on 2 cores the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("RUST_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

from rsretrieve.query import Query
from rsretrieve.search import Searcher
from rsretrieve.store import ChipStore, Manifest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = ROOT.parent / "shared" / "data" / "geotiff"
OUT = ROOT / "benchmarks" / "results" / "service-cpu.json"
ADJECTIVES = ["green", "dry", "flooded", "dense", "sparse", "bright", "dark", "terraced", "irrigated", "burnt"]
NOUNS = ["farmland", "forest", "harbour", "river", "airport", "desert", "town", "lake", "quarry", "coastline"]
PLACES = ["a road", "the sea", "hills", "a bridge", "a railway", "mountains", "a port", "fields", "a dam", "dunes"]
SEQUENTIAL = {"vector": 150, "text": 60}  # queries of the overhead comparison


def sentences(count: int, offset: int = 0) -> list[str]:
    """Distinct query sentences."""
    out = []
    for i in range(offset, offset + count):
        a, n, p = ADJECTIVES[i % 10], NOUNS[(i // 10) % 10], PLACES[(i // 100) % 10]
        out.append(f"{a} {n} near {p} #{i}")
    return out


def rsretrieve(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rsretrieve.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if check and result.returncode != 0:
        raise SystemExit(f"rsretrieve {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def build_demo(db: Path, sources: Path, model: str) -> float:
    if (db / "manifest.json").is_file():
        return 0.0
    started = time.perf_counter()
    rsretrieve("index", sources, "--db", db, "--model", model, "--random-weights", "--quiet")
    return time.perf_counter() - started


def build_large(db: Path, identity: Any, n: int) -> float:
    """``n`` synthetic chips with an IVF-PQ index, recorded as built with ``identity`` (the demo's model)."""
    if (db / "manifest.json").is_file() and Manifest.read(db).count == n:
        return 0.0
    started = time.perf_counter()
    vectors = speed.Mixture(identity.dim, seed=0).sample(n, stream=1)
    writer, _ = speed.write_store(db, identity, vectors, speed.Layout(n, seed=0))
    speed.rebuild(writer, "ivfpq")
    writer.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(dbs: dict[str, Path], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "rsretrieve.cli", "serve", "--port", str(port)]
    for name, db in dbs.items():
        command += ["--db", f"{name}={db}"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit(f"the server did not get ready: {log.read_text()}")


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies) * 1000
    return {f"p{p}_ms": round(float(np.percentile(values, p)), 2) for p in (50, 95, 99)}


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: ``post(path, body) -> (status, body)``.

    A minimal client so that the client's own cost, which shares the cores with the server, stays small: httpx
    costs ~3 ms a request here (GET /healthz 4.2 ms with httpx, 1.0 ms with ``http.client``), which would be
    charged to the service. Responses must carry Content-Length (every response of the service does).
    """

    def __init__(self, url: str):
        parsed = urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), await reader.readexactly(int(headers["content-length"]))

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def load(url: str, bodies: list[bytes], clients: int, duration: float) -> dict[str, Any]:
    """``clients`` concurrent loops posting ``bodies`` (round robin, JSON encoded once) for ``duration`` s, after a
    warm-up; one keep-alive connection each."""
    latencies: list[float] = []
    errors = 0
    connections = [Connection(url) for _ in range(clients)]
    counter = iter(range(10**9))

    async def loop(connection: Connection, until: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < until:
            body = bodies[next(counter) % len(bodies)]
            started = time.perf_counter()
            status, _ = await connection.post("/v1/search", body)
            elapsed = time.perf_counter() - started
            if status != 200:
                errors += 1
            elif record:
                latencies.append(elapsed)

    try:
        warm = time.perf_counter() + min(1.0, duration / 4)
        await asyncio.gather(*(loop(connection, warm, False) for connection in connections))
        started = time.perf_counter()
        await asyncio.gather(*(loop(connection, started + duration, True) for connection in connections))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "req_per_s": round(len(latencies) / elapsed, 1), **percentiles(latencies)}  # fmt: skip


def batch_counts(url: str) -> tuple[float, float]:
    """(sum, count) of the text micro-batch size histogram."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for key in found:
            if line.startswith(f'rsretrieve_encode_batch_size_{key}{{kind="text"}}'):
                found[key] = float(line.split()[-1])
    return found["sum"], found["count"]


def paired(url: str, searcher: Searcher, bodies: list[dict[str, Any]], queries: list[Query]) -> dict[str, float]:
    """The same queries in this process and over HTTP, in turns (both see the same machine load).

    The HTTP side is what a Python program pays with the standard library's keep-alive ``http.client``: encode the
    body, the round trip, decode the response. Every query is first run once in this process and over HTTP, so
    that both find the vectors it re-ranks in the page cache, and which side goes first alternates per query.
    overhead_p50_ms is the median of the per-query differences; server_total_p50_ms the service's own ``total``.
    """
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=60)

    def remote(body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        connection.request("POST", "/v1/search", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"POST /v1/search answered {response.status}: {payload}")
        return elapsed, payload

    def local(query: Query) -> float:
        started = time.perf_counter()
        searcher.search(query)
        return time.perf_counter() - started

    pairs = list(zip(bodies, queries, strict=True))
    for body, query in pairs:  # warm-up: page cache, model, connection
        local(query)
        remote(body)
    in_process, over_http, server, differences = [], [], [], []
    for turn, (body, query) in enumerate(pairs):
        if turn % 2:
            (http_s, payload), local_s = remote(body), local(query)
        else:
            local_s, (http_s, payload) = local(query), remote(body)
        in_process.append(local_s)
        over_http.append(http_s)
        server.append(payload["timings_ms"]["total"] / 1000)
        differences.append(http_s - local_s)
    connection.close()
    return {
        "queries": len(queries),
        "in_process_p50_ms": round(statistics.median(in_process) * 1000, 2),
        "http_p50_ms": round(statistics.median(over_http) * 1000, 2),
        "server_total_p50_ms": round(statistics.median(server) * 1000, 2),
        "overhead_p50_ms": round(statistics.median(differences) * 1000, 2),
    }


def client_floor(url: str, requests: int = 200) -> dict[str, float]:
    """p50 ms of ``GET /healthz`` (no work in the service) with ``http.client`` and with httpx: what the client and
    the HTTP stack cost alone, and how much more httpx costs."""
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=60)

    def stdlib() -> None:
        connection.request("GET", "/healthz")
        connection.getresponse().read()

    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, call in (("stdlib", stdlib), ("httpx", lambda: client.get("/healthz"))):
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            out[f"healthz_{name}_p50_ms"] = round(statistics.median(times[10:]) * 1000, 2)
    connection.close()
    return out


def cold_cli(url: str, runs: int = 5) -> dict[str, float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        result = rsretrieve("query", f"a harbour with cranes {i}", "--server", url, "--json", "-k", "10")
        times.append(time.perf_counter() - started)
        json.loads(result.stdout)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": runs}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--model", default="remoteclip-vit-b-32", help="indexed with its seeded random weights")
    parser.add_argument("--large", type=int, default=1_000_000, help="synthetic chips of the large index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell")
    parser.add_argument("--workdir", type=Path, help="keep the indexes here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="service-speed-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        demo, large = work / "demo.lance", work / f"large-{args.large}.lance"
        demo_s = build_demo(demo, args.sources, args.model)
        identity = Manifest.read(demo).model_identity()
        large_s = build_large(large, identity, args.large)
        print(f"indexes ready (demo {demo_s:.0f} s, large {large_s:.0f} s)", file=sys.stderr)
        dbs = {"demo": demo, "large": large}
        server, url = start_server(dbs, work / "server.log")
        try:
            record = run(args, url, dbs, identity)
        finally:
            server.terminate()
            server.wait(30)
    record.update(
        {
            "build_s": {"demo": round(demo_s, 1), "large": round(large_s, 1)},
            "load_average_at_start": round(load_at_start, 2),
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "total_s": round(time.perf_counter() - began, 1),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["targets"], indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


def run(args: argparse.Namespace, url: str, dbs: dict[str, Path], identity: Any) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    ready = httpx.get(f"{url}/readyz").json()
    record: dict[str, Any] = {
        "benchmark": "service_speed",
        "model": f"{args.model} (seeded random weights)",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "models_loaded_by_server": ready["models"],
        "indexes": {},
        "cells": [],
    }
    from rsretrieve.models import load_model

    model = load_model(identity.name, None, "cpu", True)  # for the in-process text comparison
    for name, db in dbs.items():
        store = ChipStore(db)
        record["indexes"][name] = {"chips": len(store), "index_type": store.info()["index_type"]}
        vectors = speed.Mixture(identity.dim, seed=0).sample(256, stream=9)
        vectors += rng.normal(0, 0.01, vectors.shape).astype(np.float32)
        vector_bodies = [{"vector": v.round(6).tolist(), "k": 10, "index": name} for v in vectors]
        text_bodies = [{"text": text, "k": 10, "index": name} for text in sentences(4000, offset=len(record["cells"]))]
        for kind, bodies in (("vector", vector_bodies), ("text", text_bodies)):
            encoded = [json.dumps(body).encode() for body in bodies]
            for clients in args.clients:
                before = batch_counts(url)
                cell = asyncio.run(load(url, encoded, clients, args.duration))
                cell["load_average"] = round(os.getloadavg()[0], 2)
                after = batch_counts(url)
                if kind == "text" and after[1] > before[1]:
                    cell["mean_text_batch"] = round((after[0] - before[0]) / (after[1] - before[1]), 2)
                record["cells"].append({"index": name, "kind": kind, **cell})
                print(json.dumps(record["cells"][-1]), file=sys.stderr)
        searcher = Searcher(db, model=model)
        overhead = {}
        for kind, bodies in (("vector", vector_bodies), ("text", text_bodies[::-1])):
            bodies = bodies[: SEQUENTIAL[kind]]
            queries = [
                Query.build(vectors=[np.asarray(b["vector"], np.float32)], k=10)
                if kind == "vector"
                else Query.build(text=b["text"], k=10)
                for b in bodies
            ]
            overhead[kind] = paired(url, searcher, bodies, queries)
            print(kind, json.dumps(overhead[kind]), file=sys.stderr)
        record["indexes"][name]["overhead"] = overhead
    record["client_floor"] = client_floor(url)
    record["cold_cli"] = cold_cli(url)
    record["targets"] = targets(record)
    return record


def targets(record: dict[str, Any]) -> dict[str, Any]:
    def throughput(index: str, clients: int) -> float:
        return next(
            c["req_per_s"] for c in record["cells"] if (c["index"], c["kind"], c["clients"]) == (index, "text", clients)
        )

    out: dict[str, Any] = {}
    for index, figures in record["indexes"].items():
        overhead = figures["overhead"]["vector"]["overhead_p50_ms"]  # HTTP + parsing + thread hop, same search
        out[f"{index}_http_overhead_p50_ms"] = overhead
        out[f"{index}_http_overhead_le_5ms"] = overhead <= 5
        out[f"{index}_text_overhead_p50_ms"] = figures["overhead"]["text"]["overhead_p50_ms"]  # + micro-batching
        clients = sorted({c["clients"] for c in record["cells"]})
        ratio = throughput(index, clients[-1]) / throughput(index, clients[0])
        out[f"{index}_text_throughput_{clients[-1]}_over_{clients[0]}"] = round(ratio, 2)
        out[f"{index}_text_throughput_ge_3x"] = ratio >= 3
    out["errors"] = sum(c["errors"] for c in record["cells"])
    out["cold_cli_median_s"] = record["cold_cli"]["median_s"]
    out["cold_cli_le_0.5s"] = record["cold_cli"]["median_s"] <= 0.5
    return out


if __name__ == "__main__":
    main()

"""Catalog benchmark: load 10,000 extensions, then GetExtension and SearchExtensions over gRPC.

Run: ``.venv/bin/python -m bench.catalog`` (options: ``--extensions N --requests N --concurrency N``).
The catalog runs in its own process on 127.0.0.1; the baseline is ``grpc.health.v1.Health/Check`` on the
same server in the same run (a no-op unary call through the same interceptors).

SearchExtensions runs twice (1,000 requests each by default): with the query mix of one or two words
drawn from a small vocabulary (popular queries repeat, as they do in real traffic), and with queries that
are all different (prefixes of one or two words: every request misses the result cache). The summary
gives the targets as ratios to GetExtension in the same run. Last, a second catalog process is started on
the same database file and the time until a write through the first is found by SearchExtensions on the
second is measured (index freshness across replicas), with the first process's memory after loading.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import Result, console, measure, report, start_service, stop_service
from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import EXTENSIONS_PUBLISH

WORDS = [
    "image",
    "photo",
    "resize",
    "video",
    "audio",
    "text",
    "pdf",
    "invoice",
    "tax",
    "payroll",
    "report",
    "chart",
    "map",
    "route",
    "weather",
    "translate",
    "ocr",
    "sign",
    "archive",
    "backup",
    "sync",
    "mail",
    "calendar",
    "chat",
    "search",
    "index",
    "graph",
    "crypto",
    "ledger",
    "forecast",
    "scan",
    "label",
    "print",
]
CATEGORIES = ["media", "documents", "finance", "productivity", "data", "communication"]
PUBLISHERS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
READY = re.compile(r"catalog serving on (\S+)")
SEARCH_RATIO_TARGET = 0.25
SEARCH_P99_TARGET_MS = 50.0
FRESHNESS_TARGET_SECONDS = 2.0


def _rss_mib(process: subprocess.Popen[str]) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(process: subprocess.Popen[str]) -> float:
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _distinct_queries(rng: random.Random, count: int) -> list[str]:
    """``count`` queries whose word sets all differ: prefixes (3+ letters) of one or two words."""
    seen: set[frozenset[str]] = set()
    out: list[str] = []
    while len(out) < count:
        words = [w[: rng.randint(3, len(w))] if len(w) > 3 else w for w in rng.sample(WORDS, rng.choice([1, 2]))]
        key = frozenset(words)
        if key not in seen:
            seen.add(key)
            out.append(" ".join(words))
    return out


def _extension(rng: random.Random) -> resources_pb2.Extension:
    words = rng.sample(WORDS, 3)
    return resources_pb2.Extension(
        display_name=" ".join(w.title() for w in words[:2]),
        publisher=rng.choice(PUBLISHERS),
        category=rng.choice(CATEGORIES),
        tags=rng.sample(WORDS, 2),
        description=" ".join(rng.choices(WORDS, k=12)),
        labels={"tier": rng.choice(["free", "pro"])},
    )


async def run(extensions: int, requests: int, concurrency: int) -> None:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        issuer = DevIssuer.load_or_create(data_dir)
        metadata = (
            ("authorization", "Bearer " + issuer.issue(tenant="bench", user="bench", roles=[EXTENSIONS_PUBLISH])),
        )
        process, match = start_service(
            "services.catalog",
            {"EXTHUB_DATA_DIR": str(data_dir), "EXTHUB_CATALOG_PORT": "0", "EXTHUB_LOG_LEVEL": "WARNING"},
            READY,
        )
        try:
            async with grpc.aio.insecure_channel(match.group(1)) as channel:
                await asyncio.wait_for(channel.channel_ready(), 10)
                stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                ids = [f"bench-{i:05d}" for i in range(extensions)]
                drafts = [_extension(rng) for _ in ids]

                async def create(index: int) -> object:
                    return await stub.CreateExtension(
                        pb.CreateExtensionRequest(extension_id=ids[index], extension=drafts[index]),
                        metadata=metadata,
                        timeout=30,
                    )

                cpu_ms: dict[str, float] = {}

                async def timed(name: str, call: Callable[[int], Awaitable[object]], **options: int) -> Result:
                    """``measure`` plus the catalog process's CPU time per call (warm-up calls included)."""
                    before = _cpu_seconds(process)
                    result = await measure(name, call, **options)
                    calls = options["requests"] + options.get("warmup", 200)
                    cpu_ms[name] = (_cpu_seconds(process) - before) * 1000 / calls
                    return result

                started = time.perf_counter()
                loaded = await timed("CreateExtension (load)", create, requests=extensions, concurrency=32, warmup=0)
                load_seconds = time.perf_counter() - started
                console.print(f"loaded {extensions:,} extensions in {load_seconds:.1f}s ({loaded.codes})")

                queries = [" ".join(rng.sample(WORDS, rng.choice([1, 2]))) for _ in range(requests)]
                baseline = await timed(
                    "Health/Check (baseline)",
                    lambda i: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
                    requests=requests,
                    concurrency=concurrency,
                )
                get = await timed(
                    "GetExtension",
                    lambda i: stub.GetExtension(
                        pb.GetExtensionRequest(name=f"extensions/{ids[(i * 7919) % extensions]}"),
                        metadata=metadata,
                        timeout=10,
                    ),
                    requests=requests,
                    concurrency=concurrency,
                )
                search = await timed(
                    "SearchExtensions (page 50 + facets)",
                    lambda i: stub.SearchExtensions(
                        pb.SearchExtensionsRequest(query=queries[i % len(queries)], page_size=50),
                        metadata=metadata,
                        timeout=30,
                    ),
                    requests=max(requests // 5, 100),
                    concurrency=concurrency,
                )
                distinct = _distinct_queries(rng, max(requests // 5, 100))
                uncached = await timed(
                    "SearchExtensions, every query new",
                    lambda i: stub.SearchExtensions(
                        pb.SearchExtensionsRequest(query=distinct[i], page_size=50), metadata=metadata, timeout=30
                    ),
                    requests=len(distinct),
                    concurrency=concurrency,
                    warmup=0,
                )
                rss = _rss_mib(process)
                report(
                    f"catalog over gRPC, {extensions:,} extensions, concurrency {concurrency} (1 server process)",
                    [loaded, get, search, uncached],
                    baseline,
                )
                for result in (search, uncached):
                    ratio = result.throughput / get.throughput
                    verdict = (
                        "meets" if ratio >= SEARCH_RATIO_TARGET and result.p99 <= SEARCH_P99_TARGET_MS else "misses"
                    )
                    console.print(
                        f"{result.name}: req/s / GetExtension req/s = {ratio:.2f} (target >= {SEARCH_RATIO_TARGET}); "
                        f"p99 {result.p99:.1f} ms at {concurrency} in flight (target <= {SEARCH_P99_TARGET_MS:.0f}) "
                        f"-> {verdict} the targets"
                    )
                console.print(
                    "catalog CPU per call, ms (less disturbed by other load on the machine than req/s): "
                    + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items())
                )
                for result in (search, uncached):
                    console.print(
                        f"{result.name}: GetExtension CPU per call / its CPU per call = "
                        f"{cpu_ms[get.name] / cpu_ms[result.name]:.2f} (the req/s ratio when the catalog is CPU-bound)"
                    )
                console.print(f"catalog RSS with {extensions:,} extensions indexed: {rss:.0f} MiB")
                await _freshness(stub, metadata, data_dir, ids, rng)
        finally:
            stop_service(process)


async def _freshness(
    writer: catalog_service_pb2_grpc.CatalogServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    data_dir: Path,
    ids: list[str],
    rng: random.Random,
    rounds: int = 20,
) -> None:
    """Seconds from an update through one catalog process until SearchExtensions on another finds it."""
    started = time.perf_counter()
    second, match = start_service(
        "services.catalog",
        {"EXTHUB_DATA_DIR": str(data_dir), "EXTHUB_CATALOG_PORT": "0", "EXTHUB_LOG_LEVEL": "WARNING"},
        READY,
        timeout=120,
    )
    console.print(f"second catalog process ready on the same file in {time.perf_counter() - started:.1f}s")
    lags: list[float] = []
    try:
        async with grpc.aio.insecure_channel(match.group(1)) as channel:
            reader = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            for index in range(rounds):
                word = f"fresh{index}x{rng.randrange(10**9)}"
                name = f"extensions/{ids[rng.randrange(len(ids))]}"
                await writer.UpdateExtension(
                    pb.UpdateExtensionRequest(extension=resources_pb2.Extension(name=name, display_name=word)),
                    metadata=metadata,
                    timeout=10,
                )
                written = time.perf_counter()
                while True:
                    found = await reader.SearchExtensions(
                        pb.SearchExtensionsRequest(query=word), metadata=metadata, timeout=10
                    )
                    if [e.name for e in found.extensions] == [name]:
                        lags.append(time.perf_counter() - written)
                        break
                    if time.perf_counter() - written > 30:
                        raise RuntimeError(f"{name} was not searchable on the second process within 30 s")
                    await asyncio.sleep(0.02)
    finally:
        stop_service(second)
    console.print(
        f"write on one catalog process -> found by SearchExtensions on another ({rounds} updates): "
        f"median {statistics.median(lags):.2f}s, max {max(lags):.2f}s (target <= {FRESHNESS_TARGET_SECONDS:.0f}s)"
    )


def main() -> None:
    """Parses options and runs the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extensions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.extensions, args.requests, args.concurrency))


if __name__ == "__main__":
    main()

"""Catalog benchmark: load 10,000 extensions, then GetExtension and SearchExtensions over gRPC.

Run: ``.venv/bin/python -m bench.catalog`` (options: ``--extensions N --requests N --concurrency N``).
The catalog runs in its own process on 127.0.0.1; the baseline is ``grpc.health.v1.Health/Check`` on the
same server in the same run (a no-op unary call through the same interceptors).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import console, measure, report, start_service, stop_service
from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.dev_tokens import DevIssuer

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
            ("authorization", "Bearer " + issuer.issue(tenant="bench", user="bench", roles=["Extensions.Publish"])),
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

                started = time.perf_counter()
                loaded = await measure("CreateExtension (load)", create, requests=extensions, concurrency=32, warmup=0)
                load_seconds = time.perf_counter() - started
                console.print(f"loaded {extensions:,} extensions in {load_seconds:.1f}s ({loaded.codes})")

                queries = [" ".join(rng.sample(WORDS, rng.choice([1, 2]))) for _ in range(requests)]
                baseline = await measure(
                    "Health/Check (baseline)",
                    lambda i: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
                    requests=requests,
                    concurrency=concurrency,
                )
                get = await measure(
                    "GetExtension",
                    lambda i: stub.GetExtension(
                        pb.GetExtensionRequest(name=f"extensions/{ids[(i * 7919) % extensions]}"),
                        metadata=metadata,
                        timeout=10,
                    ),
                    requests=requests,
                    concurrency=concurrency,
                )
                search = await measure(
                    "SearchExtensions (page 50 + facets)",
                    lambda i: stub.SearchExtensions(
                        pb.SearchExtensionsRequest(query=queries[i % len(queries)], page_size=50),
                        metadata=metadata,
                        timeout=30,
                    ),
                    requests=max(requests // 10, 100),
                    concurrency=concurrency,
                )
                report(
                    f"catalog over gRPC, {extensions:,} extensions, concurrency {concurrency} (1 server process)",
                    [loaded, get, search],
                    baseline,
                )
        finally:
            stop_service(process)


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

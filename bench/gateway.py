"""Gateway benchmark: GetExtension over gRPC direct vs gRPC through Envoy vs REST (JSON) through Envoy.

Run: ``.venv/bin/python -m bench.gateway`` (options: ``--extensions N --requests N --concurrency N
--envoy-workers N --latency-requests N``). Two passes, each measuring the three paths back to back: one call in
flight (the latency the gateway adds, without queueing in the single-process Python service), then
``--concurrency`` calls in flight (throughput). The catalog runs in its own process on 127.0.0.1; Envoy is the
real binary with the rendered ``local`` configuration (JWT verification, RBAC, transcoding and the header filter
all on, access log off); the load generator is this process. The baseline is gRPC direct to the service in the
same pass; the table's ratios and the "added" lines are against it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp
import grpc

from bench.harness import Result, console, measure, report, start_service, stop_service
from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import EXTENSIONS_PUBLISH
from gateway.envoy import start_envoy
from gateway.render import render_config

READY = re.compile(r"catalog serving on (\S+)")


async def run(extensions: int, requests: int, concurrency: int, envoy_workers: int, latency_requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        issuer = DevIssuer.load_or_create(data_dir)
        token = issuer.issue(tenant="bench", user="bench", roles=[EXTENSIONS_PUBLISH], ttl_seconds=3600)
        metadata = (("authorization", f"Bearer {token}"),)
        process, match = start_service(
            "services.catalog",
            {"EXTHUB_DATA_DIR": str(data_dir), "EXTHUB_CATALOG_PORT": "0", "EXTHUB_LOG_LEVEL": "WARNING"},
            READY,
        )
        catalog_address = match.group(1)
        config = render_config(
            "local",
            data_dir=data_dir,
            listen_port=0,
            catalog_address=catalog_address,
            access_log=False,
        )
        envoy = await start_envoy(config, Path(tmp) / "envoy", concurrency=envoy_workers)
        try:
            async with (
                grpc.aio.insecure_channel(catalog_address) as direct_channel,
                grpc.aio.insecure_channel(envoy.address) as envoy_channel,
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=10),
                    connector=aiohttp.TCPConnector(limit=concurrency),
                    headers={"authorization": f"Bearer {token}"},
                ) as http,
            ):
                await asyncio.wait_for(direct_channel.channel_ready(), 10)
                await asyncio.wait_for(envoy_channel.channel_ready(), 10)
                direct = catalog_service_pb2_grpc.CatalogServiceStub(direct_channel)
                through = catalog_service_pb2_grpc.CatalogServiceStub(envoy_channel)
                ids = [f"bench-{i:05d}" for i in range(extensions)]

                async def create(index: int) -> object:
                    draft = resources_pb2.Extension(
                        display_name=f"Bench {index}", publisher="Acme", category="data", tags=["bench"]
                    )
                    return await direct.CreateExtension(
                        pb.CreateExtensionRequest(extension_id=ids[index], extension=draft),
                        metadata=metadata,
                        timeout=30,
                    )

                loaded = await measure("CreateExtension (load)", create, requests=extensions, concurrency=16, warmup=0)
                console.print(f"loaded {extensions:,} extensions ({dict(loaded.codes)})")

                def name(index: int) -> str:
                    return f"extensions/{ids[(index * 7919) % extensions]}"

                rest_codes: Counter[str] = Counter()

                async def rest(index: int) -> object:
                    async with http.get(f"{envoy.url}/v1/{name(index)}") as response:
                        body = await response.read()
                        rest_codes[f"HTTP {response.status}"] += 1
                        return body

                for index in range(200):  # warm-up, as the harness does for the gRPC calls
                    await rest(index)
                for label, count, in_flight in (
                    ("unloaded (one call in flight): the latency the gateway adds", latency_requests, 1),
                    (f"loaded ({concurrency} calls in flight): throughput", requests, concurrency),
                ):
                    if count <= 0:
                        continue
                    baseline = await measure(
                        "gRPC direct",
                        lambda i: direct.GetExtension(
                            pb.GetExtensionRequest(name=name(i)), metadata=metadata, timeout=10
                        ),
                        requests=count,
                        concurrency=in_flight,
                    )
                    via_envoy = await measure(
                        "gRPC via Envoy",
                        lambda i: through.GetExtension(
                            pb.GetExtensionRequest(name=name(i)), metadata=metadata, timeout=10
                        ),
                        requests=count,
                        concurrency=in_flight,
                    )
                    # open the HTTP/1.1 connections this pass uses (one per call in flight) before measuring
                    await asyncio.gather(*(rest(index) for index in range(in_flight)))
                    rest_codes.clear()
                    rest_result = await measure("REST via Envoy", rest, requests=count, concurrency=in_flight, warmup=0)
                    rest_result.codes = Counter(rest_codes)
                    report(
                        f"GetExtension, {label}; {extensions:,} extensions, Envoy {envoy_workers} worker(s), loopback",
                        [via_envoy, rest_result],
                        baseline,
                        notes=_added(baseline, [via_envoy, rest_result]),
                    )
        finally:
            await envoy.stop()
            stop_service(process)


def _added(baseline: Result, results: list[Result]) -> str:
    lines = [
        f"{r.name}: adds {r.median - baseline.median:+.3f} ms median, {r.p99 - baseline.p99:+.3f} ms p99, "
        f"{r.throughput / baseline.throughput:.2f}x the direct throughput"
        for r in results
    ]
    return "\n".join(lines)


def main() -> None:
    """Parses options and runs the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extensions", type=int, default=500)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--envoy-workers", type=int, default=2)
    parser.add_argument(
        "--latency-requests", type=int, default=1_000, help="calls of the unloaded pass (one in flight); 0: skip it"
    )
    args = parser.parse_args()
    asyncio.run(run(args.extensions, args.requests, args.concurrency, args.envoy_workers, args.latency_requests))


if __name__ == "__main__":
    main()

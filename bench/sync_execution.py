"""Synchronous execution benchmark: CreateExecution of echo (sync profile) per second, median and p99.

Run: ``.venv/bin/python -m bench.sync_execution`` (options: ``--requests N --concurrency N --py-spy DIR``).
Catalog, agent, execution service and echo each run in their own process on 127.0.0.1 over one data
directory. Every measured call is the whole synchronous path: catalog lookup (cached: versions are immutable) →
state RUNNING (state + event in one conditional write) → ``AgentService.Execute`` with the extension request signed
ahead by the execution service → signed POST to echo → outcome written (state + event); the outbox relay copies
the events to event documents in the background. The baseline is ``grpc.health.v1.Health/Check`` on the
execution service in the same run (a no-op unary call through the same interceptors). A second table shows the CPU
each process spent per call, which explains the ratio: both rows keep the two cores busy.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from bench.harness import (
    SERVICE_PYTHON,
    console,
    cpu_snapshot,
    free_port,
    measure,
    py_spy,
    report,
    start_service,
    stop_service,
)
from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from services.echo.registration import register_echo

ADDRESS = re.compile(r"serving on (\S+)")
URL = re.compile(r"^(http://\S+)")
PLAIN = "echo-plain"


SYNC_TO_HEALTH_TARGET = 0.15
HEALTH_WARMUP = 200
SYNC_WARMUP = 50


def _per_request_ms(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    """CPU milliseconds per call of each process group between two snapshots (warm-up calls included)."""
    return {group: (after[group] - before[group]) * 1000 / calls for group in after if group in before}


def report_cpu(rows: dict[str, dict[str, float]]) -> None:
    """CPU ms per call per process, and the execution service's share of the sync call."""
    groups = list(next(iter(rows.values())))
    table = Table(title="CPU ms per call, per process (user + system; warm-up calls included)")
    table.add_column("call")
    for group in [*groups, "total"]:
        table.add_column(group, justify="right")
    for name, per_process in rows.items():
        table.add_row(name, *(f"{per_process[g]:.2f}" for g in groups), f"{sum(per_process.values()):.2f}")
    Console(width=max(console.width, 160)).print(table)


def _drain(process: subprocess.Popen[str]) -> None:
    """Keep reading a child's stdout so a chatty child never blocks on a full pipe."""

    def pump() -> None:
        assert process.stdout is not None
        for _ in process.stdout:
            pass

    threading.Thread(target=pump, daemon=True).start()


def _echo(jwks_url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*SERVICE_PYTHON, "-m", "services.echo", "--port", "0", "--jwks-url", jwks_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return process


async def run(requests: int, concurrency: int, profile_dir: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="exthub-bench-") as tmp:
        data_dir = Path(tmp)
        issuer = DevIssuer.load_or_create(data_dir)
        common = {
            "EXTHUB_DATA_DIR": str(data_dir),
            "EXTHUB_LOG_LEVEL": "WARNING",
            "EXTHUB_CATALOG_PORT": "0",
            "EXTHUB_AGENT_PORT": "0",
            "EXTHUB_OBJECTS_PORT": "0",
            # echo listens on loopback (its port is chosen after the hub starts), which the egress policy
            # refuses unless it is allow-listed
            "EXTHUB_EGRESS__ALLOW": "127.0.0.1/32",
        }
        execution_port = free_port()
        execution_address = f"127.0.0.1:{execution_port}"
        processes: list[subprocess.Popen[str]] = []
        try:
            catalog, match = start_service("services.catalog", common, ADDRESS)
            processes.append(catalog)
            catalog_address = match.group(1)
            agent, match = start_service(
                "services.agent", {**common, "EXTHUB_EXECUTION_ADDRESS": execution_address}, ADDRESS
            )
            processes.append(agent)
            agent_address = match.group(1)
            execution, _ = start_service(
                "services.execution",
                {
                    **common,
                    "EXTHUB_EXECUTION_PORT": str(execution_port),
                    "EXTHUB_CATALOG_ADDRESS": catalog_address,
                    "EXTHUB_AGENT_ADDRESS": agent_address,
                },
                ADDRESS,
            )
            processes.append(execution)
            assert execution.stdout is not None
            objects_url = execution.stdout.readline().strip().rsplit(" ", 1)[-1]
            echo = _echo(f"{objects_url}/v1/signingKeys")
            processes.append(echo)
            assert echo.stdout is not None
            echo_url = echo.stdout.readline().strip()
            if not URL.match(echo_url):
                raise RuntimeError("echo did not start")
            for process in processes:
                _drain(process)
            publisher = (
                ("authorization", f"Bearer {issuer.issue(tenant='t', user='p', roles=['Extensions.Publish'])}"),
            )
            runner = (("authorization", f"Bearer {issuer.issue(tenant='t', user='u', roles=['Executions.Run'])}"),)
            async with (
                grpc.aio.insecure_channel(catalog_address) as catalog_channel,
                grpc.aio.insecure_channel(execution_address) as channel,
            ):
                await register_echo(
                    catalog_service_pb2_grpc.CatalogServiceStub(catalog_channel),
                    echo_url=echo_url,
                    metadata=publisher,
                    extension_id=PLAIN,
                    with_objects=False,
                )
                stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                request = execution_service_pb2.CreateExecutionRequest(
                    execution=execution_pb2.Execution(extension_version=f"extensions/{PLAIN}/versions/1.0.0")
                )
                states: dict[str, int] = {}

                async def check(_: int) -> None:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

                async def create(_: int) -> None:
                    execution = await stub.CreateExecution(request, metadata=runner, timeout=30)
                    name = execution_pb2.Execution.State.Name(execution.state)
                    states[name] = states.get(name, 0) + 1

                pids = {
                    "catalog": [catalog.pid],
                    "agent": [agent.pid],
                    "execution": [execution.pid],
                    "echo": [echo.pid],
                }
                before = cpu_snapshot(pids)
                baseline = await measure(
                    "Health/Check (no-op)", check, requests=requests, concurrency=concurrency, warmup=HEALTH_WARMUP
                )
                after_baseline = cpu_snapshot(pids)
                async with py_spy(pids, profile_dir, "sync"):
                    sync = await measure(
                        "CreateExecution (sync echo)",
                        create,
                        requests=requests,
                        concurrency=concurrency,
                        warmup=SYNC_WARMUP,
                    )
                after_sync = cpu_snapshot(pids)
            report(
                "Synchronous execution over gRPC (catalog, agent, execution, echo: one process each)",
                [sync],
                baseline,
                notes=f"final states of the created executions: {states}; concurrency {concurrency}",
            )
            ratio = sync.throughput / baseline.throughput
            console.print(
                f"target: sync exec/s ÷ Health no-op req/s = {ratio:.3f} (≥ {SYNC_TO_HEALTH_TARGET:g}: "
                f"{'met' if ratio >= SYNC_TO_HEALTH_TARGET else 'not met'})"
            )
            report_cpu(
                {
                    baseline.name: _per_request_ms(before, after_baseline, requests + HEALTH_WARMUP),
                    sync.name: _per_request_ms(after_baseline, after_sync, requests + SYNC_WARMUP),
                }
            )
        finally:
            for process in reversed(processes):
                stop_service(process)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_execution")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample every process with py-spy during the measured sync row (collapsed stacks into DIR)",
    )
    args = parser.parse_args()
    console.print(f"running {args.requests} requests at concurrency {args.concurrency}")
    asyncio.run(run(args.requests, args.concurrency, args.py_spy))


if __name__ == "__main__":
    main()

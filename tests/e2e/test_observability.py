"""Observability of a real hub: ``exthub up`` with every part (Envoy, catalog, execution, agent, echo) exporting
spans over OTLP/HTTP to a receiver in this test.

* one asynchronous execution (create → queue → claim → extension → report → terminal) is ONE trace, joined from
  the client's ``traceparent``, with the expected parent/child tree across the gateway, the execution service, the
  agent and echo;
* ``/metrics`` of every service (addresses from ``endpoints.json``) parses as Prometheus text, and the execution
  counters move by exactly the executions the test ran, by state;
* the full run's logs (every part and ``exthub up`` itself) and the exported spans hold none of the secrets the
  test used or the hub keeps (tokens, the status-update key, signing and URL keys, signed URLs, request bodies);
  every log line of the traced execution's processing carries its trace id; ``endpoints.json`` is gone after the
  stop.

The tests share one hub and run in file order; the last one stops it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from exthub.client import StaticTokenProvider, connect
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import AGENT, EXECUTIONS_RUN
from exthub.contract.states import is_terminal_state
from exthub.execution.v1 import (
    agent_task_service_pb2,
    agent_task_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from exthub.type.v1 import types_pb2
from tests.e2e.exthub_up import RunningHub
from tools.otlp_receiver import BackgroundReceiver, Span, format_tree

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 30.0
EXECUTION_TIMEOUT = 90.0
SPANS_WITHIN = 30.0  # Envoy flushes its spans every 5 s
SETTLE_WITHIN = 20.0
SCRAPE_INTERVAL = 0.05
ASYNC_MODEL = "http-json/async/v1"
SYNC_MODEL = "http-json/sync/v1"
PLAIN = "extensions/echo-plain/versions/1.0.0"
State = execution_pb2.Execution.State


@dataclass
class Observed:
    """The running hub, the receiver, and what the tests used (for the final checks)."""

    hub: RunningHub
    receiver: BackgroundReceiver
    data_dir: Path
    issuer: DevIssuer
    secrets: dict[str, str] = field(default_factory=dict)
    traced: tuple[str, str] = ("", "")  # (execution name, trace id) of the traced execution
    stopped: bool = False

    def token(self, *roles: str, user: str = "observer") -> str:
        token = self.issuer.issue(tenant="obs-tenant", user=user, roles=list(roles))
        self.secrets[f"token {user} {','.join(roles)}"] = token
        return token

    def endpoints(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.data_dir / "endpoints.json").read_text("utf-8"))
        return document

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            assert self.hub.stop() == 0


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("observed")
    data_dir = work / "data"
    with BackgroundReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # LOW work is left to the test (it claims and reports one execution itself, with its key)
            "EXTHUB_AGENT_PRIORITIES": "HIGH,NORMAL",
        }
        hub = RunningHub(data_dir, env=env)
        state = Observed(hub, receiver, data_dir, DevIssuer.load_or_create(data_dir))
        try:
            yield state
        finally:
            state.stop()


def _execution(profile: str, request: dict[str, Any], **fields: Any) -> execution_pb2.Execution:
    execution = execution_pb2.Execution(extension_version=PLAIN, profile=profile, **fields)
    execution.request.update(request)
    return execution


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def _find(spans: list[Span], service: str, name: str, kind: str) -> list[Span]:
    return [s for s in spans if s.service == service and s.name == name and s.kind == kind]


def _one(spans: list[Span], service: str, name: str, kind: str) -> Span:
    found = _find(spans, service, name, kind)
    assert len(found) == 1, f"expected one {kind} span {service}/{name}, got {len(found)}:\n{format_tree(spans)}"
    return found[0]


def _ancestors(span: Span, spans: list[Span]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain: list[str] = []
    current: Span | None = span
    while current is not None and current.parent_span_id:
        chain.append(current.parent_span_id)
        current = by_id.get(current.parent_span_id)
    return chain


EXPECTED = (
    ("exthub-execution", "/exthub.execution.v1.ExecutionService/CreateExecution", "server"),
    ("exthub-execution", "send execution-requests", "producer"),
    ("exthub-agent", "process execution-requests", "consumer"),
    ("exthub-agent", "/exthub.execution.v1.AgentTaskService/ClaimExecution", "client"),
    ("exthub-execution", "/exthub.execution.v1.AgentTaskService/ClaimExecution", "server"),
    ("exthub-agent", "POST", "client"),
    ("exthub-echo", "POST /execute", "server"),
    ("exthub-agent", "/exthub.execution.v1.ExecutionService/ReportExecutionStatus", "client"),
    ("exthub-execution", "/exthub.execution.v1.ExecutionService/ReportExecutionStatus", "server"),
    ("exthub-execution", "/exthub.execution.v1.ExecutionService/WatchExecution", "server"),
)


def _complete(trace_id: str) -> Callable[[list[Span]], bool]:
    def check(spans: list[Span]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        gateway = [s for s in mine if s.service == "exthub-gateway"]
        return len(gateway) >= 2 and all(_find(mine, *expected) for expected in EXPECTED)

    return check


async def test_one_async_execution_is_one_trace(observed: Observed) -> None:
    trace_id, root, traceparent = _traceparent()
    metadata = (("authorization", f"Bearer {observed.token(EXECUTIONS_RUN)}"), ("traceparent", traceparent))
    request = _execution("async", {"message": "traced"})
    async with grpc.aio.insecure_channel(observed.hub.address) as channel:  # through the gateway
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        created = await stub.CreateExecution(
            execution_service_pb2.CreateExecutionRequest(execution=request), metadata=metadata, timeout=CALL_TIMEOUT
        )
        final = State.STATE_UNSPECIFIED
        watch = execution_service_pb2.WatchExecutionRequest(name=created.name)
        async for event in stub.WatchExecution(watch, metadata=metadata, timeout=EXECUTION_TIMEOUT):
            if is_terminal_state(event.state):
                final = event.state
                break
    assert final == State.SUCCEEDED
    observed.traced = (created.name, trace_id)

    try:
        received = observed.receiver.wait_for(_complete(trace_id), within=SPANS_WITHIN)
    except TimeoutError:
        pytest.fail(f"incomplete trace:\n{format_tree(s for s in observed.receiver.spans if s.trace_id == trace_id)}")
    spans = [s for s in received if s.trace_id == trace_id]
    tree = format_tree(spans)
    (Path(observed.data_dir).parent / "trace.txt").write_text(tree + "\n", "utf-8")
    assert {s.service for s in spans} >= {"exthub-gateway", "exthub-execution", "exthub-agent", "exthub-echo"}, tree
    gateway_spans = [s for s in spans if s.service == "exthub-gateway"]
    assert all(s.parent_span_id == root for s in gateway_spans), "the gateway joins the client's trace"
    create = _one(spans, *EXPECTED[0])
    assert create.parent_span_id in {s.span_id for s in gateway_spans}, tree
    producer = _one(spans, *EXPECTED[1])
    assert create.span_id in _ancestors(producer, spans), "the attempt is published in the create's trace"
    consumer = _one(spans, *EXPECTED[2])
    assert consumer.parent_span_id == producer.span_id, "the agent continues the trace the message carries"
    assert consumer.attributes["exthub.execution"] == created.name and consumer.attributes["exthub.attempt"] == 1
    assert not [s for s in spans if s.name.endswith("/SignExtensionRequest")], "the claim carried the signed request"
    for method in ("ClaimExecution", "ReportExecutionStatus"):
        service = "ExecutionService" if method == "ReportExecutionStatus" else "AgentTaskService"
        path = f"/exthub.execution.v1.{service}/{method}"
        client = _one(spans, "exthub-agent", path, "client")
        server = _one(spans, "exthub-execution", path, "server")
        assert server.parent_span_id == client.span_id, tree
        assert consumer.span_id in _ancestors(client, spans), tree
        assert server.attributes["exthub.execution"] == created.name, "the server span names the execution"
    post = _one(spans, "exthub-agent", "POST", "client")
    extension = _one(spans, "exthub-echo", "POST /execute", "server")
    assert extension.parent_span_id == post.span_id, "traceparent on the agent's request to the extension"
    assert consumer.span_id in _ancestors(post, spans), tree
    watch_span = _one(spans, *EXPECTED[-1])
    assert watch_span.parent_span_id in {s.span_id for s in gateway_spans}, tree
    assert all(s.status_code != 2 for s in spans), f"no span of a successful execution is an error:\n{tree}"


# ---- metrics --------------------------------------------------------------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL from endpoints.json
        text = response.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def _run(stub: Any, metadata: Any, execution: execution_pb2.Execution) -> int:
    created = await stub.CreateExecution(
        execution_service_pb2.CreateExecutionRequest(execution=execution), metadata=metadata, timeout=CALL_TIMEOUT
    )
    if is_terminal_state(created.state):
        return int(created.state)
    watch = execution_service_pb2.WatchExecutionRequest(name=created.name)
    async for event in stub.WatchExecution(watch, metadata=metadata, timeout=EXECUTION_TIMEOUT):
        if is_terminal_state(event.state):
            return int(event.state)
    raise AssertionError(f"{created.name} did not finish")


async def test_metrics_of_every_service_move_by_exactly_what_ran(observed: Observed) -> None:
    parts = observed.endpoints()["parts"]
    urls = {name: parts[name]["metrics"] for name in ("catalog", "execution", "agent")}
    before = {name: _scrape(url) for name, url in urls.items()}
    metadata = (("authorization", f"Bearer {observed.token(EXECUTIONS_RUN)}"),)
    runs = [
        (_execution("async", {"n": 1}), State.SUCCEEDED),
        (_execution("async", {"n": 2}), State.SUCCEEDED),
        (_execution("async", {"failWith": 400}), State.FAILED),
        (_execution("default", {"n": 3}), State.SUCCEEDED),
    ]
    async with grpc.aio.insecure_channel(observed.hub.address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        for execution, expected in runs:
            assert await _run(stub, metadata, execution) == expected

    finished = "exthub_executions_finished_total"
    expected_finished = {
        (ASYNC_MODEL, "SUCCEEDED"): 2.0,
        (ASYNC_MODEL, "FAILED"): 1.0,
        (SYNC_MODEL, "SUCCEEDED"): 1.0,
    }

    def delta(name: str, part: str, after: dict[Any, float], **labels: str) -> float:
        return _value(after, name, **labels) - _value(before[part], name, **labels)

    def settled(after: dict[Any, float]) -> bool:  # the outbox relay counts right after the write
        return all(
            delta(finished, "execution", after, execution_model=m, priority="NORMAL", state=s) >= n
            for (m, s), n in expected_finished.items()
        )

    after = _scrape(urls["execution"])
    async with asyncio.timeout(SETTLE_WITHIN):  # the terminal event is relayed (and counted) right after the write
        while not settled(after):
            await asyncio.sleep(SCRAPE_INTERVAL)
            after = _scrape(urls["execution"])
    for (model, state), count in expected_finished.items():
        labels = {"execution_model": model, "priority": "NORMAL", "state": state}
        assert delta(finished, "execution", after, **labels) == count, (model, state)
    for model, first_state, count in ((ASYNC_MODEL, "QUEUED", 3.0), (SYNC_MODEL, "RUNNING", 1.0)):
        labels = {"execution_model": model, "priority": "NORMAL", "state": first_state}
        assert delta("exthub_executions_created_total", "execution", after, **labels) == count
        attempts = {"execution_model": model, "priority": "NORMAL"}
        assert delta("exthub_execution_attempts_total", "execution", after, **attempts) == count
    for state in ("QUEUED", "RUNNING", "PENDING_INPUTS", "DIRECT_TOKEN_ISSUED"):
        others = {"execution_model": ASYNC_MODEL, "priority": "HIGH", "state": state}
        assert delta("exthub_executions_created_total", "execution", after, **others) == 0
    create = {"rpc_service": "exthub.execution.v1.ExecutionService", "rpc_method": "CreateExecution"}
    assert delta("rpc_server_duration_seconds_count", "execution", after, **create, rpc_grpc_status_code="0") == 4
    for priority in ("HIGH", "NORMAL", "LOW"):
        for state in ("active", "scheduled"):
            assert ("exthub_queue_messages", (("priority", priority), ("state", state))) in after
        assert ("exthub_queue_oldest_message_age_seconds", (("priority", priority),)) in after
        assert ("exthub_queue_dead_letters", (("priority", priority),)) in after

    agent_after = _scrape(urls["agent"])
    execute = {"rpc_service": "exthub.agent.v1.AgentService", "rpc_method": "Execute", "rpc_grpc_status_code": "0"}
    assert delta("rpc_server_duration_seconds_count", "agent", agent_after, **execute) == 1
    catalog_after = _scrape(urls["catalog"])
    version = {"rpc_service": "exthub.catalog.v1.CatalogService", "rpc_method": "GetExtensionVersion"}
    assert (
        delta("rpc_server_duration_seconds_count", "catalog", catalog_after, **version, rpc_grpc_status_code="0") >= 1
    )
    for scrape in (after, agent_after, catalog_after):
        methods = {dict(k[1]).get("rpc_method", "") for k in scrape if k[0] == "rpc_server_duration_seconds_count"}
        assert not [method for method in methods if "executions/" in method]


async def test_without_traceparent_the_gateway_starts_the_trace_and_object_transfers_are_in_one(
    observed: Observed, tmp_path: Path
) -> None:
    """A client that sends no trace context: Envoy starts a trace for each request; the object upload's trace
    reaches the execution service's object endpoint (a server span under the gateway's)."""
    document = tmp_path / "document.txt"
    document.write_text("traced upload\n", "utf-8")
    before = {s.span_id for s in observed.receiver.spans}
    token = StaticTokenProvider(observed.token(EXECUTIONS_RUN, user="uploader"))
    async with connect(observed.hub.url, token_provider=token) as hub:
        request = execution_pb2.Execution(extension_version="extensions/echo/versions/1.0.0")
        request.request.update({"n": 4})
        done = await hub.create_and_wait(request, inputs={"document": document}, max_wait=EXECUTION_TIMEOUT)
    assert done.state == State.SUCCEEDED

    def started_by_the_gateway(spans: list[Span]) -> list[Span]:
        """The execution service's upload and create server spans right under a trace root the gateway made."""
        roots = {s.span_id for s in spans if s.service == "exthub-gateway" and s.parent_span_id == ""}
        return [
            s
            for s in spans
            if s.span_id not in before and s.parent_span_id in roots and (_is_upload(s) or _is_create(s))
        ]

    def complete(spans: list[Span]) -> bool:
        found = started_by_the_gateway(spans)
        return any(_is_upload(s) for s in found) and any(_is_create(s) for s in found)

    try:
        observed.receiver.wait_for(complete, within=SPANS_WITHIN)
    except TimeoutError:
        fresh = [s for s in observed.receiver.spans if s.span_id not in before]
        pytest.fail(f"no upload and create in traces the gateway started:\n{format_tree(fresh)}")
    spans = observed.receiver.spans
    by_id = {s.span_id: s for s in spans}
    for server in started_by_the_gateway(spans):
        assert by_id[server.parent_span_id].trace_id == server.trace_id


def _is_upload(span: Span) -> bool:
    return (
        span.service == "exthub-execution"
        and span.kind == "server"
        and span.name.startswith("PUT ")
        and "/objects" in span.name
    )


def _is_create(span: Span) -> bool:
    return (
        span.service == "exthub-execution"
        and span.kind == "server"
        and span.name == "/exthub.execution.v1.ExecutionService/CreateExecution"
    )


# ---- secrets and log correlation (stops the hub) ------------------------------------------------------------------


def _report_rest(url: str, execution: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        f"{url}/v1/{execution}:reportStatus",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        document: dict[str, Any] = json.loads(response.read())
    return document


def _key_material(data_dir: Path) -> dict[str, str]:
    """What must never leave the key files: private PEM bodies, private JWK members, raw keys (hex, base64)."""
    found: dict[str, str] = {}
    for path in [*data_dir.rglob("*.pem"), *data_dir.rglob("*.key"), *data_dir.rglob("*.json")]:
        if "logs" in path.parts or path.name == "endpoints.json":
            continue
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if "PRIVATE KEY" in text:
            body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
            found[f"{path.name} body"] = body[40:120]
        elif path.suffix == ".key":
            found[f"{path.name} hex"] = raw.hex()
            found[f"{path.name} b64"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        elif path.suffix == ".json" and '"d"' in text:
            document = json.loads(text)
            for key in document.get("keys", [document]) if isinstance(document, dict) else []:
                if isinstance(key, dict) and isinstance(key.get("d"), str):
                    found[f"{path.name} d"] = key["d"]
    return found


async def test_no_secret_in_any_log_and_every_line_of_the_execution_carries_its_trace(observed: Observed) -> None:
    # one LOW execution that nothing consumes: this test plays the agent with its own claim and status key
    run_metadata = (("authorization", f"Bearer {observed.token(EXECUTIONS_RUN)}"),)
    agent_metadata = (("authorization", f"Bearer {observed.token(AGENT, user='test-agent')}"),)
    marker = f"request-body-{secrets.token_hex(12)}"
    observed.secrets["request body"] = marker
    execution_address = observed.endpoints()["parts"]["execution"]["grpc"]
    async with grpc.aio.insecure_channel(observed.hub.address) as gateway:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(gateway)
        created = await stub.CreateExecution(
            execution_service_pb2.CreateExecutionRequest(
                execution=_execution("async", {"secret": marker}, priority=types_pb2.LOW)
            ),
            metadata=run_metadata,
            timeout=CALL_TIMEOUT,
        )
    async with grpc.aio.insecure_channel(execution_address) as direct:
        tasks = agent_task_service_pb2_grpc.AgentTaskServiceStub(direct)
        claimed = await tasks.ClaimExecution(
            agent_task_service_pb2.ClaimExecutionRequest(name=created.name, attempt=1, agent_id="test-agent"),
            metadata=agent_metadata,
            timeout=CALL_TIMEOUT,
        )
    key = claimed.task.status_update_key
    assert len(key) >= 32
    observed.secrets["status update key"] = key
    report = {"statusUpdateKey": key, "attempt": 1, "state": "RUNNING", "percentComplete": 50}
    _report_rest(observed.hub.url, created.name, report, observed.token(user="extension"))
    done = _report_rest(
        observed.hub.url,
        created.name,
        {"statusUpdateKey": key, "attempt": 1, "state": "SUCCEEDED", "result": {"echo": marker}},
        observed.token(user="extension-2"),
    )
    assert done["state"] == "SUCCEEDED"
    async with grpc.aio.insecure_channel(observed.hub.address) as gateway:
        got = await execution_service_pb2_grpc.ExecutionServiceStub(gateway).GetExecution(
            execution_service_pb2.GetExecutionRequest(name=created.name), metadata=run_metadata, timeout=CALL_TIMEOUT
        )
    assert json_format.MessageToDict(got.result) == {"echo": marker}

    spans = observed.receiver.spans
    destination = f"OTLP http/protobuf {observed.receiver.endpoint}/v1/traces"
    assert observed.endpoints()["tracing"] == destination, "endpoints.json says where traces go"
    observed.stop()  # every part flushed its logs and spans
    assert not (observed.data_dir / "endpoints.json").exists(), "endpoints.json is removed on a clean stop"
    assert f"traces: {destination}" in observed.hub.log.read_text("utf-8"), "exthub up says where traces go"

    observed.secrets.update(_key_material(observed.data_dir))
    kept = [name for name in observed.secrets if name.endswith((" body", " hex"))]
    assert len(kept) >= 4, f"the key files were found (issuer and signing PEMs, URL and page-token keys): {kept}"
    logs = [
        *sorted((observed.data_dir / "logs").glob("*.log")),
        *sorted((observed.data_dir / "gateway").glob("*.log")),
        observed.hub.log,
    ]
    assert len(logs) >= 6, logs
    texts = {path.name: path.read_text("utf-8", errors="replace") for path in logs}
    exported = json.dumps([{"name": s.name, "attributes": dict(s.attributes)} for s in spans], default=str)
    for what, secret in observed.secrets.items():
        assert len(secret) >= 16, what
        for name, text in texts.items():
            assert secret not in text, f"{what} appears in {name}"
        assert secret not in exported, f"{what} appears in an exported span"

    name, trace_id = observed.traced
    assert name, "the trace test ran first"
    lines = [
        json.loads(line)
        for path in (observed.data_dir / "logs").glob("*.log")
        for line in path.read_text("utf-8").splitlines()
        if line.startswith("{")
    ]
    about = [line for line in lines if line.get("execution") == name]
    assert len(about) >= 6, f"the traced execution's processing logged {len(about)} lines"
    assert {line["logger"] for line in about} >= {"exthub.access", "exthub.agent.worker"}
    wrong = [line for line in about if line.get("trace_id") != trace_id]
    assert not wrong, f"lines without the execution's trace id: {wrong[:3]}"

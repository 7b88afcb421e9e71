"""Observability on the Azure profile: ``exthub up --backend azure --emulators`` (Cosmos DB, Service Bus, Blob
Storage and Entra ID stand-ins) with every part exporting spans to a receiver in this test.

* one asynchronous execution is one trace across Service Bus: the execution service's PRODUCER span's context rides
  the message's application properties to the agent's CONSUMER span, and on into echo's request;
* ``/metrics`` of the execution service counts it, and has no queue gauges: the Service Bus queue offers no stats
  (Azure Monitor's Service Bus metrics hold those numbers on Azure);
* ``exthub up`` says where traces go and ``endpoints.json`` lists the parts, on this profile too.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.exthub_up import RunningHub, dev_token
from tests.e2e.test_hub_azure import AZURE, CALL_TIMEOUT, START_TIMEOUT, watch
from tools.otlp_receiver import BackgroundReceiver, Span, format_tree

pytestmark = pytest.mark.slow

SPANS_WITHIN = 30.0  # Envoy flushes its spans every 5 s


def _create(url: str, bearer: str, traceparent: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        f"{url}/v1/executions",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {bearer}", "content-type": "application/json", "traceparent": traceparent},
    )
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:  # noqa: S310
        document: dict[str, object] = json.loads(response.read())
    return document


def _one(spans: list[Span], service: str, name: str, kind: str) -> Span:
    found = [s for s in spans if (s.service, s.name, s.kind) == (service, name, kind)]
    assert len(found) == 1, f"expected one {kind} span {service}/{name}, got {len(found)}:\n{format_tree(spans)}"
    return found[0]


def test_one_async_execution_is_one_trace_across_service_bus_and_metrics_have_no_queue_gauges(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with BackgroundReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        hub = RunningHub(data_dir, args=AZURE, start_timeout=START_TIMEOUT, env=env)
        try:
            endpoints = json.loads((data_dir / "endpoints.json").read_text("utf-8"))
            assert endpoints["tracing"] == f"OTLP http/protobuf {receiver.endpoint}/v1/traces"
            run = dev_token(data_dir, "Executions.Run", timeout=60)
            trace_id, root = secrets.token_hex(16), secrets.token_hex(8)
            body: dict[str, object] = {
                "extensionVersion": "extensions/echo-plain/versions/latest",
                "profile": "async",
                "request": {},
            }
            queued = _create(hub.url, run, f"00-{trace_id}-{root}-01", body)
            assert queued["state"] == "QUEUED", queued
            events = watch(f"{hub.url}/v1/{queued['name']}:watch", run)
            assert events[-1]["state"] == "SUCCEEDED", events

            def complete(spans: list[Span]) -> bool:
                mine = {(s.service, s.name, s.kind) for s in spans if s.trace_id == trace_id}
                return {
                    ("exthub-execution", "send execution-requests", "producer"),
                    ("exthub-agent", "process execution-requests", "consumer"),
                    ("exthub-echo", "POST /execute", "server"),
                    ("exthub-gateway", "ingress", "server"),
                } <= mine

            try:
                received = receiver.wait_for(complete, within=SPANS_WITHIN)
            except TimeoutError:
                pytest.fail(f"incomplete trace:\n{format_tree(s for s in receiver.spans if s.trace_id == trace_id)}")
            spans = [s for s in received if s.trace_id == trace_id]
            producer = _one(spans, "exthub-execution", "send execution-requests", "producer")
            consumer = _one(spans, "exthub-agent", "process execution-requests", "consumer")
            assert consumer.parent_span_id == producer.span_id, "the trace crossed Service Bus in the message"
            assert consumer.attributes["exthub.execution"] == queued["name"]
            post = _one(spans, "exthub-agent", "POST", "client")
            assert _one(spans, "exthub-echo", "POST /execute", "server").parent_span_id == post.span_id

            metrics_url = endpoints["parts"]["execution"]["metrics"]
            with urllib.request.urlopen(metrics_url, timeout=CALL_TIMEOUT) as response:  # noqa: S310 - loopback
                families = list(text_string_to_metric_families(response.read().decode("utf-8")))
            names = {family.name for family in families}
            assert not [name for name in names if name.startswith("exthub_queue_")], "no queue gauges on Service Bus"
            finished = {
                (sample.labels["execution_model"], sample.labels["state"]): sample.value
                for family in families
                if family.name == "exthub_executions_finished"
                for sample in family.samples
                if sample.name == "exthub_executions_finished_total"
            }
            assert finished.get(("http-json/async/v1", "SUCCEEDED"), 0) >= 1, finished
        finally:
            code = hub.stop()
    assert code == 0, hub.log.read_text()[-3000:]
    assert not (data_dir / "endpoints.json").exists(), "removed on a clean stop"
    assert f"traces: OTLP http/protobuf {receiver.endpoint}/v1/traces" in hub.log.read_text("utf-8")

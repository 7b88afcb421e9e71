"""Tracing configuration from the standard OTEL_* variables, and log correlation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.platform import telemetry
from services.platform.logging import (
    configure_logging,
    enable_trace_context,
    execution_context,
    get_logger,
)
from services.platform.settings import Settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("http/protobuf", "http://c:4318/v1/traces")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, ("http/protobuf", "http://c:4318/v1/traces")),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/t"}, ("http/protobuf", "http://c:9/t")),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x"},
            ("http/protobuf", "http://b/x"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            ("grpc", "http://c:4317"),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            ("grpc", "http://c:4317"),
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_otlp_endpoint_resolution(env: dict[str, str], expected: tuple[str, str] | None) -> None:
    assert telemetry.otlp_traces_endpoint(env) == expected


def test_unsupported_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="http/json"):
        telemetry.otlp_traces_endpoint(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


def test_destination_in_words() -> None:
    assert telemetry.tracing_destination({}) is None
    assert telemetry.tracing_destination({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == (
        "OTLP http/protobuf http://c:4318/v1/traces"
    )
    assert "Azure Monitor" in (telemetry.tracing_destination({}, azure_monitor=True) or "")


def test_azure_monitor_needs_its_connection_string() -> None:
    with pytest.raises(ValueError, match="APPLICATIONINSIGHTS_CONNECTION_STRING"):
        telemetry.configure_telemetry("execution", azure_monitor=True, env={})
    assert not telemetry.current().enabled


def test_azure_monitor_exporter_and_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", secret)
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")  # no call home from a test
    configured = telemetry.configure_telemetry(
        "execution", azure_monitor=True, env={"APPLICATIONINSIGHTS_CONNECTION_STRING": secret}, instance_id="replica-1"
    )
    try:
        assert configured.enabled and configured.destination is not None and secret not in configured.destination
        provider = configured.provider
        assert isinstance(provider, TracerProvider)
        attributes = dict(provider.resource.attributes)
        assert attributes["service.name"] == "exthub-execution"
        assert attributes["service.instance.id"] == "replica-1"
        assert attributes["service.version"]
        processors = provider._active_span_processor._span_processors
        exporters = [type(p.span_exporter).__name__ for p in processors]  # type: ignore[attr-defined]
        assert exporters == ["AzureMonitorTraceExporter"]
        assert telemetry.configure_telemetry("other") is configured, "one set-up per process"
    finally:
        telemetry.shutdown_telemetry()
    assert not telemetry.current().enabled


@pytest.mark.usefixtures("_restore_logging")
def test_log_lines_carry_the_trace_and_the_execution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.local_defaults(tmp_path, log_format="json"))
    log = get_logger("exthub.test")
    tracer = TracerProvider().get_tracer("test")
    log.info("no trace yet")
    enable_trace_context()
    with tracer.start_as_current_span("work") as span:
        with execution_context("executions/e-1", 2):
            log.info("inside")
            logging.getLogger("a.library").warning("stdlib inside")
        with execution_context(None):
            log.info("no execution")
    log.info("after")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    by_event = {line["event"]: line for line in lines}
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    for event in ("inside", "stdlib inside"):
        assert by_event[event]["trace_id"] == trace_id and by_event[event]["span_id"] == span_id
        assert by_event[event]["execution"] == "executions/e-1" and by_event[event]["attempt"] == 2
    assert by_event["no execution"]["trace_id"] == trace_id and "execution" not in by_event["no execution"]
    for event in ("no trace yet", "after"):
        assert "trace_id" not in by_event[event] and "execution" not in by_event[event]

"""endpoints.json: every part's addresses, written atomically, removed when the hub stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exthub.cli.endpoints import ENDPOINTS_FILE, read_endpoints, remove_endpoints, write_endpoints


def test_written_from_what_each_part_announced(tmp_path: Path) -> None:
    path = write_endpoints(
        tmp_path,
        url="http://127.0.0.1:8080",
        tracing=None,
        pid=10,
        parts=[
            ("catalog", 11, ["127.0.0.1:50051", "http://127.0.0.1:50055"]),
            ("agent", 12, ["127.0.0.1:50053", "http://127.0.0.1:50056"]),
            ("echo", 13, ["http://127.0.0.1:41000"]),
            ("execution", 14, ["127.0.0.1:50052", "http://127.0.0.1:50054", "http://127.0.0.1:50054"]),
            ("gateway", 15, ["http://127.0.0.1:8080"]),
        ],
    )
    assert path == tmp_path / ENDPOINTS_FILE
    assert [p.name for p in tmp_path.iterdir()] == [ENDPOINTS_FILE], "no temporary file is left"
    document = read_endpoints(tmp_path)
    assert document == json.loads(path.read_text())
    assert document["url"] == "http://127.0.0.1:8080" and document["pid"] == 10 and document["tracing"] is None
    parts = document["parts"]
    assert parts["catalog"] == {
        "pid": 11,
        "grpc": "127.0.0.1:50051",
        "http": "http://127.0.0.1:50055",
        "metrics": "http://127.0.0.1:50055/metrics",
    }
    assert parts["agent"]["metrics"] == "http://127.0.0.1:50056/metrics"
    assert parts["execution"]["objects"] == "http://127.0.0.1:50054"
    assert parts["execution"]["metrics"] == "http://127.0.0.1:50054/metrics"
    assert parts["echo"] == {"pid": 13, "http": "http://127.0.0.1:41000"}
    assert parts["gateway"] == {"pid": 15, "http": "http://127.0.0.1:8080", "grpc": "127.0.0.1:8080"}


def test_rewritten_and_removed(tmp_path: Path) -> None:
    parts = [("echo", 1, ["http://127.0.0.1:1"])]
    write_endpoints(tmp_path, url="http://a", tracing="OTLP http/protobuf http://c/v1/traces", parts=parts)
    write_endpoints(tmp_path, url="http://a", tracing=None, parts=[("echo", 2, ["http://127.0.0.1:1"])])
    assert read_endpoints(tmp_path)["parts"]["echo"]["pid"] == 2
    remove_endpoints(tmp_path)
    remove_endpoints(tmp_path)  # idempotent
    with pytest.raises(FileNotFoundError):
        read_endpoints(tmp_path)


def test_exthub_up_names_where_traces_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exthub.cli.supervisor import traces_destination

    for name in ("ENDPOINT", "TRACES_ENDPOINT", "PROTOCOL", "TRACES_PROTOCOL"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    for name in ("OTEL_SDK_DISABLED", "EXTHUB_TELEMETRY__AZURE_MONITOR"):
        monkeypatch.delenv(name, raising=False)
    assert traces_destination(tmp_path) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert traces_destination(tmp_path) == "OTLP http/protobuf http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("EXTHUB_TELEMETRY__AZURE_MONITOR", "true")  # the setting the services read
    assert traces_destination(tmp_path) == (
        "OTLP http/protobuf http://127.0.0.1:4318/v1/traces, Azure Monitor (APPLICATIONINSIGHTS_CONNECTION_STRING)"
    )

"""The gateway traces with OpenTelemetry only when an OTLP endpoint is configured (and Envoy accepts the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exthub.contract.dev_tokens import DevIssuer
from gateway.envoy import validate_config
from gateway.render import OTEL_TRACER, OTLP_CLUSTER, main, render_config, tracing_params, write_config

AZURE = {"tenant_id": "t", "client_id": "c", "app_id_uri": "api://exthub"}


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    DevIssuer.load_or_create(tmp_path / "data")
    return tmp_path / "data"


def test_no_endpoint_no_tracing(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir)
    assert "tracing" not in hcm(config)
    assert OTLP_CLUSTER not in clusters(config)


def test_otlp_http_endpoint_traces_through_its_own_cluster(tmp_path: Path, data_dir: Path) -> None:
    endpoint = "http://127.0.0.1:4318/v1/traces"
    config = render_config("local", data_dir=data_dir, otlp_traces_endpoint=endpoint)
    provider = hcm(config)["tracing"]["provider"]
    assert provider["name"] == OTEL_TRACER
    assert provider["typed_config"]["service_name"] == "exthub-gateway"
    assert provider["typed_config"]["http_service"]["http_uri"] == {
        "uri": endpoint,
        "cluster": OTLP_CLUSTER,
        "timeout": "5s",
    }
    address = clusters(config)[OTLP_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4318}
    path = write_config(tmp_path / "traced.yaml", "local", data_dir=data_dir, otlp_traces_endpoint=endpoint)
    assert "OK" in validate_config(path)


def test_otlp_grpc_over_tls_on_the_azure_target(tmp_path: Path) -> None:
    endpoint = "https://collector.monitoring.svc.cluster.local"
    params = {"otlp_traces_endpoint": endpoint, "otlp_protocol": "grpc", **AZURE}
    config = render_config("azure", **params)
    typed = hcm(config)["tracing"]["provider"]["typed_config"]
    assert typed["grpc_service"] == {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "5s"}
    cluster = clusters(config)[OTLP_CLUSTER]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["transport_socket"]["typed_config"]["sni"] == "collector.monitoring.svc.cluster.local"
    assert "http2_protocol_options" in str(cluster["typed_extension_protocol_options"])
    path = write_config(tmp_path / "azure-traced.yaml", "azure", **params)
    assert "OK" in validate_config(path)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "ftp://collector", "http://"])
def test_a_malformed_endpoint_is_refused(data_dir: Path, endpoint: str) -> None:
    with pytest.raises(ValueError, match="OTLP endpoint"):
        render_config("local", data_dir=data_dir, otlp_traces_endpoint=endpoint)


def test_tracing_params_follow_the_standard_variables() -> None:
    assert tracing_params({}) == {}
    assert tracing_params({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == {
        "otlp_traces_endpoint": "http://c:4318/v1/traces",
        "otlp_protocol": "http/protobuf",
    }
    assert tracing_params({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == {
        "otlp_traces_endpoint": "http://c:4317",
        "otlp_protocol": "grpc",
    }
    assert tracing_params({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}) == {}


def test_cli_option(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "cli.yaml"
    argv = ["--target", "local", "--data-dir", str(data_dir), "-o", str(out)]
    assert main([*argv, "--otlp-traces-endpoint", "http://127.0.0.1:4318/v1/traces"]) == 0
    assert OTEL_TRACER in out.read_text()


def test_access_log_has_no_query_string_and_the_trace_id(tmp_path: Path, data_dir: Path) -> None:
    """A signed object URL carries its signature in the query: the access log records the path only."""
    config = render_config("local", data_dir=data_dir)
    (logger,) = hcm(config)["access_log"]
    log_format = logger["typed_config"]["log_format"]
    fields = log_format["json_format"]
    assert fields["path"] == "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"
    assert fields["grpc_path"] == "%REQ_WITHOUT_QUERY(:PATH)%"
    assert fields["trace_id"] == "%TRACE_ID%"
    with_query = ("%REQ(:PATH)%", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "%REQ(PATH)%")
    assert not [value for value in fields.values() if value in with_query]
    assert log_format["formatters"][0]["name"] == "envoy.formatter.req_without_query"
    assert "OK" in validate_config(write_config(tmp_path / "logged.yaml", "local", data_dir=data_dir))

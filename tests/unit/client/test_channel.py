"""Target parsing and the service config: retries only where a repeat cannot do harm."""

from __future__ import annotations

import json

import pytest

from exthub.client import Target, retryable_methods, service_config
from exthub.client.channel import KEEPALIVE_TIME_MS, channel_options
from services.platform.server import SERVER_OPTIONS

CATALOG = "exthub.catalog.v1.CatalogService"
EXECUTION = "exthub.execution.v1.ExecutionService"


@pytest.mark.parametrize(
    ("text", "address", "secure"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080/", "127.0.0.1:8080", False),
        ("https://hub.example.com", "hub.example.com:443", True),
        ("https://hub.example.com:8443", "hub.example.com:8443", True),
        ("grpc://127.0.0.1:50051", "127.0.0.1:50051", False),
        ("grpcs://hub.example.com", "hub.example.com:443", True),
        ("localhost:50051", "localhost:50051", False),
        ("[::1]:50051", "[::1]:50051", False),
        ("http://[::1]:8080", "[::1]:8080", False),
        ("http://hub", "hub:80", False),
    ],
)
def test_targets(text: str, address: str, secure: bool) -> None:
    assert Target.parse(text) == Target(address, secure)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ftp://x:1", "unsupported scheme"),
        ("http://x:1/v1/extensions", "must not have a path"),
        ("localhost", "needs a port"),
        ("http://x:99999", "invalid port"),
        ("http://:80", "no host"),
    ],
)
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target.parse(text)


def test_only_methods_bound_to_http_get_are_retried() -> None:
    safe = retryable_methods()
    assert set(safe[CATALOG]) == {
        "GetExtension",
        "ListExtensions",
        "SearchExtensions",
        "GetExtensionVersion",
        "ListExtensionVersions",
    }
    assert {
        "GetExecution",
        "ListExecutions",
        "ListExecutionEvents",
        "WatchExecution",
        "WaitExecution",
        "GetSigningKeys",
    } <= set(safe[EXECUTION])
    never = {
        "CreateExecution",
        "ContinueExecution",
        "CancelExecution",
        "RetryExecution",
        "ReportExecutionStatus",
    }
    assert not never & set(safe[EXECUTION])
    assert set(safe) == {CATALOG, EXECUTION}, "the client knows the public services only"
    assert all(name.startswith(("Get", "List", "Search", "Watch", "Wait")) for names in safe.values() for name in names)


def test_service_config_declares_the_retry_policy_for_those_methods_only() -> None:
    config = service_config()
    (method_config,) = config["methodConfig"]
    named = {(n["service"], n["method"]) for n in method_config["name"]}
    assert named == {(s, m) for s, methods in retryable_methods().items() for m in methods}
    assert all("method" in n for n in method_config["name"])  # never a whole-service entry
    policy = method_config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 4 and policy["initialBackoff"] == "0.1s" and policy["maxBackoff"] == "2.0s"
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_channel_options_carry_the_config_and_a_keepalive_the_servers_accept() -> None:
    options = dict(channel_options())
    assert json.loads(str(options["grpc.service_config"])) == service_config()
    assert options["grpc.enable_retries"] == 1
    server_minimum = dict(SERVER_OPTIONS)["grpc.http2.min_ping_interval_without_data_ms"]
    assert options["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS >= server_minimum
    assert options["grpc.keepalive_timeout_ms"] == 10_000

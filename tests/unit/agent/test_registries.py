"""Adapter and extension-service registries, the shipped providers, the signing sources."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import error_info
from exthub.contract.signatures import verify_body_signature
from exthub.execution.v1 import execution_pb2
from services.agent.adapters import AdapterRegistry, KeyRingBodySigner
from services.agent.extension_services import (
    ExtensionServiceRegistry,
    ServiceRequest,
    default_extension_services,
)
from services.agent.outcomes import AttemptFailure
from services.execution.signing import SigningKeyRing


class _Adapter:
    async def execute(
        self, task: execution_pb2.ExecutionTask, *, time_limit: float | None = None
    ) -> agent_pb.ExecuteResponse:
        return agent_pb.ExecuteResponse()


class _Broken:
    async def build_context(self, request: ServiceRequest) -> Mapping[str, Any]:
        raise RuntimeError("secret internals")


def _task(**services: dict[str, Any]) -> execution_pb2.ExecutionTask:
    task = execution_pb2.ExecutionTask(execution="executions/e", attempt=1, tenant="contoso", user="ada")
    for name, config in services.items():
        task.services[name.replace("_", "/")].update(config)
    return task


def _reason(failure: AttemptFailure) -> str:
    info = error_info(failure.response(_task()).error)
    assert info is not None
    return str(info.reason)


def test_adapter_registry() -> None:
    adapter = _Adapter()
    registry = AdapterRegistry({"http-json/sync/v1": adapter, "grpc/async/v2": adapter})
    assert registry.models == ("grpc/async/v2", "http-json/sync/v1")
    assert registry.get("http-json/sync/v1") is adapter
    assert registry.get("http-json/sync/v9") is None
    with pytest.raises(ValueError, match="already registered"):
        registry.register("grpc/async/v2", adapter)
    for bad in ("", "http-json", "HTTP/v1", "http-json/sync/1", "http-json/sync/v0", "/v1"):
        with pytest.raises(ValueError, match="invalid execution model"):
            registry.register(bad, adapter)


async def test_config_and_greeting_contexts() -> None:
    registry = default_extension_services()
    assert registry.names == ("config/v1", "greeting/v1")
    contexts = await registry.build_contexts(
        _task(config_v1={"url": "https://x", "limit": 10, "nested": {"on": True}}, greeting_v1={"salutation": "Hi"})
    )
    assert contexts == {
        "config/v1": {"url": "https://x", "limit": 10, "nested": {"on": True}},
        "greeting/v1": {"message": "Hi, ada of contoso"},
    }
    assert await registry.build_contexts(_task()) == {}


async def test_unknown_service_is_a_permanent_failure() -> None:
    with pytest.raises(AttemptFailure) as caught:
        await default_extension_services().build_contexts(_task(config_v1={}, billing_v2={}, audit_v1={}))
    assert caught.value.outcome == agent_pb.ExecuteResponse.FAILED
    assert _reason(caught.value) == "EXTENSION_SERVICE_UNSUPPORTED"
    assert caught.value.error.metadata["services"] == "audit/v1,billing/v2"


async def test_failing_provider_does_not_leak_its_exception() -> None:
    registry = ExtensionServiceRegistry({"broken/v1": _Broken()})
    with pytest.raises(AttemptFailure) as caught:
        await registry.build_contexts(_task(broken_v1={}))
    assert _reason(caught.value) == "EXTENSION_SERVICE_FAILED"
    assert "secret" not in caught.value.error.message
    with pytest.raises(AttemptFailure):
        await default_extension_services().build_contexts(_task(greeting_v1={"salutation": 42}))


def test_service_names_are_validated() -> None:
    registry = ExtensionServiceRegistry()
    for bad in ("config", "Config/v1", "config/1", "config/v0", "a/b/v1"):
        with pytest.raises(ValueError, match="invalid extension service name"):
            registry.register(bad, _Broken())
    registry.register("x/v1", _Broken())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x/v1", _Broken())


async def test_key_ring_signer_signs_the_exact_bytes(tmp_path: Path) -> None:
    ring = SigningKeyRing.load_or_create(tmp_path, hub_id="hub")
    body = b'{"extensionId":"echo","a":1}'
    signature = await KeyRingBodySigner(ring).sign("executions/e", 1, body)
    header = verify_body_signature(signature, body, ring.jwks())
    assert header["kid"] == ring.current_kid
    assert (header["aud"], header["execution"], header["attempt"]) == ("extensions/echo", "executions/e", 1)

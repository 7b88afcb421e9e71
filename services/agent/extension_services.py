"""Extension service providers: what the agent puts under ``services`` in the request.

A version declares the services it uses (``services``: name → configuration Struct); for each one the agent
asks the provider registered under that name (``name/vN``) for a JSON *context*, and the adapter sends
``services = {name: context}`` to the extension.

Shipped providers:

- ``config/v1`` hands the version's configuration for the service to the extension unchanged;
- ``greeting/v1`` (an example) returns ``{"message": "Hello, <userId> of <tenantId>"}``;
  its configuration may set ``salutation`` (default ``Hello``).

A service the agent does not provide fails the attempt (FAILED, ``EXTENSION_SERVICE_UNSUPPORTED``) before any
call to the extension: an extension that declared a service relies on it, and silently leaving it out would
turn into a confusing failure (or a wrong result) inside the extension.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from exthub.contract.structs import struct_to_dict
from exthub.execution.v1 import execution_pb2
from services.agent.json_values import json_integers
from services.agent.outcomes import (
    EXTENSION_SERVICE_FAILED,
    EXTENSION_SERVICE_UNSUPPORTED,
    AttemptFailure,
)
from services.platform.logging import get_logger

__all__ = [
    "CONFIG_SERVICE",
    "GREETING_SERVICE",
    "ConfigServiceProvider",
    "ExtensionServiceProvider",
    "ExtensionServiceRegistry",
    "GreetingServiceProvider",
    "ServiceRequest",
    "default_extension_services",
]

_log = get_logger("exthub.agent.services")

CONFIG_SERVICE = "config/v1"
GREETING_SERVICE = "greeting/v1"
SERVICE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}/v[1-9][0-9]{0,3}$")
MAX_CONTEXT_BYTES = 256 * 1024


@dataclass(frozen=True)
class ServiceRequest:
    """What a provider gets: the service name, the version's configuration for it (JSON), and the task."""

    name: str
    configuration: Mapping[str, Any]
    task: execution_pb2.ExecutionTask


class ExtensionServiceProvider(Protocol):
    """Builds one service's context for one attempt. Must not block; raise any exception to fail the attempt."""

    async def build_context(self, request: ServiceRequest) -> Mapping[str, Any]:
        """The JSON object the extension receives as ``services[name]``."""
        ...


class ConfigServiceProvider:
    """``config/v1``: the version's configuration for the service, as is."""

    async def build_context(self, request: ServiceRequest) -> Mapping[str, Any]:
        return dict(request.configuration)


class GreetingServiceProvider:
    """``greeting/v1`` (example): ``{"message": "<salutation>, <userId> of <tenantId>"}``."""

    async def build_context(self, request: ServiceRequest) -> Mapping[str, Any]:
        salutation = request.configuration.get("salutation", "Hello")
        if not isinstance(salutation, str) or not salutation or len(salutation) > 64:
            raise ValueError("salutation must be a string of 1 to 64 characters")
        task = request.task
        return {"message": f"{salutation}, {task.user or 'anonymous'} of {task.tenant or 'no tenant'}"}


class ExtensionServiceRegistry:
    """Providers by service name (``name/vN``)."""

    def __init__(self, providers: Mapping[str, ExtensionServiceProvider] | None = None) -> None:
        self._providers: dict[str, ExtensionServiceProvider] = {}
        for name, provider in (providers or {}).items():
            self.register(name, provider)

    def register(self, name: str, provider: ExtensionServiceProvider) -> None:
        """Add a provider; the name must look like ``name/vN`` and be new."""
        if not SERVICE_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"invalid extension service name {name!r}: expected name/vN")
        if name in self._providers:
            raise ValueError(f"extension service {name!r} is already registered")
        self._providers[name] = provider

    def get(self, name: str) -> ExtensionServiceProvider | None:
        """The provider of ``name``, if any."""
        return self._providers.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The registered service names, sorted."""
        return tuple(sorted(self._providers))

    def unsupported(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that no provider serves, sorted."""
        return sorted(name for name in names if name not in self._providers)

    async def build_contexts(self, task: execution_pb2.ExecutionTask) -> dict[str, Any]:
        """``{name: context}`` for every service of ``task``; raises :class:`AttemptFailure` (FAILED) when a
        service is unknown or its provider fails."""
        missing = self.unsupported(task.services)
        if missing:
            _log.warning(
                "extension services not provided by this agent",
                execution=task.execution,
                services=missing,
                provided=list(self.names),
            )
            raise AttemptFailure.permanent(
                f"this agent does not provide the extension service(s) {', '.join(missing)}",
                EXTENSION_SERVICE_UNSUPPORTED,
                metadata={"services": ",".join(missing)},
            )
        contexts: dict[str, Any] = {}
        for name in sorted(task.services):
            provider = self._providers[name]
            configuration = json_integers(struct_to_dict(task.services[name]))
            try:
                context = dict(await provider.build_context(ServiceRequest(name, configuration, task)))
                size = len(json.dumps(context, allow_nan=False).encode("utf-8"))
            except AttemptFailure:
                raise
            except Exception as exc:
                _log.warning(
                    "extension service failed", execution=task.execution, service=name, error=type(exc).__name__
                )
                raise AttemptFailure.permanent(
                    f"the extension service {name} could not build its context",
                    EXTENSION_SERVICE_FAILED,
                    metadata={"service": name},
                ) from None
            if size > MAX_CONTEXT_BYTES:
                raise AttemptFailure.permanent(
                    f"the context of the extension service {name} exceeds {MAX_CONTEXT_BYTES} bytes",
                    EXTENSION_SERVICE_FAILED,
                    metadata={"service": name},
                )
            contexts[name] = context
        return contexts


def default_extension_services() -> ExtensionServiceRegistry:
    """The providers shipped with the agent: ``config/v1`` and ``greeting/v1``."""
    return ExtensionServiceRegistry(
        {CONFIG_SERVICE: ConfigServiceProvider(), GREETING_SERVICE: GreetingServiceProvider()}
    )

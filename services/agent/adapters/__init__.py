"""Execution adapters and their registry by execution model name."""

from __future__ import annotations

import aiohttp

from exthub.contract.execution import HTTP_JSON_MODELS
from services.agent.adapters.http_json import HttpJsonAdapter
from services.agent.adapters.registry import AdapterRegistry, ExecutionAdapter
from services.agent.adapters.signing import BodySigner, KeyRingBodySigner, PreparedRequest, SigningRefused
from services.agent.extension_services import ExtensionServiceRegistry
from services.platform.egress import EgressPolicy

__all__ = [
    "AdapterRegistry",
    "BodySigner",
    "ExecutionAdapter",
    "HttpJsonAdapter",
    "KeyRingBodySigner",
    "PreparedRequest",
    "SigningRefused",
    "default_adapters",
]


def default_adapters(
    session: aiohttp.ClientSession,
    *,
    services: ExtensionServiceRegistry,
    signer: BodySigner | None = None,
    sign: bool = True,
    user_agent: str = "exthub-agent",
    egress: EgressPolicy | None = None,
) -> AdapterRegistry:
    """The adapters shipped with the agent: one :class:`HttpJsonAdapter` for both http-json models."""
    http_json = HttpJsonAdapter(
        session, services=services, signer=signer, sign=sign, user_agent=user_agent, egress=egress
    )
    return AdapterRegistry(dict.fromkeys(HTTP_JSON_MODELS, http_json))

"""The Exthub client library for internal callers: a configured channel and helpers for the common flows.

```python
from exthub.client import DevTokenProvider, connect
from exthub.execution.v1 import execution_pb2

async with connect("http://127.0.0.1:8080", token_provider=DevTokenProvider(data_dir, roles=["Executions.Run"])) as hub:
    done = await hub.create_and_wait(
        execution_pb2.Execution(extension_version="extensions/echo/versions/latest"), inputs={"document": path}
    )
    await hub.download_outputs(done, Path("out"))
```

Tokens: :class:`StaticTokenProvider`, :class:`DevTokenProvider` (local hub), :class:`AzureCredentialTokenProvider`
(azure-identity). The channel adds the token and a default deadline to every call and retries reads on
UNAVAILABLE through the gRPC service config (:mod:`exthub.client.channel`).
"""

from __future__ import annotations

from exthub.client.channel import DEFAULT_TIMEOUT_SECONDS, Target, retryable_methods, service_config
from exthub.client.errors import ExecutionWaitTimeout, ObjectTransferError, RpcErrorDetails, rpc_error_details
from exthub.client.hub import DEFAULT_WAIT_SECONDS, HubClient, connect, with_expected_inputs
from exthub.client.tokens import (
    AzureCredentialTokenProvider,
    DevTokenProvider,
    StaticTokenProvider,
    TokenProvider,
    TokenProviderError,
)
from exthub.contract.states import is_terminal_state, state_name

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "AzureCredentialTokenProvider",
    "DevTokenProvider",
    "ExecutionWaitTimeout",
    "HubClient",
    "ObjectTransferError",
    "RpcErrorDetails",
    "StaticTokenProvider",
    "Target",
    "TokenProvider",
    "TokenProviderError",
    "connect",
    "is_terminal_state",
    "retryable_methods",
    "rpc_error_details",
    "service_config",
    "state_name",
    "with_expected_inputs",
]

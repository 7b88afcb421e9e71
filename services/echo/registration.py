"""Register the sample extension ``echo`` in the catalog: ``extensions/echo`` version ``1.0.0``.

Profiles: ``default`` (``http-json/sync/v1``, with validation), ``async`` (``http-json/async/v1``, priorities
LOW, NORMAL, HIGH) and ``direct`` (mode DIRECT, 5-minute tokens); input ``document`` (optional), output
``report``. Idempotent: an extension or version that exists already is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import duration_pb2

from exthub.catalog.v1 import catalog_service_pb2, resources_pb2
from exthub.contract.execution import HTTP_JSON_ASYNC, HTTP_JSON_SYNC
from exthub.type.v1 import types_pb2

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

EXTENSION_ID = "echo"
VERSION_ID = "1.0.0"
CALL_TIMEOUT_SECONDS = 10.0
_ALL_PRIORITIES = (types_pb2.LOW, types_pb2.NORMAL, types_pb2.HIGH)


def echo_version(
    echo_url: str, *, with_objects: bool = True, object_provider: str = "local/v1"
) -> resources_pb2.ExtensionVersion:
    """The ``1.0.0`` version of echo served at ``echo_url`` (``with_objects=False``: no input, no output); its
    profiles keep inputs and outputs with ``object_provider`` (``az-blob/v1`` on the Azure profile)."""
    base = echo_url.rstrip("/")
    settings = {"execution_url": f"{base}/execute", "validation_url": f"{base}/validate"}
    version = resources_pb2.ExtensionVersion(
        release_notes="The sample extension.",
        supports_validation=True,
        execution_timeout=duration_pb2.Duration(seconds=300),
        profiles=[
            resources_pb2.ExecutionProfile(
                name="default",
                description="Synchronous: the outcome comes with the create call.",
                execution_model=HTTP_JSON_SYNC,
                mode=resources_pb2.ExecutionProfile.GATEWAY,
                object_provider=object_provider,
                supported_priorities=_ALL_PRIORITIES,
                extension_settings=settings,
            ),
            resources_pb2.ExecutionProfile(
                name="async",
                description="Queued and run by an agent.",
                execution_model=HTTP_JSON_ASYNC,
                mode=resources_pb2.ExecutionProfile.GATEWAY,
                object_provider=object_provider,
                supported_priorities=_ALL_PRIORITIES,
                extension_settings=settings,
            ),
            resources_pb2.ExecutionProfile(
                name="direct",
                description="A signed token to call echo directly.",
                execution_model=HTTP_JSON_SYNC,
                mode=resources_pb2.ExecutionProfile.DIRECT,
                object_provider=object_provider,
                supported_priorities=_ALL_PRIORITIES,
                extension_settings=settings,
                direct_token_ttl=duration_pb2.Duration(seconds=300),
            ),
        ],
    )
    if with_objects:
        version.inputs.add(name="document", description="Any file; echo hashes it.", required=False)
        version.outputs.add(name="report", description="The JSON of the request parameters.")
    return version


async def register_echo(
    catalog_stub: CatalogServiceAsyncStub,
    *,
    echo_url: str,
    metadata: Sequence[tuple[str, str]] | Any,
    extension_id: str = EXTENSION_ID,
    with_objects: bool = True,
    object_provider: str = "local/v1",
) -> None:
    """Create ``extensions/echo`` and its version ``1.0.0`` unless they exist (caller: Extensions.Publish).

    ``extension_id``/``with_objects=False`` register the same app under another id without objects (no
    accessors to mint per call: benchmarks and plain sync tests use this). ``document`` is optional, so an
    execution of ``echo`` runs at once unless its request names ``document`` in ``expected_inputs``.
    ``object_provider`` is the provider of its profiles (the one the deployment offers).
    """
    try:
        await catalog_stub.CreateExtension(
            catalog_service_pb2.CreateExtensionRequest(
                extension_id=extension_id,
                extension=resources_pb2.Extension(
                    display_name="Echo",
                    publisher="Exthub",
                    description="The sample extension: echoes its request, reads inputs, writes outputs.",
                    category="samples",
                    tags=["sample", "echo"],
                ),
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    try:
        await catalog_stub.CreateExtensionVersion(
            catalog_service_pb2.CreateExtensionVersionRequest(
                parent=f"extensions/{extension_id}",
                version_id=VERSION_ID,
                version=echo_version(echo_url, with_objects=with_objects, object_provider=object_provider),
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise

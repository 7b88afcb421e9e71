"""Object providers: short-lived, scoped, signed accessors for execution inputs and outputs.

``port`` holds the provider contract; ``local`` the embedded ``local/v1`` provider (files under the data
directory, HMAC-signed expiring URLs) and ``http`` the aiohttp app that serves those URLs.
"""

from services.objects.port import (
    AccessMode,
    Accessor,
    ObjectKind,
    ObjectProvider,
    ObjectRef,
    validate_execution_id,
    validate_object_name,
)

__all__ = [
    "AccessMode",
    "Accessor",
    "ObjectKind",
    "ObjectProvider",
    "ObjectRef",
    "validate_execution_id",
    "validate_object_name",
]

"""Object providers: short-lived, scoped, signed accessors for execution inputs and outputs.

``port`` holds the provider contract; ``local`` the embedded ``local/v1`` provider (files under the data
directory, HMAC-signed expiring URLs) and ``http`` the aiohttp app that serves those URLs; ``azblob`` the
``az-blob/v1`` provider (Blob Storage, user-delegation SAS).
"""

from services.objects.port import (
    AccessMode,
    Accessor,
    ObjectKind,
    ObjectProvider,
    ObjectRef,
    SealedObject,
    validate_execution_id,
    validate_object_name,
)

__all__ = [
    "AccessMode",
    "Accessor",
    "ObjectKind",
    "ObjectProvider",
    "ObjectRef",
    "SealedObject",
    "validate_execution_id",
    "validate_object_name",
]

"""``az-blob/v1``: objects in one Blob Storage container, reached through user-delegation SAS URLs.

Blob layout (container ``exthub-objects`` by default)::

    executions/<execution>/uploads/<name>   an input as uploaded (the only blob an input's upload accessor names)
    executions/<execution>/inputs/<name>    the sealed input (written only by seal_input; what downloads read)
    executions/<execution>/outputs/<name>   an output (written by the extension, read by the client)

Accessors are user-delegation SAS URLs for exactly one blob (``sr=b``), HTTPS only: uploads ``sp=cw`` (create,
write; PUT with ``x-ms-blob-type: BlockBlob``), downloads ``sp=r``, expiring after the requested TTL (capped by
``max_ttl``). They are signed locally with a user-delegation key the service's own identity obtains
(``Storage Blob Delegator`` on the account; the SAS then carries that identity's rights on the container:
``Storage Blob Data Contributor``). The key is cached and replaced well before it expires.

A user-delegation SAS cannot be revoked on its own (only every SAS of a key, by revoking all the account's
delegation keys). So sealing never tries: ``seal_input`` copies the uploaded blob (server-side, from a short
read-only SAS of it, only if the destination does not exist yet: the first seal wins) to the input's final
name, which no write accessor ever names, hashes the copy, records the SHA-256 in its metadata and deletes the
upload. A PUT through an old upload URL afterwards only recreates a blob under ``uploads/`` that nothing reads
(and that ``delete_execution`` removes). Bodies are stored as sent; Blob Storage also keeps the upload's
``Content-Encoding`` and returns it on download.

Every call is bounded by ``operation_timeout``; any storage or identity failure is ``Unavailable``
(``BACKEND_UNAVAILABLE``), with the cause in the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobProperties, BlobSasPermissions, UserDelegationKey
from azure.storage.blob import generate_blob_sas as _generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, ExponentialRetry

from services.objects.port import Accessor, HttpMethod, ObjectRef, SealedObject, validate_execution_id
from services.platform.errors import FailedPrecondition, InvalidArgument, Unavailable

__all__ = ["PROVIDER_NAME", "AzureBlobObjectProvider", "blob_name"]

_log = logging.getLogger(__name__)

PROVIDER_NAME = "az-blob/v1"
BLOB_PREFIX = "executions"
DEFAULT_MAX_TTL = timedelta(hours=6)
DELEGATION_KEY_LIFETIME = timedelta(hours=24)
DELEGATION_KEY_MARGIN = timedelta(minutes=10)
DELEGATION_KEY_BACKDATE = timedelta(minutes=5)
SEAL_SOURCE_TTL = timedelta(minutes=10)
DEFAULT_OPERATION_TIMEOUT = 15.0
DEFAULT_MAX_INPUT_BYTES = 1024 * 1024 * 1024
HASH_BYTES_PER_SECOND = 8 * 1024 * 1024
SHA256_METADATA = "exthubsha256"
_SEAL_ATTEMPTS = 3
_COPY_POLL_SECONDS = 0.2

_UPLOAD_HEADERS = {"x-ms-blob-type": "BlockBlob"}


def blob_name(ref: ObjectRef, *, upload: bool = False) -> str:
    """The blob of ``ref``: ``executions/<id>/{inputs|outputs}/<name>``, or for an input's upload
    (``upload=True``) ``executions/<id>/uploads/<name>``."""
    if ref.kind == "input":
        return f"{BLOB_PREFIX}/{ref.execution}/{'uploads' if upload else 'inputs'}/{ref.name}"
    return f"{BLOB_PREFIX}/{ref.execution}/outputs/{ref.name}"


class _Retry(Exception):
    """Something changed under a seal (a re-upload, a concurrent seal): start the seal over."""


@dataclass
class _DelegationKey:
    key: UserDelegationKey
    expires: float


class AzureBlobObjectProvider:
    """The ``az-blob/v1`` provider over ``azure-storage-blob`` aio. Build it with :meth:`open`; ``close`` it."""

    name = PROVIDER_NAME

    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        *,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
        delegation_key_lifetime: timedelta = DELEGATION_KEY_LIFETIME,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_ttl <= timedelta(0) or operation_timeout <= 0 or max_input_bytes <= 0:
            raise ValueError("max_ttl, operation_timeout and max_input_bytes must be positive")
        if delegation_key_lifetime > timedelta(days=7):
            raise ValueError("a user delegation key is valid for at most 7 days")
        if delegation_key_lifetime < max_ttl + 2 * DELEGATION_KEY_MARGIN:
            raise ValueError("delegation_key_lifetime must exceed max_ttl by at least 20 minutes")
        self.service = service
        self.container_name = container
        self.container: ContainerClient = service.get_container_client(container)
        self.max_ttl = max_ttl
        self.delegation_key_lifetime = delegation_key_lifetime
        self.operation_timeout = operation_timeout
        self.max_input_bytes = max_input_bytes
        self._clock = clock
        self._key: _DelegationKey | None = None
        self._key_lock = asyncio.Lock()
        self.delegation_keys_fetched = 0

    @classmethod
    async def open(
        cls,
        account_url: str,
        container: str,
        credential: AsyncTokenCredential,
        *,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
        delegation_key_lifetime: timedelta = DELEGATION_KEY_LIFETIME,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        clock: Callable[[], float] = time.time,
        **client_options: Any,
    ) -> AzureBlobObjectProvider:
        """The provider for ``container`` of the account at ``account_url``, authorised by ``credential``
        (``services.platform.azure.identity``). ``client_options`` go to ``BlobServiceClient`` (for example
        ``connection_verify``); by default each try is bounded (connect 5 s, read 30 s) with two quick retries."""
        options: dict[str, Any] = {
            "connection_timeout": 5,
            "read_timeout": 30,
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2, random_jitter_range=1),
            **client_options,
        }
        service = BlobServiceClient(account_url, credential=credential, **options)
        return cls(
            service,
            container,
            max_ttl=max_ttl,
            delegation_key_lifetime=delegation_key_lifetime,
            operation_timeout=operation_timeout,
            max_input_bytes=max_input_bytes,
            clock=clock,
        )

    async def close(self) -> None:
        """Close the storage client (the credential belongs to the caller)."""
        await self.service.close()

    # ---- accessors -------------------------------------------------------------------------------------

    async def upload_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return await self._accessor(blob_name(ref, upload=True), "PUT", ttl)

    async def download_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return await self._accessor(blob_name(ref), "GET", ttl)

    async def _accessor(self, blob: str, method: HttpMethod, ttl: timedelta) -> Accessor:
        if ttl <= timedelta(0):
            raise InvalidArgument.field("ttl", "must be positive")
        ttl = min(ttl, self.max_ttl)
        now = self._clock()
        expiry = datetime.fromtimestamp(math.floor(now + ttl.total_seconds()), UTC)
        permission = BlobSasPermissions(create=True, write=True) if method == "PUT" else BlobSasPermissions(read=True)
        sas = self._sas(blob, permission, expiry, await self._delegation_key(now))
        return Accessor(
            uri=f"{self.container.get_blob_client(blob).url}?{sas}",
            method=method,
            headers=dict(_UPLOAD_HEADERS) if method == "PUT" else {},
            expire_time=expiry,
            access_mode="WRITE_ONLY" if method == "PUT" else "READ_ONLY",
        )

    def _sas(self, blob: str, permission: BlobSasPermissions, expiry: datetime, key: UserDelegationKey) -> str:
        return _generate_blob_sas(
            account_name=str(self.service.account_name),
            container_name=self.container_name,
            blob_name=blob,
            user_delegation_key=key,
            permission=permission,
            expiry=expiry,
            protocol="https",
        )

    async def _delegation_key(self, now: float) -> UserDelegationKey:
        """The cached user-delegation key, replaced when it would expire before a max-TTL SAS issued now."""
        needed_until = now + (self.max_ttl + DELEGATION_KEY_MARGIN).total_seconds()
        current = self._key
        if current is not None and current.expires >= needed_until:
            return current.key
        async with self._key_lock:
            current = self._key
            if current is not None and current.expires >= needed_until:
                return current.key
            start = datetime.fromtimestamp(math.floor(now - DELEGATION_KEY_BACKDATE.total_seconds()), UTC)
            expiry = datetime.fromtimestamp(math.floor(now + self.delegation_key_lifetime.total_seconds()), UTC)
            async with self._guard("get a user delegation key"):
                key = await self.service.get_user_delegation_key(start, expiry)
            self.delegation_keys_fetched += 1
            self._key = _DelegationKey(key, expiry.timestamp())
            return key

    # ---- objects ---------------------------------------------------------------------------------------

    async def exists(self, ref: ObjectRef) -> bool:
        return await self.size(ref) is not None

    async def size(self, ref: ObjectRef) -> int | None:
        async with self._guard("read blob properties"):
            props = await self._properties(self.container.get_blob_client(blob_name(ref)))
            if props is None and ref.kind == "input":
                props = await self._properties(self.container.get_blob_client(blob_name(ref, upload=True)))
        return None if props is None else int(props.size)

    async def seal_input(self, ref: ObjectRef) -> SealedObject | None:
        if ref.kind != "input":
            raise InvalidArgument.field("object.kind", "only inputs are sealed")
        sealed = self.container.get_blob_client(blob_name(ref))
        upload = self.container.get_blob_client(blob_name(ref, upload=True))
        for _ in range(_SEAL_ATTEMPTS):
            try:
                async with self._guard("seal an input"):
                    props = await self._properties(sealed)
                    if props is None:
                        source = await self._properties(upload)
                        if source is None:
                            return None
                        props = await self._copy_upload(upload, source, sealed)
                    props = await self._settled(sealed, props)
                result = await self._record_digest(sealed, props)
            except _Retry:
                continue
            async with self._guard("delete an upload"):
                with contextlib.suppress(ResourceNotFoundError):
                    await upload.delete_blob()
            return result
        _log.warning("sealing an input kept changing under it", extra={"blob": sealed.blob_name})
        raise Unavailable("object storage is unavailable")

    async def _copy_upload(self, upload: BlobClient, source: BlobProperties, sealed: BlobClient) -> BlobProperties:
        """Copy exactly the upload version ``source`` to the sealed name, only if that name does not exist."""
        if int(source.size) > self.max_input_bytes:
            raise FailedPrecondition(
                f"the input {sealed.blob_name.rsplit('/', 1)[-1]!r} is larger than {self.max_input_bytes} bytes",
                reason="INPUT_TOO_LARGE",
            )
        now = self._clock()
        expiry = datetime.fromtimestamp(math.floor(now + SEAL_SOURCE_TTL.total_seconds()), UTC)
        sas = self._sas(upload.blob_name, BlobSasPermissions(read=True), expiry, await self._delegation_key(now))
        try:
            await sealed.start_copy_from_url(
                f"{upload.url}?{sas}",
                match_condition=MatchConditions.IfMissing,
                source_etag=source.etag,
                source_match_condition=MatchConditions.IfNotModified,
            )
        except ResourceExistsError:
            pass  # sealed by someone else meanwhile: theirs wins
        except ResourceModifiedError:
            raise _Retry from None  # re-uploaded meanwhile: seal the newer upload
        props = await self._properties(sealed)
        if props is None:
            raise _Retry  # removed meanwhile (a failed copy cleaned up by a concurrent seal)
        return props

    async def _settled(self, sealed: BlobClient, props: BlobProperties) -> BlobProperties:
        """Wait for a pending copy; a failed or aborted one is deleted and the seal starts over."""
        while props.copy.status == "pending":
            await asyncio.sleep(_COPY_POLL_SECONDS)
            latest = await self._properties(sealed)
            if latest is None:
                raise _Retry
            props = latest
        if props.copy.status in ("failed", "aborted"):
            _log.warning("copying an upload failed", extra={"blob": sealed.blob_name, "status": props.copy.status})
            with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
                await sealed.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
            raise _Retry
        return props

    async def _record_digest(self, sealed: BlobClient, props: BlobProperties) -> SealedObject:
        """The sealed blob's size and SHA-256: from its metadata, or hashed (and then recorded there)."""
        recorded = (props.metadata or {}).get(SHA256_METADATA)
        if recorded:
            return SealedObject(size=int(props.size), sha256=recorded)
        budget = self.operation_timeout + int(props.size) / HASH_BYTES_PER_SECOND
        async with self._guard("hash a sealed input", budget_seconds=budget):
            digest = hashlib.sha256()
            size = 0
            try:
                stream = await sealed.download_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                raise _Retry from None  # a concurrent seal recorded the digest meanwhile: read it
            async for chunk in stream.chunks():
                size += len(chunk)
                digest.update(chunk)
            sha256 = digest.hexdigest()
            with contextlib.suppress(ResourceModifiedError):  # a concurrent seal recorded the same digest
                await sealed.set_blob_metadata(
                    {**(props.metadata or {}), SHA256_METADATA: sha256},
                    etag=props.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        return SealedObject(size=size, sha256=sha256)

    async def delete_execution(self, execution: str) -> None:
        validate_execution_id(execution)
        prefix = f"{BLOB_PREFIX}/{execution}/"
        async with self._guard("delete an execution's blobs"):
            names = [blob.name async for blob in self.container.list_blobs(name_starts_with=prefix)]
            for name in names:
                with contextlib.suppress(ResourceNotFoundError):
                    await self.container.delete_blob(name)

    # ---- helpers ---------------------------------------------------------------------------------------

    async def _properties(self, blob: BlobClient) -> BlobProperties | None:
        try:
            return await blob.get_blob_properties()
        except ResourceNotFoundError as error:
            if getattr(error, "error_code", None) not in (None, "BlobNotFound"):
                raise  # ContainerNotFound and the like: a deployment problem, not a missing object
            return None

    @contextlib.asynccontextmanager
    async def _guard(self, operation: str, *, budget_seconds: float | None = None) -> AsyncIterator[None]:
        """Bound the calls inside by a deadline and turn every storage or identity failure into Unavailable."""
        try:
            async with asyncio.timeout(self.operation_timeout if budget_seconds is None else budget_seconds):
                yield
        except TimeoutError:
            _log.warning("object storage timed out", extra={"operation": operation})
            raise Unavailable("object storage is unavailable") from None
        except ClientAuthenticationError as error:
            _log.warning(
                "object storage: no token for the service identity",
                extra={"operation": operation, "error": type(error).__name__},
            )
            raise Unavailable("object storage is unavailable") from None
        except HttpResponseError as error:
            _log.warning(
                "object storage refused a call",
                extra={"operation": operation, "status": error.status_code, "code": getattr(error, "error_code", None)},
            )
            raise Unavailable("object storage is unavailable") from None
        except AzureError as error:
            _log.warning("object storage unreachable", extra={"operation": operation, "error": type(error).__name__})
            raise Unavailable("object storage is unavailable") from None

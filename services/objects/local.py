"""``local/v1``: objects as files under the data directory, reached through HMAC-signed, expiring URLs.

Layout under ``<data_dir>/objects/<execution>/``: ``output/<name>`` (outputs), ``upload/<name>`` (an input as
uploaded: the only file an input's PUT URL writes) and ``input/<name>`` (the sealed input: what an input's GET
URL reads; created once, by :meth:`LocalObjectProvider.seal_input`, as a hard link of the upload, so a later
upload — a new file renamed over ``upload/<name>`` — never changes it). Bodies are stored byte for byte as sent.
Signing keys in ``<data_dir>/object-url-keys/k<N>.key``
(32 random bytes each, mode 0600, created once; the highest ``N`` signs, every key present verifies, so keys can be
rotated with :meth:`ObjectUrlKeys.rotate` and retired by deleting the file).

A signed URL (the only URL form this provider hands out, always built from the configured public base URL)::

    <public_base_url>/objects/v1/<execution>/<kind>/<name>?method=<GET|PUT>&exp=<unix seconds>&kid=<kid>&sig=<sig>

``sig`` is ``base64url(HMAC-SHA256(key[kid], canonical))`` without padding, where ``canonical`` is the UTF-8
of ``"exthub-object-url/v1\\n<method>\\n<path>\\n<exp>\\n<kid>"`` and ``<path>`` is
``/objects/v1/<execution>/<kind>/<name>``.
So a URL is bound to one object and one method, and stops working at ``exp``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from yarl import URL

from services.objects.port import (
    Accessor,
    HttpMethod,
    ObjectRef,
    SealedObject,
    validate_execution_id,
    validate_kind,
    validate_object_name,
)
from services.platform.errors import InvalidArgument

logger = logging.getLogger(__name__)

PROVIDER_NAME = "local/v1"
URL_PREFIX = "/objects/v1/"
DEFAULT_MAX_OBJECT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_TTL = timedelta(days=7)
KEY_BYTES = 32
CHUNK_BYTES = 256 * 1024

_CANONICAL_TAG = "exthub-object-url/v1"
_KEY_FILE = re.compile(r"^k([1-9][0-9]{0,8})\.key$")
_EXP = re.compile(r"^[0-9]{1,12}$")
_SIG = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SIGNED_PARAMS = frozenset({"method", "exp", "kid", "sig"})


class UrlRejected(Exception):
    """A request that a signed object URL does not allow. ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class ObjectTooLarge(Exception):
    """An upload went past the size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"object larger than {limit} bytes")
        self.limit = limit


class ObjectSealed(Exception):
    """An upload to an input that is already sealed."""


class BodyLengthMismatch(Exception):
    """The bytes received are not as many as the request declared (something decoded or cut the body)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What an upload stored."""

    size: int
    sha256: str


class ObjectUrlKeys:
    """The HMAC key ring for object URLs, kept as files ``k<N>.key`` in one directory (blocking I/O: use threads)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, bytes] = {}
        self.current_kid = ""

    @classmethod
    def load_or_create(cls, directory: Path) -> ObjectUrlKeys:
        """Load every key in ``directory``, creating the first one (``k1``) when there is none."""
        ring = cls(directory)
        ring.reload()
        if not ring._keys:
            ring._create(1)
            ring.reload()
        return ring

    def reload(self) -> None:
        """Re-read the key files (picks up keys rotated by another process)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys: dict[str, bytes] = {}
        for entry in self.directory.iterdir():
            match = _KEY_FILE.fullmatch(entry.name)
            if not match:
                continue
            secret = entry.read_bytes()
            if len(secret) != KEY_BYTES:
                raise ValueError(f"object URL key {entry.name} is not {KEY_BYTES} bytes")
            keys[f"k{match.group(1)}"] = secret
        self._keys = keys
        self.current_kid = max(keys, key=lambda kid: int(kid[1:]), default="")

    def rotate(self) -> str:
        """Create the next key and make it the signing key; returns its id. Older keys still verify."""
        number = max((int(kid[1:]) for kid in self._keys), default=0) + 1
        self._create(number)
        self.reload()
        return self.current_kid

    def get(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> Sequence[str]:
        return sorted(self._keys, key=lambda kid: int(kid[1:]))

    def _create(self, number: int) -> None:
        """Write ``k<number>.key`` atomically and only once (hard link of a complete temp file; 0600)."""
        final = self.directory / f"k{number}.key"
        temp = self.directory / f".k{number}.{uuid.uuid4().hex}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process created it first; theirs wins
                os.link(temp, final)
        finally:
            temp.unlink(missing_ok=True)


def canonical_string(method: str, path: str, exp: int, kid: str) -> bytes:
    """The exact bytes an object URL signature covers."""
    return f"{_CANONICAL_TAG}\n{method}\n{path}\n{exp}\n{kid}".encode()


def object_path(ref: ObjectRef) -> str:
    """The URL path of an object: ``/objects/v1/<execution>/<kind>/<name>``."""
    return f"{URL_PREFIX}{ref.execution}/{ref.kind}/{ref.name}"


def _sign(key: bytes, canonical: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, canonical, hashlib.sha256).digest()).rstrip(b"=").decode()


def normalise_base_url(public_base_url: str) -> str:
    """Check a public base URL (http/https, host, no query, fragment or credentials); drop a trailing slash."""
    url = URL(public_base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("public base URL must be an absolute http(s) URL")
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("public base URL must not carry a query, fragment or credentials")
    return str(url).rstrip("/")


class LocalObjectProvider:
    """The ``local/v1`` provider. Construct at startup (it reads or creates its key file), or use :meth:`open`."""

    name = PROVIDER_NAME

    def __init__(
        self,
        data_dir: Path,
        public_base_url: str,
        *,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_object_bytes <= 0:
            raise ValueError("max_object_bytes must be positive")
        self.public_base_url = normalise_base_url(public_base_url)
        self.max_object_bytes = max_object_bytes
        self.max_ttl = max_ttl
        self._clock = clock
        data_dir.mkdir(parents=True, exist_ok=True)
        self.root = (data_dir / "objects").resolve()
        self.root.mkdir(mode=0o700, exist_ok=True)
        self.keys = ObjectUrlKeys.load_or_create(data_dir / "object-url-keys")
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        public_base_url: str,
        *,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        max_ttl: timedelta = DEFAULT_MAX_TTL,
        clock: Callable[[], float] = time.time,
    ) -> LocalObjectProvider:
        """Build the provider off the event loop (its constructor touches the file system)."""
        return await asyncio.to_thread(
            cls,
            data_dir,
            public_base_url,
            max_object_bytes=max_object_bytes,
            max_ttl=max_ttl,
            clock=clock,
        )

    # ---- accessors -------------------------------------------------------------------------------------

    async def upload_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return self._accessor(ref, "PUT", ttl)

    async def download_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return self._accessor(ref, "GET", ttl)

    def _accessor(self, ref: ObjectRef, method: HttpMethod, ttl: timedelta) -> Accessor:
        if ttl <= timedelta(0):
            raise InvalidArgument.field("ttl", "must be positive")
        ttl = min(ttl, self.max_ttl)
        exp = math.ceil(self._clock() + ttl.total_seconds())
        kid = self.keys.current_kid
        key = self.keys.get(kid)
        assert key is not None
        path = object_path(ref)
        sig = _sign(key, canonical_string(method, path, exp, kid))
        uri = f"{self.public_base_url}{path}?method={method}&exp={exp}&kid={kid}&sig={sig}"
        return Accessor(
            uri=uri,
            method=method,
            headers={},
            expire_time=datetime.fromtimestamp(exp, UTC),
            access_mode="WRITE_ONLY" if method == "PUT" else "READ_ONLY",
        )

    # ---- verification ----------------------------------------------------------------------------------

    async def verify(self, method: str, raw_path: str, query: Sequence[tuple[str, str]]) -> ObjectRef:
        """Check a request against its signed URL; return the object it may touch, or raise :class:`UrlRejected`.

        ``raw_path`` is the path exactly as sent (still percent-encoded): anything but
        ``/objects/v1/<valid execution>/<input|output>/<valid name>`` is 404, so no encoded or dotted segment can
        ever reach the file system.
        """
        ref = parse_object_path(raw_path)
        params: dict[str, str] = {}
        for param, value in query:
            if param in params or param not in _SIGNED_PARAMS:
                raise UrlRejected(403, "URL_INVALID", "unexpected or repeated query parameter")
            params[param] = value
        if "sig" not in params:
            raise UrlRejected(403, "SIGNATURE_MISSING", "the URL is not signed")
        if set(params) != _SIGNED_PARAMS:
            raise UrlRejected(403, "URL_INVALID", "the signed URL is incomplete")
        signed_method = params["method"]
        if signed_method not in ("GET", "PUT") or not _EXP.fullmatch(params["exp"]):
            raise UrlRejected(403, "URL_INVALID", "the signed URL is malformed")
        if not _SIG.fullmatch(params["sig"]):
            raise UrlRejected(403, "SIGNATURE_INVALID", "the signature is invalid")
        kid = params["kid"]
        key = await self._key(kid)
        exp = int(params["exp"])
        expected = _sign(key or b"\0" * KEY_BYTES, canonical_string(signed_method, object_path(ref), exp, kid))
        if not hmac.compare_digest(expected.encode(), params["sig"].encode()) or key is None:
            raise UrlRejected(403, "SIGNATURE_INVALID", "the signature is invalid")
        if method != signed_method:
            raise UrlRejected(403, "METHOD_NOT_ALLOWED", f"this URL allows {signed_method} only")
        if self._clock() >= exp:
            raise UrlRejected(403, "URL_EXPIRED", "the URL has expired")
        return ref

    async def _key(self, kid: str) -> bytes | None:
        key = self.keys.get(kid)
        if key is None and _KEY_FILE.fullmatch(f"{kid}.key"):
            async with self._reload_lock:  # a key rotated by another process
                key = self.keys.get(kid)
                if key is None:
                    await asyncio.to_thread(self.keys.reload)
                    key = self.keys.get(kid)
        return key

    # ---- storage ---------------------------------------------------------------------------------------

    def path_of(self, ref: ObjectRef) -> Path:
        """The file a GET of ``ref`` reads: an output, or the sealed input. InvalidArgument outside the root."""
        return self._inside(self.root / ref.execution / ref.kind / ref.name)

    def upload_path_of(self, ref: ObjectRef) -> Path:
        """The file a PUT of ``ref`` writes: an output itself, or the input's upload (staging) file."""
        if ref.kind == "input":
            return self._inside(self.root / ref.execution / "upload" / ref.name)
        return self.path_of(ref)

    def _inside(self, path: Path) -> Path:
        if not path.resolve().is_relative_to(self.root):
            raise InvalidArgument.field("object.name", "resolves outside the object root")
        return path

    async def exists(self, ref: ObjectRef) -> bool:
        return await self.size(ref) is not None

    async def size(self, ref: ObjectRef) -> int | None:
        def stat() -> int | None:
            for path in (self.path_of(ref), self.upload_path_of(ref)):
                with contextlib.suppress(FileNotFoundError):
                    info = path.stat()
                    if path.is_file():
                        return info.st_size
            return None

        return await asyncio.to_thread(stat)

    async def seal_input(self, ref: ObjectRef) -> SealedObject | None:
        if ref.kind != "input":
            raise InvalidArgument.field("object.kind", "only inputs are sealed")

        def seal() -> SealedObject | None:
            sealed, uploaded = self.path_of(ref), self.upload_path_of(ref)
            sealed.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.link(uploaded, sealed)  # atomic and never replaces: the first seal wins
            except FileExistsError:
                pass
            except FileNotFoundError:
                if not sealed.is_file():
                    return None
            else:
                uploaded.unlink(missing_ok=True)  # keeps no second copy; a later PUT only recreates garbage
            return _digest_file(sealed)

        return await asyncio.to_thread(seal)

    async def is_sealed(self, ref: ObjectRef) -> bool:
        """Whether the input ``ref`` is sealed (uploads to it are refused from then on)."""
        return ref.kind == "input" and await asyncio.to_thread(self.path_of(ref).is_file)

    async def delete_execution(self, execution: str) -> None:
        validate_execution_id(execution)

        def remove() -> None:
            directory = self.root / execution
            if directory.resolve().is_relative_to(self.root) and directory.resolve() != self.root:
                shutil.rmtree(directory, ignore_errors=True)

        await asyncio.to_thread(remove)

    async def receive_upload(
        self, ref: ObjectRef, chunks: AsyncIterable[bytes], *, declared_bytes: int | None = None
    ) -> StoredObject:
        """Store a client's upload of ``ref`` (what a PUT URL does): an output in place, an input in its upload
        file. Raises :class:`ObjectSealed` for a sealed input, :class:`ObjectTooLarge` past the limit and
        :class:`BodyLengthMismatch` when the bytes received differ from ``declared_bytes`` (nothing is kept)."""
        if await self.is_sealed(ref):
            raise ObjectSealed(ref.key)
        return await self._store(self.upload_path_of(ref), ref.name, chunks, None, declared_bytes)

    async def write_object(
        self, ref: ObjectRef, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredObject:
        """Store ``chunks`` as the object a GET of ``ref`` reads (a trusted, server-side write: for an input this
        is its sealed content). Temp file next to it, then an atomic rename; :class:`ObjectTooLarge` (and
        nothing kept) past ``max_bytes`` (default: the provider's limit)."""
        return await self._store(self.path_of(ref), ref.name, chunks, max_bytes, None)

    async def _store(
        self,
        final: Path,
        name: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None,
        declared_bytes: int | None,
    ) -> StoredObject:
        limit = self.max_object_bytes if max_bytes is None else max_bytes

        def open_temp() -> tuple[Path, BinaryIO]:
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = final.parent / f".{name}.{uuid.uuid4().hex}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            return temp, os.fdopen(fd, "wb")

        def commit(handle: BinaryIO, temp: Path) -> None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temp, final)

        def discard(handle: BinaryIO, temp: Path) -> None:
            handle.close()
            temp.unlink(missing_ok=True)

        async def copy(handle: BinaryIO) -> StoredObject:
            digest = hashlib.sha256()
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ObjectTooLarge(limit)
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            if declared_bytes is not None and size != declared_bytes:
                raise BodyLengthMismatch(f"received {size} bytes, declared {declared_bytes}")
            return StoredObject(size=size, sha256=digest.hexdigest())

        temp, handle = await asyncio.to_thread(open_temp)
        try:
            stored = await copy(handle)
            await asyncio.to_thread(commit, handle, temp)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(discard, handle, temp))
            raise
        return stored

    async def open_object(self, ref: ObjectRef) -> LocalObjectReader | None:
        """Open the object a GET of ``ref`` reads (an output, a sealed input) for streaming; None when missing."""

        def open_file() -> LocalObjectReader | None:
            try:
                handle = self.path_of(ref).open("rb")
            except (FileNotFoundError, IsADirectoryError):
                return None
            size = os.fstat(handle.fileno()).st_size
            return LocalObjectReader(handle, size)

        return await asyncio.to_thread(open_file)


def _digest_file(path: Path) -> SealedObject:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            size += len(chunk)
            digest.update(chunk)
    return SealedObject(size=size, sha256=digest.hexdigest())


class LocalObjectReader:
    """An open object: its size and its bytes in chunks, read in a worker thread."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size

    async def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(self._handle.read, chunk_bytes):
            yield chunk

    async def aclose(self) -> None:
        await asyncio.to_thread(self._handle.close)


def parse_object_path(raw_path: str) -> ObjectRef:
    """``/objects/v1/<execution>/<kind>/<name>`` (raw, as sent) → ObjectRef, or UrlRejected 404."""
    if not raw_path.startswith(URL_PREFIX):
        raise UrlRejected(404, "NOT_FOUND", "not found")
    parts = raw_path[len(URL_PREFIX) :].split("/")
    if len(parts) != 3:
        raise UrlRejected(404, "NOT_FOUND", "not found")
    execution, kind, name = parts
    try:
        return ObjectRef(validate_execution_id(execution), validate_kind(kind), validate_object_name(name))
    except InvalidArgument:
        raise UrlRejected(404, "NOT_FOUND", "not found") from None

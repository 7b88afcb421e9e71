"""Moving bytes through object accessors (``ObjectAccessor``: signed URL, method, headers) with aiohttp.

Files are read and written in chunks off the event loop; downloads land in a temporary file that is renamed
into place, so a failed transfer never leaves a partial file under the final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import aiohttp

from exthub.client.errors import ObjectTransferError
from exthub.type.v1 import types_pb2

__all__ = ["CHUNK_BYTES", "DEFAULT_TRANSFER_TIMEOUT", "download_object", "upload_object"]

CHUNK_BYTES = 256 * 1024
DEFAULT_TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=600, connect=10, sock_read=60)


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
        yield chunk


async def _failure(response: aiohttp.ClientResponse, action: str) -> ObjectTransferError:
    reason = ""
    message = response.reason or ""
    with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
        body = await response.json(content_type=None)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(error, dict):
            reason = str(error.get("reason", ""))
            message = str(error.get("message", message))
    text = f"{action} failed: HTTP {response.status} {message}".rstrip()
    return ObjectTransferError(f"{text} [{reason}]" if reason else text, status=response.status, reason=reason)


async def upload_object(session: aiohttp.ClientSession, accessor: types_pb2.ObjectAccessor, path: Path) -> int:
    """Send the file at ``path`` with the accessor's method and headers; returns the bytes sent."""
    if not accessor.uri:
        raise ObjectTransferError(f"no upload accessor for {path.name}")
    size = (await asyncio.to_thread(path.stat)).st_size
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        headers = {**accessor.headers, "Content-Length": str(size)}
        async with session.request(
            accessor.method or "PUT", accessor.uri, data=_file_chunks(handle), headers=headers
        ) as response:
            if response.status >= 300:
                raise await _failure(response, f"upload of {path.name}")
    except aiohttp.ClientError as error:
        raise ObjectTransferError(f"upload of {path.name} failed: {error}") from None
    except TimeoutError:
        raise ObjectTransferError(f"upload of {path.name} timed out") from None
    finally:
        await asyncio.to_thread(handle.close)
    return size


async def download_object(session: aiohttp.ClientSession, accessor: types_pb2.ObjectAccessor, path: Path) -> int:
    """Fetch the object to ``path`` (replacing it atomically); returns the bytes received."""
    if not accessor.uri:
        raise ObjectTransferError(f"no download accessor for {path.name}")
    partial = path.with_name(f".{path.name}.partial")
    received = 0
    handle = await asyncio.to_thread(partial.open, "wb")
    try:
        async with session.request(accessor.method or "GET", accessor.uri, headers=dict(accessor.headers)) as response:
            if response.status >= 300:
                raise await _failure(response, f"download of {path.name}")
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                await asyncio.to_thread(handle.write, chunk)
                received += len(chunk)
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(os.replace, partial, path)
    except aiohttp.ClientError as error:
        raise ObjectTransferError(f"download of {path.name} failed: {error}") from None
    except TimeoutError:
        raise ObjectTransferError(f"download of {path.name} timed out") from None
    finally:
        if not handle.closed:
            await asyncio.to_thread(handle.close)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(partial.unlink)
    return received

"""Cross-process wake-ups for the SQLite work queue: a receiver learns of another process's publish at once
instead of at its next poll.

Every queue instance that receives binds a Unix datagram socket in the queue's wake-up directory
(``<queue file>.wake/``, mode 0700); after a publish (or an abandon without delay, a redrive) the publishing
instance sends one empty-ish datagram to each socket there — once per turn of its event loop, however many
publishes completed in that turn (a group commit completes many at once) — without ever waiting (a full receiver buffer
means that receiver is awake already). A datagram only makes the receiver look at the queue: it carries no
data, so a lost or spurious one changes nothing — receivers still poll at their interval (which also finds
delayed messages coming due). A socket whose process is gone answers "connection refused" and is removed.
The directory's listing is read at most once per :data:`RESCAN_SECONDS`, so a new receiver is first woken by
its own polls. Where Unix sockets are not available, or the path is too long for one, only polling is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from services.platform.logging import get_logger

__all__ = ["RESCAN_SECONDS", "WakeupChannel", "wake_directory"]

_log = get_logger("exthub.workqueue.wakeup")

#: How often a publisher re-reads which receivers exist.
RESCAN_SECONDS = 1.0
_MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS
_SUFFIX = ".sock"
_DATAGRAM = b"!"
_DRAIN_BYTES = 64


def wake_directory(queue_path: Path) -> Path:
    """The wake-up directory of the queue stored at ``queue_path``."""
    return queue_path.with_name(queue_path.name + ".wake")


class WakeupChannel:
    """One queue instance's end: :meth:`listen` to be woken (``on_wake`` runs on the event loop), :meth:`announce`
    to wake the others."""

    def __init__(
        self, directory: Path, on_wake: Callable[[], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._directory = directory
        self._on_wake = on_wake
        self._clock = clock
        self._listener: socket.socket | None = None
        self._own: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._scanned_at = float("-inf")
        self._available = hasattr(socket, "AF_UNIX")
        self._announcing = False

    def listen(self) -> bool:
        """Bind this instance's socket and wake on every datagram (once; False when not possible)."""
        if self._listener is not None:
            return True
        if not self._available:
            return False
        name = str(self._directory / f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}")
        if len(name.encode()) > _MAX_SOCKET_PATH:
            self._available = False
            _log.info("queue wake-ups off: the queue's path is too long for a Unix socket", path=name)
            return False
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            listener.setblocking(False)
            listener.bind(name)
            loop = asyncio.get_running_loop()
            loop.add_reader(listener.fileno(), self._readable)
        except OSError as error:
            listener.close()
            self._available = False
            _log.info("queue wake-ups off: cannot bind a Unix socket", error=type(error).__name__)
            return False
        self._listener, self._own, self._loop = listener, name, loop
        self._scanned_at = float("-inf")  # include ourselves in no listing we send to
        return True

    def announce(self) -> None:
        """Wake every other receiver of the queue, at the end of this turn of the event loop: the announces of one
        turn are one datagram per receiver (never waits; call it on the event loop)."""
        if not self._available or self._announcing:
            return
        self._announcing = True
        asyncio.get_running_loop().call_soon(self._announce_now)

    def _announce_now(self) -> None:
        if not self._announcing:
            return  # sent already, by close
        self._announcing = False
        if not self._available:
            return
        peers = self._current_peers()
        if not peers:
            return
        sender = self._sender
        if sender is None:
            try:
                sender = self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
            except OSError:
                self._available = False
                return
        gone: list[str] = []
        for peer in peers:
            try:
                sender.sendto(_DATAGRAM, peer)
            except OSError as error:
                if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    gone.append(peer)  # its process has ended
                # EAGAIN/ENOBUFS: its buffer is full, so it has been woken already
        for peer in gone:
            with contextlib.suppress(OSError):
                os.unlink(peer)
            with contextlib.suppress(ValueError):
                self._peers.remove(peer)

    def close(self) -> None:
        """Send a wake-up still due, stop listening and remove this instance's socket (idempotent)."""
        self._announce_now()
        self._available = False
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(listener.fileno())
            listener.close()
        if self._own is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._own)
            self._own = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def _current_peers(self) -> list[str]:
        now = self._clock()
        if now - self._scanned_at >= RESCAN_SECONDS:
            self._scanned_at = now
            try:
                with os.scandir(self._directory) as entries:
                    self._peers = [
                        entry.path for entry in entries if entry.name.endswith(_SUFFIX) and entry.path != self._own
                    ]
            except OSError:
                self._peers = []  # no receiver has bound yet
        return self._peers

    def _readable(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:  # drain: many publishes since the last turn are one wake-up
            try:
                listener.recv(_DRAIN_BYTES)
            except OSError:  # BlockingIOError: drained
                break
        self._on_wake()

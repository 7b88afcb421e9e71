"""The SQLite work queue's cross-process wake-ups: the announces of one event-loop turn are one datagram per
receiver, and a wake-up still due when the channel closes is sent, not lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.platform.workqueue.wakeup import WakeupChannel


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    """Another process's receiver, as the channel sees it: a datagram socket in the wake-up directory."""
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.setblocking(False)
    peer.bind(str(tmp_path / "4242-peer.sock"))
    try:
        yield peer
    finally:
        peer.close()


def datagrams(peer: socket.socket) -> int:
    received = 0
    while True:
        try:
            peer.recv(64)
        except BlockingIOError:
            return received
        received += 1


async def test_the_announces_of_one_turn_are_one_datagram(tmp_path: Path, receiver: socket.socket) -> None:
    channel = WakeupChannel(tmp_path, lambda: None)
    try:
        for _ in range(5):  # five publishes completed by one group commit
            channel.announce()
        assert datagrams(receiver) == 0, "sent at the end of the turn, not at each announce"
        await asyncio.sleep(0)
        assert datagrams(receiver) == 1
        channel.announce()  # a later turn announces again
        await asyncio.sleep(0)
        assert datagrams(receiver) == 1
    finally:
        channel.close()


async def test_a_wakeup_due_at_close_is_sent_once(tmp_path: Path, receiver: socket.socket) -> None:
    channel = WakeupChannel(tmp_path, lambda: None)
    channel.announce()
    channel.close()
    await asyncio.sleep(0)  # the turn's scheduled send finds it done
    assert datagrams(receiver) == 1
    channel.announce()  # closed: nothing more is sent
    await asyncio.sleep(0)
    assert datagrams(receiver) == 0

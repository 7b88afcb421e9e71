"""``bounded`` (services.platform.servicebus): one SDK call within a timeout, and a caller's cancellation that always
takes effect, even when the SDK's frame read swallows it."""

from __future__ import annotations

import asyncio

import pytest

from services.platform.errors import Unavailable
from services.platform.servicebus import bounded


async def _read_frame(frame: asyncio.Future[str]) -> str:
    # What the SDK's transport does for every AMQP frame: ``asyncio.wait_for`` around the socket read.
    return await asyncio.wait_for(asyncio.ensure_future(frame), timeout=5)


async def test_a_cancelled_caller_is_cancelled_even_when_the_frame_read_swallows_it() -> None:
    loop = asyncio.get_running_loop()
    frame: asyncio.Future[str] = loop.create_future()
    caller = loop.create_task(bounded("renew", _read_frame(frame), 5))
    for _ in range(3):
        await asyncio.sleep(0)  # the caller waits inside the frame read
    frame.set_result("renewed")  # the broker's answer arrives ...
    caller.cancel()  # ... in the same loop iteration as the cancellation
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_an_operation_past_its_time_is_unavailable() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(Unavailable, match=r"renew: timeout"):
        await bounded("renew", never, 0.05)
    assert never.cancelled()


async def test_failures_of_the_sdk_are_unavailable_and_passthrough_errors_are_not() -> None:
    async def fails(error: Exception) -> None:
        raise error

    with pytest.raises(Unavailable, match=r"send: OSError"):
        await bounded("send", fails(OSError("connection reset")), 1)
    with pytest.raises(KeyError):
        await bounded("send", fails(KeyError("lock")), 1, passthrough=(KeyError,))
    assert await bounded("peek", asyncio.sleep(0, result=7), 1) == 7

"""The agent's natural batching (:class:`services.agent.execution_client.NaturalBatcher`): no added latency, the
items that arrive during a call go together in the next one, limits on items and bytes, each item answered on
its own. ``send`` is a recording function here (the real calls are in tests/component/execution)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from google.protobuf import wrappers_pb2

from services.agent.execution_client import NaturalBatcher

Item = wrappers_pb2.StringValue


class Recorder:
    """A ``send`` that records each call's items and answers them once the test opens the gate."""

    def __init__(self, *, gated: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.sent = asyncio.Condition()
        if not gated:
            self.gate.set()

    async def send(self, items: Sequence[Item]) -> list[str | BaseException]:
        async with self.sent:
            self.calls.append([item.value for item in items])
            self.sent.notify_all()
        await self.gate.wait()
        return [ValueError(item.value) if item.value.startswith("bad") else item.value.upper() for item in items]

    async def until_calls(self, count: int) -> None:
        async with asyncio.timeout(5):
            async with self.sent:
                await self.sent.wait_for(lambda: len(self.calls) >= count)


def item(value: str) -> Item:
    return Item(value=value)


async def test_an_item_goes_out_at_once_and_those_arriving_meanwhile_go_together() -> None:
    recorder = Recorder()
    batcher: NaturalBatcher[Item, str] = NaturalBatcher(recorder.send)
    first = asyncio.create_task(batcher.submit(item("a")))
    await recorder.until_calls(1)  # sent alone, before anything else arrived
    later = [asyncio.create_task(batcher.submit(item(v))) for v in ("b", "c", "d")]
    await asyncio.sleep(0)  # let them queue while the first call is in flight
    assert recorder.calls == [["a"]]
    recorder.gate.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == ["B", "C", "D"]
    assert recorder.calls == [["a"], ["b", "c", "d"]] and batcher.calls == 2


async def test_each_item_gets_its_own_answer_or_error() -> None:
    recorder = Recorder(gated=False)
    batcher: NaturalBatcher[Item, str] = NaturalBatcher(recorder.send)
    outcomes = await asyncio.gather(*(batcher.submit(item(v)) for v in ("a", "bad-1", "c")), return_exceptions=True)
    assert outcomes[0] == "A" and outcomes[2] == "C"
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad-1"
    assert recorder.calls == [["a", "bad-1", "c"]]


async def test_a_call_that_fails_as_a_whole_fails_each_of_its_items() -> None:
    async def send(items: Sequence[Item]) -> list[str | BaseException]:
        raise ConnectionError("down")

    batcher: NaturalBatcher[Item, str] = NaturalBatcher(send)
    outcomes = await asyncio.gather(*(batcher.submit(item(v)) for v in ("a", "b")), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    assert await asyncio.gather(batcher.submit(item("c")), return_exceptions=True)  # the next call is tried


async def test_batches_respect_the_item_and_byte_limits() -> None:
    recorder = Recorder(gated=False)
    batcher: NaturalBatcher[Item, str] = NaturalBatcher(recorder.send, max_items=2, max_bytes=25)
    values = ["a", "b", "c", "x" * 30, "d", "e"]  # 3 bytes each, the long one 32 (over the limit alone)
    assert await asyncio.gather(*(batcher.submit(item(v)) for v in values)) == [v.upper() for v in values]
    assert recorder.calls == [["a", "b"], ["c"], ["x" * 30], ["d", "e"]]


async def test_a_caller_that_gave_up_before_its_call_is_left_out() -> None:
    recorder = Recorder()
    batcher: NaturalBatcher[Item, str] = NaturalBatcher(recorder.send)
    first = asyncio.create_task(batcher.submit(item("a")))
    await recorder.until_calls(1)
    gone = asyncio.create_task(batcher.submit(item("gone")))
    kept = asyncio.create_task(batcher.submit(item("kept")))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert (await first, await kept) == ("A", "KEPT")
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.calls == [["a"], ["kept"]]


async def test_close_cancels_the_callers_still_waiting() -> None:
    recorder = Recorder()
    batcher: NaturalBatcher[Item, str] = NaturalBatcher(recorder.send)
    in_flight = asyncio.create_task(batcher.submit(item("a")))
    await recorder.until_calls(1)
    queued = asyncio.create_task(batcher.submit(item("b")))
    await asyncio.sleep(0)
    await batcher.close()
    for waiting in (in_flight, queued):
        with pytest.raises(asyncio.CancelledError):
            await waiting

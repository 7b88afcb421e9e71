"""Which profile an execution runs with, which inputs it waits for, and what a late continue answers — through
the real catalog, execution service, agent and echo."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from exthub.catalog.v1 import resources_pb2
from exthub.contract.errors import call_error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from services.echo.registration import echo_version
from tests.component.execution.test_lifecycle import use
from tests.component.execution.test_sync import create, events_of, struct
from tests.support.hub import Hub

E = execution_pb2.Execution
pb = execution_service_pb2
ECHO = "extensions/echo/versions/1.0.0"


async def _register(hub: Hub, extension_id: str, profiles: list[resources_pb2.ExecutionProfile]) -> str:
    """``extensions/{extension_id}/versions/1.0.0``: echo with exactly ``profiles``."""
    version = echo_version(hub.echo_url, with_objects=False)
    del version.profiles[:]
    version.profiles.extend(profiles)
    return await hub.publish(extension_id, version)


def _renamed(profile: resources_pb2.ExecutionProfile, name: str) -> resources_pb2.ExecutionProfile:
    copy = resources_pb2.ExecutionProfile()
    copy.CopyFrom(profile)
    copy.name = name
    return copy


async def test_a_version_without_default_runs_its_only_profile(hub: Hub) -> None:
    sync_profile = echo_version(hub.echo_url).profiles[0]
    solo = await _register(hub, "solo", [_renamed(sync_profile, "run")])
    done = await create(hub, extension_version=solo, request=struct(message="solo"))
    assert (done.profile, done.state) == ("run", E.SUCCEEDED), done


async def test_several_profiles_and_none_named_default_need_a_name(hub: Hub) -> None:
    sync_profile, async_profile = echo_version(hub.echo_url).profiles[:2]
    duo = await _register(hub, "duo", [_renamed(sync_profile, "fast"), _renamed(async_profile, "slow")])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, extension_version=duo)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = call_error_info(raised.value)
    assert refused is not None and refused.reason == "INVALID_FIELD"
    named = await create(hub, extension_version=duo, profile="fast")
    assert named.state == E.SUCCEEDED


async def test_echo_runs_at_once_when_no_input_is_expected(hub: Hub) -> None:
    done = await create(hub, extension_version=ECHO, request=struct(message="hi"))
    assert done.state == E.SUCCEEDED, done
    result = json_format.MessageToDict(done.result)
    assert result["echo"] == {"message": "hi"} and "inputs" not in result
    (document,) = done.inputs
    assert (document.name, document.required, document.provided) == ("document", False, False)
    assert not document.HasField("upload")
    # a continue of an execution that has moved on is a no-op that answers with the execution
    again = await hub.stub.ContinueExecution(pb.ContinueExecutionRequest(name=done.name), metadata=hub.token())
    assert (again.state, again.etag) == (E.SUCCEEDED, done.etag)


async def test_naming_an_undeclared_expected_input_is_invalid(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, extension_version=ECHO, expected_inputs=["nope"])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_profile_keeping_objects_with_a_provider_this_hub_does_not_offer_is_refused(hub: Hub) -> None:
    """The embedded hub offers ``local/v1``, the Azure one ``az-blob/v1``: a version whose profile keeps inputs and
    outputs with the other one cannot run here (FAILED_PRECONDITION, naming both); without objects it runs."""
    offered = hub.execution.backends.object_provider_name
    other = "az-blob/v1" if offered == "local/v1" else "local/v1"
    version = echo_version(hub.echo_url, object_provider=other)  # with an input and an output
    await hub.publish("elsewhere", version)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, extension_version="extensions/elsewhere/versions/1.0.0")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = call_error_info(raised.value)
    assert info is not None and info.reason == "OBJECT_PROVIDER_NOT_AVAILABLE"
    assert (info.metadata["objectProvider"], info.metadata["offered"]) == (other, offered)
    plain = await _register(
        hub, "elsewhere-plain", [_renamed(echo_version(hub.echo_url, object_provider=other).profiles[0], "default")]
    )
    done = await create(hub, extension_version=plain, request=struct(message="no objects"))
    assert done.state == E.SUCCEEDED, done


@pytest.mark.parametrize(("profile", "moved_on"), [("default", E.SUCCEEDED), ("async", E.QUEUED)])
async def test_a_repeated_continue_is_a_no_op_that_answers_with_the_execution(
    hub: Hub, profile: str, moved_on: E.State.ValueType
) -> None:
    """The second ``:continue`` (a client retrying after a lost answer) changes nothing, whatever state the first
    one led to: the same execution, the same etag, no new event."""
    pending = await create(hub, extension_version=ECHO, profile=profile, expected_inputs=["document"])
    assert pending.state == E.PENDING_INPUTS
    (document,) = pending.inputs
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        assert (await use(session, document.upload, b"once"))[0] in (200, 201)  # as a client must, any provider
    request = pb.ContinueExecutionRequest(name=pending.name, provided_inputs=["document"])
    first = await hub.stub.ContinueExecution(request, metadata=hub.token(), timeout=30)
    assert first.state == moved_on, first
    events = await events_of(hub, pending.name)
    again = await hub.stub.ContinueExecution(request, metadata=hub.token(), timeout=30)
    assert (again.state, again.etag, again.attempt) == (first.state, first.etag, first.attempt)
    assert await events_of(hub, pending.name) == events

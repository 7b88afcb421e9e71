"""The proto edge of the execution service (services.execution.mapping): domain enums match the protos, and
messages map both ways without losing fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2
from google.rpc import code_pb2, status_pb2

from exthub.agent.v1 import agent_service_pb2
from exthub.catalog.v1 import resources_pb2
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.execution import mapping
from services.execution.domain import ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.model import ExecutionError, ObjectDefinition, Priority, VersionState
from services.execution.domain.modes import Mode, ProfileMode
from services.execution.domain.outcomes import AttemptResult
from services.execution.handlers.ports import AttemptTask, ObjectBinding
from services.objects.port import Accessor


def test_domain_enums_are_the_protos() -> None:
    assert {code.name: int(code) for code in Code} == {
        name: number for name, number in code_pb2.Code.items() if name in Code.__members__
    }
    assert len(Code) == len(code_pb2.Code.keys())
    assert {p.name: int(p) for p in Priority} == {n: v for n, v in types_pb2.Priority.items() if v}
    assert {s.value for s in ExecutionState} == set(execution_pb2.Execution.State.keys()) - {"STATE_UNSPECIFIED"}
    assert {m.value for m in Mode} == set(execution_pb2.Execution.Mode.keys()) - {"MODE_UNSPECIFIED"}
    outcomes = set(agent_service_pb2.ExecuteResponse.Outcome.keys()) - {"OUTCOME_UNSPECIFIED"}
    assert {r.value for r in AttemptResult} == outcomes
    assert {m.value for m in ProfileMode} == set(resources_pb2.ExecutionProfile.Mode.keys()) - {"MODE_UNSPECIFIED"}
    assert {s.value for s in VersionState} == set(resources_pb2.ExtensionVersion.State.keys()) - {"STATE_UNSPECIFIED"}


def test_errors_map_to_and_from_status_with_error_info() -> None:
    error = ExecutionError(Code.DEADLINE_EXCEEDED, "late", "EXECUTION_TIMEOUT", {"attempts": "2"})
    status = mapping.status_from_error(error)
    assert status.code == code_pb2.DEADLINE_EXCEEDED
    assert mapping.error_from_status(status, default_reason="X") == error
    bare = mapping.error_from_status(
        status_pb2.Status(code=code_pb2.OK, message="?"), default_reason="EXTENSION_FAILED"
    )
    assert (bare.code, bare.reason, dict(bare.metadata)) == (Code.UNKNOWN, "EXTENSION_FAILED", {})


def test_a_catalog_version_maps_with_every_profile_setting() -> None:
    version = resources_pb2.ExtensionVersion(
        name="extensions/echo/versions/1.0.0",
        state=resources_pb2.ExtensionVersion.DEPRECATED,
        supports_validation=True,
        execution_timeout=duration_pb2.Duration(seconds=90),
        inputs=[types_pb2.ObjectDefinition(name="document", required=True, type_name="pdf")],
        profiles=[
            resources_pb2.ExecutionProfile(
                name="direct",
                execution_model="http-json/sync/v1",
                mode=resources_pb2.ExecutionProfile.DIRECT,
                supported_priorities=[types_pb2.HIGH],
                direct_token_ttl=duration_pb2.Duration(seconds=60),
                retry_policy=resources_pb2.RetryPolicy(max_attempts=4, initial_backoff=duration_pb2.Duration(nanos=5)),
                active=False,
            )
        ],
    )
    mapped = mapping.catalog_version_from_proto(version)
    assert (mapped.state, mapped.execution_timeout) == (VersionState.DEPRECATED, timedelta(seconds=90))
    assert mapped.inputs == (ObjectDefinition("document", type_name="pdf", required=True),)
    (profile,) = mapped.profiles
    assert (profile.mode, profile.supported_priorities, profile.active) == (
        ProfileMode.DIRECT,
        frozenset({Priority.HIGH}),
        False,
    )
    assert (profile.direct_token_ttl, profile.queue_timeout) == (timedelta(seconds=60), None)
    assert (profile.retry.max_attempts, profile.retry.initial_backoff) == (4, timedelta(microseconds=0))


def test_an_attempt_task_maps_to_the_agents_message() -> None:
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    accessor = Accessor("http://o/x", "GET", {"h": "v"}, deadline, "READ_ONLY")
    task = AttemptTask(
        execution="executions/x",
        attempt=2,
        extension="extensions/echo",
        extension_version="extensions/echo/versions/1.0.0",
        profile="async",
        execution_model="http-json/async/v1",
        priority=Priority.LOW,
        validate_only=True,
        request={"a": 1},
        labels={"env": "t"},
        tenant="t",
        user="u",
        extension_settings={"execution_url": "http://e"},
        services={"store": {"k": "v"}},
        deadline=deadline,
        status_url="http://hub/status",
        status_update_key="secret",
        call_timeout=timedelta(seconds=3),
        inputs=(ObjectBinding(ObjectDefinition("document"), accessor, provided=True),),
        outputs=(ObjectBinding(ObjectDefinition("report")),),
    )
    message = mapping.attempt_task_to_proto(task)
    assert (message.priority, message.attempt, message.validate_only) == (types_pb2.LOW, 2, True)
    assert message.deadline.ToDatetime(tzinfo=UTC) == deadline and message.call_timeout.ToTimedelta() == timedelta(
        seconds=3
    )
    assert message.inputs[0].provided and message.inputs[0].accessor.headers["h"] == "v"
    assert not message.outputs[0].HasField("accessor")
    assert dict(message.services["store"]) == {"k": "v"}


def test_an_unknown_agent_outcome_is_a_failure() -> None:
    answer = agent_service_pb2.ExecuteResponse(outcome=agent_service_pb2.ExecuteResponse.OUTCOME_UNSPECIFIED)
    assert mapping.attempt_outcome_from_proto(answer).result is AttemptResult.FAILED

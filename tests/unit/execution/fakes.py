"""In-memory fakes of the execution use cases' ports (catalog, agent, objects, queue, clock), for unit tests.

These stand in for OUR ports only (the way Cosmic Python tests its service layer with a fake repository and
unit of work); the document store is the real in-memory adapter, which passes the docstore contract suite.
Component tests keep the real servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.execution.adapters.documents import COLLECTION
from services.execution.dispatch import Dispatcher
from services.execution.domain.model import (
    ObjectDefinition,
    Priority,
    ProfileSnapshot,
    VersionState,
)
from services.execution.domain.modes import ProfileMode
from services.execution.domain.outcomes import AttemptResult
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import AttemptOutcome, AttemptTask, CatalogVersion
from services.execution.outbox import OutboxRelay
from services.execution.repository import ExecutionRepository
from services.execution.signing import SigningKeyRing
from services.objects.port import Accessor, ObjectRef, SealedObject
from services.platform.docstore.memory import MemoryDocumentStore
from services.platform.errors import NotFound, Unavailable
from services.platform.paging import PageTokenCodec
from services.platform.timefmt import from_storage, to_storage
from services.platform.workqueue.port import DeadLetter
from tests.unit.execution.builders import HTTP_JSON_ASYNC, HTTP_JSON_SYNC

START = datetime.fromisoformat("2030-01-02T03:04:05+00:00")


class FakeClock:
    """A clock that moves only when told (``advance``); callable like the context's clock."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> str:
        return to_storage(self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeCatalog:
    """Versions by name; ``…/versions/latest`` resolves to the one registered as latest."""

    def __init__(self) -> None:
        self.versions: dict[str, CatalogVersion] = {}
        self.latest: dict[str, str] = {}
        self.authorizations: list[str] = []

    def add(self, version: CatalogVersion) -> CatalogVersion:
        self.versions[version.name] = version
        self.latest[version.name.rsplit("/versions/", 1)[0]] = version.name
        return version

    async def get_version(self, name: str, *, authorization: str) -> CatalogVersion:
        self.authorizations.append(authorization)
        extension, _, version_id = name.rpartition("/versions/")
        if version_id == "latest" and extension in self.latest:
            name = self.latest[extension]
        if name not in self.versions:
            raise NotFound(f"{name} not found", reason="VERSION_NOT_FOUND", metadata={"resource": name})
        return self.versions[name]


Script = Callable[[AttemptTask], Awaitable[AttemptOutcome]]


async def succeed(task: AttemptTask) -> AttemptOutcome:
    """The default agent behaviour: echo the request back."""
    return AttemptOutcome(AttemptResult.SUCCEEDED, output={"echo": dict(task.request)}, http_status=200)


class FakeAgent:
    """Runs attempts with ``script`` (default: succeed) and records each task and its timeout."""

    def __init__(self) -> None:
        self.script: Script = succeed
        self.calls: list[tuple[AttemptTask, float]] = []
        self.called = asyncio.Event()

    async def execute(self, task: AttemptTask, *, timeout_seconds: float) -> AttemptOutcome:
        self.calls.append((task, timeout_seconds))
        self.called.set()
        return await self.script(task)


class FakeObjects:
    """An object provider that keeps which objects were uploaded; accessors expire on the fake clock."""

    name = "local/v1"

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.uploaded: dict[str, bytes] = {}
        self.sealed: dict[str, bytes] = {}

    def upload(self, ref: ObjectRef, content: bytes = b"x") -> None:
        """What a client's PUT through an upload accessor does (it never changes a sealed input)."""
        self.uploaded[ref.key] = content

    def _accessor(self, ref: ObjectRef, ttl: timedelta, write: bool) -> Accessor:
        return Accessor(
            uri=f"memory://objects/{ref.key}",
            method="PUT" if write else "GET",
            headers={},
            expire_time=self._clock.now + ttl,
            access_mode="WRITE_ONLY" if write else "READ_ONLY",
        )

    async def upload_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return self._accessor(ref, ttl, write=True)

    async def download_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        return self._accessor(ref, ttl, write=False)

    async def exists(self, ref: ObjectRef) -> bool:
        return ref.key in self.uploaded

    async def size(self, ref: ObjectRef) -> int | None:
        content = self.sealed.get(ref.key, self.uploaded.get(ref.key))
        return None if content is None else len(content)

    async def seal_input(self, ref: ObjectRef) -> SealedObject | None:
        if ref.key not in self.sealed:
            if ref.key not in self.uploaded:
                return None
            self.sealed[ref.key] = self.uploaded[ref.key]  # first seal wins
        content = self.sealed[ref.key]
        return SealedObject(size=len(content), sha256=hashlib.sha256(content).hexdigest())

    async def delete_execution(self, execution: str) -> None:
        for store in (self.uploaded, self.sealed):
            for key in [k for k in store if k.startswith(f"{execution}/")]:
                del store[key]


@dataclasses.dataclass(frozen=True)
class Published:
    """One message the fake queue received."""

    message_id: str
    body: bytes
    priority: Priority
    properties: Mapping[str, str]
    not_before: datetime | None


class FakeQueue:
    """A work queue that records what was published (deduplicated on the message id) and lists dead letters.
    ``attempts`` counts the calls of ``publish``, ``published_one`` is set by each publish, and with
    ``unavailable`` set every publish fails as an unreachable queue does."""

    def __init__(self) -> None:
        self.published: dict[str, Published] = {}
        self.dead_letters: list[DeadLetter] = []
        self.attempts = 0
        self.published_one = asyncio.Event()
        self.unavailable = False

    async def publish(
        self,
        message_id: str,
        body: bytes,
        *,
        priority: Priority,
        properties: Mapping[str, str],
        not_before: datetime | None = None,
    ) -> None:
        self.attempts += 1
        if self.unavailable:
            raise Unavailable("the work queue is unavailable")
        self.published.setdefault(message_id, Published(message_id, body, priority, dict(properties), not_before))
        self.published_one.set()

    async def list_dead_letters(
        self, *, page_size: int = 0, page_token: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        return list(self.dead_letters), None


@dataclasses.dataclass
class Fakes:
    """A context wired to fakes, the in-memory store and the outbox relay (with a dispatcher on the fake queue)."""

    ctx: ExecutionContext
    clock: FakeClock
    catalog: FakeCatalog
    agent: FakeAgent
    objects: FakeObjects
    queue: FakeQueue
    relay: OutboxRelay

    @property
    def repository(self) -> ExecutionRepository:
        return self.ctx.repository


def build(tmp_path: Path) -> Fakes:
    """A fresh set of fakes around the real use cases."""
    clock = FakeClock()
    catalog, agent, objects, queue = FakeCatalog(), FakeAgent(), FakeObjects(clock), FakeQueue()
    repository = ExecutionRepository(MemoryDocumentStore().collection(COLLECTION))
    ctx = ExecutionContext(
        repository=repository,
        catalog=catalog,
        agent=agent,
        objects=objects,
        signing=SigningKeyRing.load_or_create(tmp_path / "signing", hub_id="exthub-test"),
        page_tokens=PageTokenCodec(b"0123456789abcdef", clock=lambda: from_storage(clock())),
        callback_base_url="http://hub.test",
        clock=clock,
        queue=queue,
        input_timeout=timedelta(hours=24),
        cancel_grace=timedelta(seconds=60),
    )
    relay = OutboxRelay(repository, dispatcher=Dispatcher(queue))
    repository.add_listener(relay.notice)
    return Fakes(ctx, clock, catalog, agent, objects, queue, relay)


def profile(name: str, *, model: str = HTTP_JSON_SYNC, **fields: Any) -> ProfileSnapshot:
    """A GATEWAY profile (``fields`` replace any other attribute)."""
    base = ProfileSnapshot(
        name=name,
        execution_model=model,
        extension_settings={"execution_url": "http://echo.test/execute", "validation_url": "http://echo.test/validate"},
    )
    return dataclasses.replace(base, **fields)


def echo_version(
    extension: str = "echo",
    *,
    profiles: tuple[ProfileSnapshot, ...] | None = None,
    inputs: tuple[ObjectDefinition, ...] = (ObjectDefinition("document", required=False),),
    outputs: tuple[ObjectDefinition, ...] = (ObjectDefinition("report"),),
    execution_timeout: timedelta | None = timedelta(minutes=5),
) -> CatalogVersion:
    """``extensions/{extension}/versions/1.0.0`` shaped like the sample extension: profiles ``default`` (sync),
    ``async`` and ``direct``, an optional input ``document`` and an output ``report``."""
    return CatalogVersion(
        name=f"extensions/{extension}/versions/1.0.0",
        state=VersionState.ACTIVE,
        supports_validation=True,
        execution_timeout=execution_timeout,
        profiles=profiles
        or (
            profile("default"),
            profile("async", model=HTTP_JSON_ASYNC),
            profile("direct", mode=ProfileMode.DIRECT, direct_token_ttl=timedelta(minutes=5)),
        ),
        inputs=inputs,
        outputs=outputs,
    )


@contextmanager
def blocking(agent: FakeAgent) -> Iterator[asyncio.Event]:
    """While inside, the agent's calls wait for the returned event (then succeed)."""
    release = asyncio.Event()
    previous = agent.script

    async def wait_then_succeed(task: AttemptTask) -> AttemptOutcome:
        await release.wait()
        return await succeed(task)

    agent.script = wait_then_succeed
    try:
        yield release
    finally:
        agent.script = previous

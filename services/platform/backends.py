"""Backend selection in one place: what a service process opens for ``EXTHUB_BACKEND`` and closes on shutdown.

- document store: a SQLite file per service in the data dir, indexed for :data:`SQLITE_INDEXES`, or the Cosmos DB
  database (``EXTHUB_AZURE__COSMOS_*``), its containers indexed for :data:`COSMOS_SORT_ORDERS`;
- work queue: the SQLite queue file the processes share, or the Service Bus topic ``execution-requests``;
- event publisher: CloudEvents to the configured webhooks, or to the Service Bus topic ``execution-events``;
- object provider: ``local/v1`` (files, URLs signed by the execution service), or ``az-blob/v1``
  (Blob Storage, user-delegation SAS);
- service tokens: the development issuer of the data dir, or Entra ID tokens for
  ``EXTHUB_AZURE__SERVICE_TOKEN_SCOPE``;
- the Azure credential: none, or one per process (:func:`services.platform.azure.identity.open_identity`).

A service opens only what it uses (:meth:`Backends.document_store`, :meth:`Backends.work_queue`, …);
:meth:`Backends.close` closes everything opened, last opened first, the credential last. No key, connection string
or SAS exists on either path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.dev_tokens import service_tokens as dev_service_tokens
from services.platform.logging import get_logger
from services.platform.query.indexes import IndexSpec, Present
from services.platform.query.predicate import SortKey
from services.platform.settings import Settings

# the Azure SDKs are imported only by a process on the azure backend, the events package (cloudevents) only by
# a process that publishes events
if TYPE_CHECKING:
    from services.objects.port import ObjectProvider
    from services.platform.azure.identity import AzureIdentity
    from services.platform.docstore.port import DocumentStore
    from services.platform.events.port import EventPublisher
    from services.platform.workqueue.port import WorkQueue

__all__ = [
    "AZURE_OBJECT_PROVIDER",
    "COSMOS_CHARGES_EVENT",
    "COSMOS_SORT_ORDERS",
    "LOCAL_OBJECT_PROVIDER",
    "SQLITE_INDEXES",
    "Backends",
    "ServiceTokenSource",
    "SortOrder",
]

_log = get_logger("exthub.platform.backends")

SortOrder = tuple[SortKey, ...]


def _asc(*path: str) -> SortOrder:
    return (SortKey(tuple(path)),)


def _desc(*path: str) -> SortOrder:
    return (SortKey(tuple(path), descending=True),)


#: Every ``order_by`` the services query each Cosmos DB container with: each one is served by a composite index
#: (``cosmos_filter.indexing_policy(orders)`` is the container's indexing policy; Terraform declares the same,
#: which ``tests/deploy`` checks). An order missing here still works, sorted by the service over a bounded
#: number of documents, with a warning naming the index to add.
COSMOS_SORT_ORDERS: Mapping[str, tuple[SortOrder, ...]] = {
    # extensions listed by id, versions newest first
    "catalog": (_asc("extension_id"), _desc("semver_key")),
    # executions listed newest first, events in sequence, the sweeper's due times
    "executions": (_desc("create_time"), _asc("sequence"), _asc("due_time")),
}

#: The indexes of the embedded (SQLite) store, per collection: the cross-partition orders of
#: :data:`COSMOS_SORT_ORDERS` and the fields the periodic scans filter on, which Cosmos DB serves from its range
#: index on every path. Each index also serves equality and range filters on its first key, so a background scan
#: costs what it finds, not the size of the collection; a filter-only field is indexed where it is :class:`Present`
#: (event documents, which lack it, cost no index entry). A query that runs only at start or when a replica is gone
#: (the recovery of interrupted synchronous calls) has none: every write would pay for it. An order only ever asked
#: within one partition (versions by
#: ``semver_key``, events by ``sequence``) has none: the primary key finds the partition, and an index on the order
#: would lure SQLite into walking every partition's documents in that order instead.
SQLITE_INDEXES: Mapping[str, tuple[IndexSpec, ...]] = {
    "catalog": (
        _asc("extension_id"),  # ListExtensions' default order
        Present(("update_time",)),  # the search feed's poll: update_time >= now - overlap
    ),
    "executions": (
        _desc("create_time"),  # ListExecutions' default order
        Present(("due_time",)),  # the sweeper: due_time <= now (only unfinished executions have one)
        Present(("outbox", "events_pending")),  # the outbox relay's sweep: events_pending = true
        Present(("outbox", "dispatch", "attempt")),  # … or a dispatch marker's attempt >= 1
    ),
}

#: The log event the Cosmos DB store's request units since start are reported with when a service stops.
COSMOS_CHARGES_EVENT = "cosmos request units since start"
LOCAL_OBJECT_PROVIDER = "local/v1"
AZURE_OBJECT_PROVIDER = "az-blob/v1"


class ServiceTokenSource(Protocol):
    """Bearer tokens for a service's own calls to another service (read for every call)."""

    def token(self) -> str:
        """A token valid now."""
        ...


@dataclass
class Backends:
    """The backends of one service process (see the module docstring). Build with :meth:`open`."""

    settings: Settings
    identity: AzureIdentity | None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    async def open(cls, settings: Settings, *, environ: Mapping[str, str] | None = None) -> Backends:
        """The backends for ``settings.backend``; on ``azure`` the process's credential is built here from the
        environment (``os.environ`` unless ``environ`` is given: the standard ``AZURE_*`` variables)."""
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
        if settings.backend != "azure":
            return cls(settings, None)
        from services.platform.azure.identity import open_identity

        return cls(settings, open_identity(settings.azure, environ))

    @property
    def profile(self) -> Literal["local", "azure"]:
        """``local`` or ``azure``."""
        return self.settings.backend

    @property
    def object_provider_name(self) -> str:
        """The one object provider this deployment offers (``local/v1`` or ``az-blob/v1``)."""
        return AZURE_OBJECT_PROVIDER if self.profile == "azure" else LOCAL_OBJECT_PROVIDER

    def _credential(self) -> AzureIdentity:
        assert self.identity is not None, "the azure backend has a credential"
        return self.identity

    def _on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    async def document_store(self, *, sqlite_file: str) -> DocumentStore:
        """The service's document store: ``<data_dir>/<sqlite_file>`` locally (with the indexes of
        :data:`SQLITE_INDEXES`), the Cosmos DB database on Azure (its containers' composite indexes from
        :data:`COSMOS_SORT_ORDERS`)."""
        if self.profile == "azure":
            from services.platform.docstore.cosmos import CosmosDocumentStore

            azure = self.settings.azure
            assert azure.cosmos_endpoint is not None  # settings validation refuses azure without it
            cosmos = await CosmosDocumentStore.open(
                azure.cosmos_endpoint,
                azure.cosmos_database,
                self._credential().credential,
                sort_orders={name: list(orders) for name, orders in COSMOS_SORT_ORDERS.items()},
            )

            async def report_charges() -> None:
                charges = cosmos.charges
                _log.info(
                    COSMOS_CHARGES_EVENT,
                    request_units=round(charges.total, 2),
                    requests=charges.requests,
                    by_operation={op: round(ru, 2) for op, ru in sorted(charges.by_operation.items())},
                )

            self._on_close(report_charges)
            store: DocumentStore = cosmos
        else:
            from services.platform.docstore.sqlite import SqliteDocumentStore

            store = await SqliteDocumentStore.open(self.settings.data_dir / sqlite_file, indexes=SQLITE_INDEXES)
        self._on_close(store.close)
        return store

    async def work_queue(self, *, priorities: Sequence[str] = ("HIGH", "NORMAL", "LOW")) -> WorkQueue:
        """The work queue of asynchronous executions: the SQLite file the processes share, or the Service Bus topic
        (draining the subscriptions of ``priorities``; the publisher sends to every one)."""
        if self.profile == "azure":
            from services.platform.workqueue.servicebus import ServiceBusWorkQueue

            azure = self.settings.azure
            assert azure.servicebus_namespace is not None
            bus = await ServiceBusWorkQueue.open(
                azure.servicebus_namespace,
                self._credential().credential,
                priorities=list(priorities),
                endpoint=azure.servicebus_endpoint,
            )
            self._on_close(bus.close)
            return bus
        from services.platform.workqueue.sqlite import SqliteWorkQueue

        queue = await SqliteWorkQueue.open(
            self.settings.queue_path,
            ageing_seconds=self.settings.queue_ageing_seconds,
            poll_interval_seconds=self.settings.queue_poll_seconds,
        )
        self._on_close(queue.close)
        return queue

    async def event_publisher(self) -> EventPublisher | None:
        """Where execution events go as CloudEvents: the Service Bus topic (``execution-events``) on Azure, the
        configured webhooks locally (None when there are none)."""
        events = self.settings.events
        if self.settings.events_publisher == "servicebus":
            from services.platform.events.servicebus import ServiceBusEventPublisher

            azure = self.settings.azure
            assert azure.servicebus_namespace is not None  # settings validation refuses servicebus without it
            bus = await ServiceBusEventPublisher.open(
                azure.servicebus_namespace,
                self._credential().credential,
                topic=events.topic,
                endpoint=azure.servicebus_endpoint,
            )
            self._on_close(bus.close)
            return bus
        if not events.webhooks:
            return None
        from services.platform.events.webhook import WebhookEventPublisher

        hooks = await WebhookEventPublisher.open(
            events.webhooks, request_timeout=events.webhook_timeout_seconds, max_attempts=events.webhook_max_attempts
        )
        self._on_close(hooks.close)
        return hooks

    async def object_provider(self, *, public_base_url: str) -> ObjectProvider:
        """``local/v1`` (URLs under ``public_base_url``) or ``az-blob/v1`` on the configured container."""
        if self.profile == "azure":
            from services.objects.azblob import AzureBlobObjectProvider

            azure = self.settings.azure
            assert azure.blob_account_url is not None
            blob = await AzureBlobObjectProvider.open(
                azure.blob_account_url, azure.blob_container, self._credential().credential
            )
            self._on_close(blob.close)
            return blob
        from services.objects.local import LocalObjectProvider

        return await LocalObjectProvider.open(self.settings.data_dir, public_base_url)

    async def service_tokens(self, *, user: str) -> ServiceTokenSource:
        """Agent-role tokens for calls to the other services: from the development issuer of the data dir
        (tenant ``exthub``, ``user``), or Entra ID tokens of this process's identity for the service scope."""
        if self.profile == "azure":
            scope = self.settings.azure.service_token_scope
            assert scope is not None
            from services.platform.azure.tokens import AzureServiceTokens

            tokens = AzureServiceTokens(self._credential().credential, scope)
            await tokens.start()
            self._on_close(tokens.close)
            return tokens
        issuer = await asyncio.to_thread(DevIssuer.load_or_create, self.settings.data_dir)
        return dev_service_tokens(issuer, user=user)

    async def close(self) -> None:
        """Close what was opened, last first, then the credential (idempotent; never raises)."""
        if self._closed:
            return
        self._closed = True
        for close in reversed(self._closers):
            try:
                await close()
            except Exception as error:
                _log.warning("closing a backend failed", error=type(error).__name__)
        if self.identity is not None:
            with contextlib.suppress(Exception):
                await self.identity.close()

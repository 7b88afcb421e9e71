"""The Cosmos DB document store (NoSQL API, ``azure-cosmos`` aio), behind the document store port.

* One container per collection, partition key path ``/partition``; an item is
  ``{"id": <id>, "partition": <partition>, "body": {…}}`` (the body is nested so it never collides with ``id``
  or the system properties). Containers are read, and created only when missing, on first use (in production
  they exist already: the data-plane role of a workload identity cannot create them).
* Built from an endpoint, a database name and an ``AsyncTokenCredential`` (:meth:`CosmosDocumentStore.open`):
  there is no key anywhere.
* Writes are conditional where the port says so (``IfNotModified`` with the etag); 409/412/404 map to the
  port's errors. Filters compile to parameterised SQL (:mod:`services.platform.docstore.cosmos_filter`);
  paging is keyset on ``order_by`` + id + partition inside an opaque continuation. An ``ORDER BY`` needs a
  composite index: declare the sort orders per collection (``sort_orders``), the container's indexing policy
  is built from them; an undeclared order is sorted here, over a bounded number of matching documents.
* Throttling (429) is retried by the SDK after ``x-ms-retry-after-ms``, a bounded number of times; an
  unreachable service, a 5xx or throttling beyond those retries, or an operation longer than
  ``operation_timeout`` raises ``Unavailable(BACKEND_UNAVAILABLE)``. No exception text reaches a client.
* Request units: every response's ``x-ms-request-charge`` is added to :attr:`CosmosDocumentStore.charges`
  (a running total the benchmarks read) and each operation logs its charge at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineResponse
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosClientTimeoutError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from services.platform.docstore.codec import (
    decode_continuation,
    dump_body,
    encode_continuation,
    fingerprint,
    load_body,
)
from services.platform.docstore.cosmos_filter import (
    Parameters,
    Position,
    SortValue,
    compare_positions,
    compile_predicate,
    composite_index,
    indexing_policy,
    keyset_after,
    order_by_clause,
    sort_value_of,
)
from services.platform.docstore.port import (
    MAX_DOCUMENT_BYTES,
    MAX_QUERY_LIMIT,
    Document,
    Query,
    QueryPage,
    document_exists,
    document_not_found,
    etag_mismatch,
    validate_key,
)
from services.platform.errors import AlreadyExists, InvalidArgument, Unavailable
from services.platform.paging import invalid_page_token
from services.platform.query.predicate import Predicate, SortKey

__all__ = [
    "PARTITION_KEY_PATH",
    "CosmosDocumentCollection",
    "CosmosDocumentStore",
    "CosmosStoreError",
    "RequestCharges",
    "SortOrders",
]

_log = logging.getLogger(__name__)

PARTITION_KEY_PATH = "/partition"
DEFAULT_OPERATION_TIMEOUT = 15.0
DEFAULT_THROTTLE_RETRIES = 5
DEFAULT_THROTTLE_MAX_WAIT = 10.0
DEFAULT_UNINDEXED_SCAN_LIMIT = 5000
_COLLECTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,254}")
_UNAVAILABLE_STATUS = frozenset({401, 403, 408, 429, 449, 500, 502, 503, 504})
_OWNER_NOT_FOUND = 1003  # substatus: the database or container does not exist
_SELECT = "c.id, c.partition, c.body, c._etag"

SortOrders = Mapping[str, Iterable[Sequence[SortKey]]]
_T = TypeVar("_T")


class CosmosStoreError(RuntimeError):
    """Cosmos DB refused a request for a reason no retry can fix (e.g. a malformed query): a bug or a
    misconfigured account. The message holds the status codes only."""


@dataclass
class RequestCharges:
    """Request units consumed, as reported by Cosmos DB (``x-ms-request-charge``), since the store opened."""

    total: float = 0.0
    requests: int = 0
    by_operation: dict[str, float] = field(default_factory=dict)

    def add(self, operation: str, charge: float) -> None:
        """Attribute one finished operation's charge (``total`` counts every response as it arrives)."""
        self.by_operation[operation] = self.by_operation.get(operation, 0.0) + charge


@dataclass
class _Meter:
    charge: float = 0.0
    requests: int = 0


_CURRENT_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("cosmos_request_meter", default=None)


def _copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-only copy of ``body``, checked like every adapter checks it."""
    return load_body(dump_body(body))


def _too_large() -> InvalidArgument:
    return InvalidArgument(
        f"the document is too large (at most {MAX_DOCUMENT_BYTES} bytes)", reason="DOCUMENT_TOO_LARGE"
    )


def _document(item: Mapping[str, Any]) -> Document:
    body = item.get("body")
    if not isinstance(body, dict):
        raise CosmosStoreError("an item without a body object: the container holds items this store did not write")
    return Document(id=str(item["id"]), partition=str(item["partition"]), body=body, etag=str(item["_etag"]))


def _status(exc: CosmosHttpResponseError) -> str:
    sub = exc.sub_status if exc.sub_status is not None else 0
    return f"status {exc.status_code}.{sub}"


def _unavailable() -> Unavailable:
    return Unavailable("the document store is unavailable; retry", reason="BACKEND_UNAVAILABLE")


class CosmosDocumentStore:
    """A :class:`~services.platform.docstore.port.DocumentStore` on one Cosmos DB database."""

    def __init__(
        self,
        client: CosmosClient,
        database: str,
        charges: RequestCharges,
        *,
        sort_orders: SortOrders | None = None,
        default_sort_orders: Iterable[Sequence[SortKey]] = (),
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        unindexed_scan_limit: int = DEFAULT_UNINDEXED_SCAN_LIMIT,
    ) -> None:
        self._client = client
        self._database_name = database
        self._database: DatabaseProxy = client.get_database_client(database)
        self._charges = charges
        self._sort_orders = {name: [tuple(order) for order in orders] for name, orders in (sort_orders or {}).items()}
        self._default_sort_orders = [tuple(order) for order in default_sort_orders]
        self._operation_timeout = operation_timeout
        self._unindexed_scan_limit = unindexed_scan_limit
        self._collections: dict[str, CosmosDocumentCollection] = {}
        self._database_ready = False
        self._database_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        endpoint: str,
        database: str,
        credential: AsyncTokenCredential,
        *,
        sort_orders: SortOrders | None = None,
        default_sort_orders: Iterable[Sequence[SortKey]] = (),
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        throttle_retries: int = DEFAULT_THROTTLE_RETRIES,
        throttle_max_wait: float = DEFAULT_THROTTLE_MAX_WAIT,
        unindexed_scan_limit: int = DEFAULT_UNINDEXED_SCAN_LIMIT,
    ) -> CosmosDocumentStore:
        """Connect to the account at ``endpoint`` with ``credential`` (Microsoft Entra ID; the caller keeps
        ownership of it). ``sort_orders`` names, per collection, the ``order_by`` values served by a composite
        index (the containers' indexing policy); ``default_sort_orders`` are declared for every collection.

        A query with an order that is not declared is sorted by the service itself, reading at most
        ``unindexed_scan_limit`` matching documents (more is INVALID_ARGUMENT on ``order_by``).

        Throttled requests are retried at most ``throttle_retries`` times, waiting what the service asks
        (``x-ms-retry-after-ms``) up to ``throttle_max_wait`` seconds in total. Raises
        ``Unavailable(BACKEND_UNAVAILABLE)`` when the account cannot be reached within ``operation_timeout``.
        """
        charges = RequestCharges()
        client = CosmosClient(
            endpoint,
            credential=credential,
            retry_throttle_total=throttle_retries,
            retry_throttle_backoff_max=throttle_max_wait,
            connection_timeout=min(5.0, operation_timeout),
            read_timeout=operation_timeout,
            raw_response_hook=_charge_hook(charges),
        )
        store = cls(
            client,
            database,
            charges,
            sort_orders=sort_orders,
            default_sort_orders=default_sort_orders,
            operation_timeout=operation_timeout,
            unindexed_scan_limit=unindexed_scan_limit,
        )
        try:
            await store._run("connect", "", client.__aenter__)
        except BaseException:
            await client.close()
            raise
        return store

    @property
    def database(self) -> str:
        """The database name."""
        return self._database_name

    @property
    def charges(self) -> RequestCharges:
        """Request units consumed since the store opened (every HTTP response, retries included)."""
        return self._charges

    def sort_orders(self, name: str) -> list[tuple[SortKey, ...]]:
        """The orders served by collection ``name``'s composite indexes (the empty order always is)."""
        orders: list[tuple[SortKey, ...]] = [()]
        for order in [*self._default_sort_orders, *self._sort_orders.get(name, [])]:
            if order not in orders:
                orders.append(order)
        return orders

    def collection(self, name: str) -> CosmosDocumentCollection:
        """The collection ``name`` (letters, digits, ``_`` and ``-``): a container, created on first use."""
        if not _COLLECTION_RE.fullmatch(name):
            raise ValueError(f"invalid collection name {name!r}")
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = CosmosDocumentCollection(self, name)
        return found

    async def close(self) -> None:
        """Close the client (idempotent). The credential stays open: it belongs to the caller."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()

    async def _ensure_database(self) -> None:
        if self._database_ready:
            return
        async with self._database_lock:
            if not self._database_ready:
                self._database = await self._client.create_database_if_not_exists(self._database_name)
                self._database_ready = True

    def _forget_database(self) -> None:
        self._database_ready = False

    async def _run(self, operation: str, collection: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one operation: bounded in time, metered, transport failures mapped to Unavailable."""
        meter = _Meter()
        token = _CURRENT_METER.set(meter)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._operation_timeout):
                return await call()
        except TimeoutError:
            _log.warning("cosmos %s %s: no answer within %.1f s", operation, collection, self._operation_timeout)
            raise _unavailable() from None
        except CosmosHttpResponseError as exc:
            if exc.status_code == 413:
                raise _too_large() from None
            if exc.status_code in _UNAVAILABLE_STATUS:
                level = logging.ERROR if exc.status_code in (401, 403) else logging.WARNING
                _log.log(level, "cosmos %s %s: %s after retries", operation, collection, _status(exc))
                raise _unavailable() from None
            _log.error("cosmos %s %s: refused with %s", operation, collection, _status(exc))
            raise CosmosStoreError(f"Cosmos DB refused {operation} ({_status(exc)})") from None
        except (
            CosmosClientTimeoutError,
            ServiceRequestError,
            ServiceResponseError,
            aiohttp.ClientError,
            OSError,
        ) as exc:
            _log.warning("cosmos %s %s: %s", operation, collection, type(exc).__name__)
            raise _unavailable() from None
        except AzureError as exc:
            _log.error("cosmos %s %s: %s", operation, collection, type(exc).__name__)
            raise _unavailable() from None
        finally:
            _CURRENT_METER.reset(token)
            self._charges.add(operation, meter.charge)
            _log.debug(
                "cosmos %s %s: %.2f RU in %d request(s), %.1f ms",
                operation,
                collection,
                meter.charge,
                meter.requests,
                (time.perf_counter() - started) * 1000,
            )


def _charge_hook(charges: RequestCharges) -> Callable[[PipelineResponse[Any, Any]], None]:
    def record(response: PipelineResponse[Any, Any]) -> None:
        raw = response.http_response.headers.get("x-ms-request-charge")
        try:
            charge = float(raw) if raw is not None else 0.0
        except ValueError:
            charge = 0.0
        charges.total += charge
        charges.requests += 1
        meter = _CURRENT_METER.get()
        if meter is not None:
            meter.charge += charge
            meter.requests += 1

    return record


def _is_owner_missing(exc: CosmosResourceNotFoundError) -> bool:
    return bool(exc.sub_status == _OWNER_NOT_FOUND)


class CosmosDocumentCollection:
    """A :class:`~services.platform.docstore.port.DocumentCollection` stored as one Cosmos DB container."""

    def __init__(self, store: CosmosDocumentStore, name: str) -> None:
        self._store = store
        self._name = name
        self._container: ContainerProxy | None = None
        self._lock = asyncio.Lock()
        self._warned: set[tuple[SortKey, ...]] = set()

    @property
    def name(self) -> str:
        """The collection name (the container id)."""
        return self._name

    async def _ensure(self) -> ContainerProxy:
        container = self._container
        if container is not None:
            return container
        async with self._lock:
            if self._container is None:
                await self._store._ensure_database()
                policy = indexing_policy(self._store.sort_orders(self._name)[1:])
                container, properties = await self._store._database.create_container_if_not_exists(
                    id=self._name,
                    partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                    indexing_policy=policy,
                    return_properties=True,
                )
                self._check_properties(properties, policy)
                self._container = container
            return self._container

    def _check_properties(self, properties: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
        paths = (properties.get("partitionKey") or {}).get("paths")
        if paths != [PARTITION_KEY_PATH]:
            raise CosmosStoreError(
                f"container {self._name!r} is partitioned by {paths}, not [{PARTITION_KEY_PATH!r}]: recreate it"
            )
        existing = (properties.get("indexingPolicy") or {}).get("compositeIndexes") or []
        missing = [index for index in policy["compositeIndexes"] if index not in existing]
        if missing:
            _log.warning(
                "container %s lacks %d composite index(es) its queries need: %s",
                self._name,
                len(missing),
                json.dumps(missing),
            )

    def _forget(self) -> None:
        self._container = None
        self._store._forget_database()

    async def _with_container(self, operation: str, call: Callable[[ContainerProxy], Awaitable[_T]]) -> _T:
        """Run ``call`` on the container; if the container (or database) has vanished, re-create it once."""

        async def attempt() -> _T:
            container = await self._ensure()
            try:
                return await call(container)
            except CosmosResourceNotFoundError as exc:
                if operation not in ("create", "query", "count") and not _is_owner_missing(exc):
                    raise
                self._forget()
                return await call(await self._ensure())

        return await self._store._run(operation, self._name, attempt)

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        """Insert a new document; AlreadyExists(DOCUMENT_EXISTS) when the id is taken."""
        validate_key("partition", partition)
        validate_key("id", id)
        item = {"id": id, "partition": partition, "body": _copy(body)}

        async def call(container: ContainerProxy) -> Document:
            try:
                return _document(await container.create_item(item))
            except CosmosResourceExistsError:
                raise document_exists(id) from None

        return await self._with_container("create", call)

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        """Insert the documents whose id is not taken (one create each, concurrently: Cosmos DB has no
        conditional batch that skips the existing ones); the ones created."""

        async def create(id: str, body: Mapping[str, Any]) -> Document | None:
            try:
                return await self.create(partition, id, body)
            except AlreadyExists:
                return None

        results = await asyncio.gather(*(create(id, body) for id, body in documents.items()))
        return [document for document in results if document is not None]

    async def read(self, partition: str, id: str) -> Document | None:
        """The document, or None (a point read: the cheapest operation)."""
        validate_key("partition", partition)
        validate_key("id", id)

        async def call(container: ContainerProxy) -> Document | None:
            try:
                return _document(await container.read_item(id, partition_key=partition))
            except CosmosResourceNotFoundError as exc:
                if _is_owner_missing(exc):
                    raise
                return None

        return await self._with_container("read", call)

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """Overwrite; Aborted(ETAG_MISMATCH) on a stale etag, NotFound(DOCUMENT_NOT_FOUND) if missing."""
        validate_key("partition", partition)
        validate_key("id", id)
        item = {"id": id, "partition": partition, "body": _copy(body)}
        condition: dict[str, Any] = {}
        if if_match is not None:
            condition = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}

        async def call(container: ContainerProxy) -> Document:
            try:
                return _document(await container.replace_item(id, item, **condition))
            except CosmosAccessConditionFailedError:
                raise etag_mismatch(id) from None
            except CosmosResourceNotFoundError as exc:
                if _is_owner_missing(exc):
                    raise
                raise document_not_found(id) from None

        return await self._with_container("replace", call)

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """Remove; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        validate_key("partition", partition)
        validate_key("id", id)
        condition: dict[str, Any] = {}
        if if_match is not None:
            condition = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}

        async def call(container: ContainerProxy) -> None:
            try:
                await container.delete_item(id, partition_key=partition, **condition)
            except CosmosAccessConditionFailedError:
                raise etag_mismatch(id) from None
            except CosmosResourceNotFoundError as exc:
                if _is_owner_missing(exc):
                    raise
                raise document_not_found(id) from None

        await self._with_container("delete", call)

    async def query(self, query: Query) -> QueryPage:
        """One page, ordered by ``order_by`` then id then partition; keyset continuation.

        A declared order is served by its composite index (``ORDER BY`` with ``TOP``). Any other order works
        too, but is sorted here after reading every matching document (at most the store's scan limit): a
        warning names the composite index to declare.
        """
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        order_by = tuple(query.order_by)
        indexed = order_by in self._store.sort_orders(self._name)
        params = Parameters()
        top = f"TOP {params.add(query.limit + 1)} " if indexed else ""
        conditions = self._conditions(query.partition, query.where, params)
        query_fingerprint = fingerprint(self._name, query)
        if query.continuation is not None:
            values, last_id, last_partition = _decode(query.continuation, query_fingerprint, len(order_by))
            conditions.append(keyset_after(order_by, values, last_id, last_partition, params))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {top}{_SELECT} FROM c{where}"
        if indexed:
            sql += " " + order_by_clause(order_by)
        else:
            self._warn_unindexed(order_by)
        wanted = query.limit + 1 if indexed else self._store._unindexed_scan_limit + 1

        async def call(container: ContainerProxy) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            items = container.query_items(
                sql,
                parameters=params.as_list(),
                partition_key=query.partition,
                max_item_count=min(wanted, MAX_QUERY_LIMIT + 1),
            )
            async for item in items:
                rows.append(item)
                if len(rows) >= wanted:
                    break
            return rows

        rows = await self._with_container("query", call)
        documents = [_document(row) for row in rows]
        if not indexed:
            documents = self._sorted_here(order_by, documents)
        continuation = None
        if len(documents) > query.limit:
            documents = documents[: query.limit]
            last = documents[-1]
            values = [sort_value_of(last.body, key.path) for key in order_by]
            continuation = _encode(query_fingerprint, values, last.id, last.partition)
        return QueryPage(documents=documents, continuation=continuation)

    def _sorted_here(self, order_by: tuple[SortKey, ...], documents: list[Document]) -> list[Document]:
        limit = self._store._unindexed_scan_limit
        if len(documents) > limit:
            raise InvalidArgument.field(
                "order_by",
                f"this order is not indexed and more than {limit} documents match: filter further or use an "
                "indexed order",
            )
        decorated: list[tuple[Position, Document]] = [
            (([sort_value_of(d.body, key.path) for key in order_by], d.id, d.partition), d) for d in documents
        ]

        def compare(a: tuple[Position, Document], b: tuple[Position, Document]) -> int:
            return compare_positions(order_by, a[0], b[0])

        return [document for _, document in sorted(decorated, key=functools.cmp_to_key(compare))]

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """How many documents match (``SELECT VALUE COUNT(1)``)."""
        params = Parameters()
        conditions = self._conditions(partition, where, params)
        clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT VALUE COUNT(1) FROM c{clause}"

        async def call(container: ContainerProxy) -> int:
            total = 0
            async for value in container.query_items(sql, parameters=params.as_list(), partition_key=partition):
                number: Any = value  # SELECT VALUE COUNT(1) yields numbers (the SDK types every result as an item)
                total += int(number)
            return total

        return await self._with_container("count", call)

    def _warn_unindexed(self, order_by: tuple[SortKey, ...]) -> None:
        if order_by in self._warned:
            return
        self._warned.add(order_by)
        _log.warning(
            "collection %s is queried in an order without a composite index (%s): sorting matching documents in "
            "the service; declare the order in sort_orders to be served by the index %s",
            self._name,
            ", ".join(f"{'.'.join(k.path)} {'desc' if k.descending else 'asc'}" for k in order_by),
            json.dumps(composite_index(order_by)),
        )

    def _conditions(self, partition: str | None, predicate: Predicate | None, params: Parameters) -> list[str]:
        conditions: list[str] = []
        if partition is not None:
            validate_key("partition", partition)
            # also passed as partition_key (routing); in the WHERE clause too because the emulator
            # otherwise returns other partitions' items (harmless on Cosmos DB)
            conditions.append(f"c.partition = {params.add(partition)}")
        if predicate is not None:
            conditions.append(compile_predicate(predicate, params))
        return conditions


def _encode(query_fingerprint: str, values: Sequence[SortValue], id: str, partition: str) -> str:
    """The shared continuation token; each typed sort value travels as the JSON text of ``[kind, value]``."""
    texts = [json.dumps(value.to_json(), separators=(",", ":"), ensure_ascii=False) for value in values]
    return encode_continuation(query_fingerprint, texts, id, partition)


def _decode(token: str, query_fingerprint: str, n_keys: int) -> tuple[list[SortValue], str, str]:
    texts, last_id, last_partition = decode_continuation(token, query_fingerprint, n_keys)
    try:
        values = [SortValue.from_json(json.loads(text)) for text in texts if isinstance(text, str)]
    except ValueError:
        raise invalid_page_token("malformed continuation") from None
    if len(values) != n_keys:
        raise invalid_page_token("malformed continuation")
    return values, last_id, last_partition

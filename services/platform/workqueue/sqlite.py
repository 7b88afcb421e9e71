"""The embedded work queue: leased messages in SQLite (WAL), safe for several processes on one machine.

Tables (in any database file; the queue may have a file of its own or share one):

* ``queue_messages``: active messages. ``visible_us`` is the instant from which a message may be received
  (its ``not_before``, the end of its current lease, or the end of an abandon delay); while leased it
  equals ``locked_until``. ``rank_us`` is the ageing sort key (see :mod:`services.platform.workqueue.port`).
* ``queue_dead_letters``: dead-lettered messages with reason and description.
* ``queue_duplicates``: message ids seen within the duplicate-detection window.
* ``queue_schema``: this module's schema version. ``PRAGMA user_version`` belongs to the owner of the file
  (the document store uses it), so the queue keeps its own version and can share a file safely.

Times are integer microseconds since the Unix epoch (UTC) so that ageing is plain arithmetic and indexable.

Concurrency: one writer and one reader connection per instance, each on a thread of its own
(:class:`~services.platform.sqlite_connection.SqliteConnection`): every operation is ONE job there (a write is
one transaction; concurrent ones are committed together, each in a savepoint of its own), serialised across
processes by ``BEGIN IMMEDIATE`` (with ``busy_timeout``); a claim selects the best candidates and leases
them in the same immediate transaction, so two receivers never hold the same message at once. Lease tokens
are random per delivery; every settlement is ``… WHERE message_id = ? AND lease_token = ? AND visible_us >
now``, so a stale holder can neither renew nor settle a message after its lease ended.

Long polling: a receive first checks for a ready message on the reader connection (idle pollers never
take the write lock), then claims. A receive that finds nothing waits for a wake-up — set by a publish,
abandon or redrive of this instance, or of another process through the queue's wake-up sockets
(:mod:`services.platform.workqueue.wakeup`) — or at most ``poll_interval_seconds`` (a delayed message coming
due, a lost wake-up), until ``wait_seconds`` have passed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from services.platform import timefmt
from services.platform.errors import InvalidArgument, Unavailable
from services.platform.paging import invalid_page_token, resolve_page_size
from services.platform.sqlite_connection import SqliteConnection, require_wal
from services.platform.workqueue.port import (
    DEFAULT_AGEING_SECONDS,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_MAX_DELIVERY_COUNT,
    MAX_DELIVERY_COUNT_EXCEEDED,
    DeadLetter,
    LeasedMessage,
    LeaseLost,
    Priority,
    PriorityStats,
    QueueStats,
    WorkMessage,
    dead_letter_not_found,
    validate_body,
    validate_dead_letter_reason,
    validate_delay,
    validate_filter,
    validate_lease_seconds,
    validate_max_messages,
    validate_message_id,
    validate_properties,
    validate_wait_seconds,
)
from services.platform.workqueue.wakeup import WakeupChannel, wake_directory

__all__ = ["SCHEMA_VERSION", "SqliteWorkQueue"]

# stats(): per priority, active (ready or leased) and scheduled counts and the oldest active publish time
_STATS_ACTIVE = (
    "SELECT priority,"
    " SUM(CASE WHEN lease_token IS NULL AND visible_us > ?1 THEN 0 ELSE 1 END),"
    " SUM(CASE WHEN lease_token IS NULL AND visible_us > ?1 THEN 1 ELSE 0 END),"
    " MIN(CASE WHEN lease_token IS NULL AND visible_us > ?1 THEN NULL ELSE enqueued_us END)"
    " FROM queue_messages GROUP BY priority"
)
_STATS_DEAD = "SELECT priority, COUNT(*) FROM queue_dead_letters GROUP BY priority"

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE IF NOT EXISTS queue_messages (
            seq            INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id     TEXT    NOT NULL UNIQUE,
            body           BLOB    NOT NULL,
            properties     TEXT    NOT NULL CHECK (json_valid(properties)),
            priority       INTEGER NOT NULL CHECK (priority IN (1, 2, 3)),
            enqueued_us    INTEGER NOT NULL,
            rank_us        INTEGER NOT NULL,
            visible_us     INTEGER NOT NULL,
            delivery_count INTEGER NOT NULL DEFAULT 0,
            lease_token    TEXT,
            lease_us       INTEGER
        )
        """,
        "CREATE INDEX IF NOT EXISTS queue_messages_by_rank ON queue_messages (rank_us, seq)",
        """
        CREATE TABLE IF NOT EXISTS queue_dead_letters (
            seq              INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id       TEXT    NOT NULL UNIQUE,
            body             BLOB    NOT NULL,
            properties       TEXT    NOT NULL CHECK (json_valid(properties)),
            priority         INTEGER NOT NULL,
            enqueued_us      INTEGER NOT NULL,
            delivery_count   INTEGER NOT NULL,
            reason           TEXT    NOT NULL,
            description      TEXT    NOT NULL,
            dead_lettered_us INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS queue_duplicates (
            message_id TEXT PRIMARY KEY,
            expires_us INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX IF NOT EXISTS queue_duplicates_by_expiry ON queue_duplicates (expires_us)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_DEFAULT_BUSY_TIMEOUT_MS = 10_000
_DEFAULT_POLL_INTERVAL_SECONDS = 0.05
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MESSAGE_COLUMNS = "message_id, body, properties, priority, enqueued_us, delivery_count"

Clock = Callable[[], datetime]
T = TypeVar("T")


def _to_us(dt: datetime) -> int:
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise InvalidArgument.field("not_before", "must be timezone-aware")
    return (dt - _EPOCH) // _MICROSECOND


def _from_us(us: int) -> datetime:
    return _EPOCH + us * _MICROSECOND


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Lock contention beyond ``busy_timeout`` becomes UNAVAILABLE (retryable)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise Unavailable("the work queue is busy; retry") from exc
        raise


def _message(row: Sequence[Any]) -> WorkMessage:
    message_id, body, properties, priority, enqueued_us, delivery_count = row[:6]
    return WorkMessage(
        message_id=message_id,
        body=bytes(body),
        properties=json.loads(properties),
        priority=Priority(priority),
        enqueued_time=_from_us(enqueued_us),
        delivery_count=int(delivery_count),
    )


def _filter_sql(filter: Mapping[str, str]) -> tuple[str, list[Any]]:
    """``AND json_extract(properties, '$."k"') = v`` per pair; keys are validated (no quotes) and bound."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in sorted(filter.items()):
        clauses.append(" AND json_extract(properties, ?) = ?")
        params.extend([f'$."{key}"', value])
    return "".join(clauses), params


def _encode_token(after_seq: int) -> str:
    raw = json.dumps({"a": after_seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_token(token: str) -> int:
    if not _TOKEN_RE.fullmatch(token):
        raise invalid_page_token("malformed page token")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_page_token("malformed page token") from None
    after = payload.get("a") if isinstance(payload, dict) else None
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**63:
        raise invalid_page_token("malformed page token")
    return after


class SqliteWorkQueue:
    """A :class:`~services.platform.workqueue.port.WorkQueue` on one SQLite file, with
    :class:`~services.platform.workqueue.port.QueueStatsSource` (two aggregate reads).

    ``clock`` is injectable (leases, delays, ``not_before``, ageing and duplicate detection all read it);
    ``ageing_seconds`` is the wait that raises a message by one priority level.
    """

    def __init__(
        self,
        path: Path,
        writer: SqliteConnection,
        reader: SqliteConnection,
        *,
        clock: Clock,
        ageing_seconds: float,
        max_delivery_count: int,
        duplicate_window_seconds: float,
        poll_interval_seconds: float,
        wakeups: bool = True,
    ) -> None:
        self._path = path
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._ageing_us = round(ageing_seconds * 1_000_000)
        self._max_delivery_count = max_delivery_count
        self._duplicate_window_us = round(duplicate_window_seconds * 1_000_000)
        self._poll_interval = poll_interval_seconds
        self._wakeup = asyncio.Event()
        self._channel = WakeupChannel(wake_directory(path), self._wake_local) if wakeups else None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock = timefmt.utcnow,
        ageing_seconds: float = DEFAULT_AGEING_SECONDS,
        max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
        duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
        poll_interval_seconds: float = _DEFAULT_POLL_INTERVAL_SECONDS,
        busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS,
        wakeups: bool = True,
    ) -> SqliteWorkQueue:
        """Open (creating and migrating if needed) the queue tables in ``path``; ``wakeups`` False: receivers of
        other processes learn of this instance's publishes only by polling."""
        if not ageing_seconds > 0:
            raise ValueError("ageing_seconds must be positive")
        if isinstance(max_delivery_count, bool) or not isinstance(max_delivery_count, int) or max_delivery_count < 1:
            raise ValueError("max_delivery_count must be an integer of 1 or more")
        if not duplicate_window_seconds >= 0:
            raise ValueError("duplicate_window_seconds must not be negative")
        if not poll_interval_seconds > 0:
            raise ValueError("poll_interval_seconds must be positive")
        path = Path(path)
        writer = await SqliteConnection.open(path, busy_timeout_ms=busy_timeout_ms)
        try:
            with _translate_errors():
                await writer.call(lambda conn: require_wal(path, conn.execute("PRAGMA journal_mode=WAL").fetchone()))
                await writer.call(_migrate)
            reader = await SqliteConnection.open(path, busy_timeout_ms=busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.close()
            raise
        return cls(
            path,
            writer,
            reader,
            clock=clock,
            ageing_seconds=ageing_seconds,
            max_delivery_count=max_delivery_count,
            duplicate_window_seconds=duplicate_window_seconds,
            poll_interval_seconds=poll_interval_seconds,
            wakeups=wakeups,
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def max_delivery_count(self) -> int:
        """Deliveries after which a message is dead-lettered (``MaxDeliveryCountExceeded``)."""
        return self._max_delivery_count

    @property
    def ageing_seconds(self) -> float:
        """The wait that raises a message by one priority level."""
        return self._ageing_us / 1_000_000

    # -- publishing ---------------------------------------------------------------------------------

    async def publish(
        self,
        message_id: str,
        body: bytes,
        *,
        priority: Priority,
        properties: Mapping[str, str],
        not_before: datetime | None = None,
    ) -> None:
        """Enqueue; a no-op when ``message_id`` is queued, dead-lettered or seen within the window."""
        validate_message_id(message_id)
        data = validate_body(body)
        props = validate_properties(properties)
        try:
            level = Priority(priority).level
        except ValueError:
            raise InvalidArgument.field("priority", "must be LOW, NORMAL or HIGH") from None
        not_before_us = None if not_before is None else _to_us(not_before)
        props_text = json.dumps(props, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> bool:
            now = self._now_us()
            conn.execute("DELETE FROM queue_duplicates WHERE expires_us <= ?", (now,))
            if _known(conn, message_id):
                return False
            available = now if not_before_us is None else max(now, not_before_us)
            conn.execute(
                "INSERT INTO queue_messages (message_id, body, properties, priority, enqueued_us, rank_us, visible_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message_id, data, props_text, int(priority), now, available - level * self._ageing_us, available),
            )
            if self._duplicate_window_us > 0:
                conn.execute(
                    "INSERT OR REPLACE INTO queue_duplicates (message_id, expires_us) VALUES (?, ?)",
                    (message_id, now + self._duplicate_window_us),
                )
            return True

        if await self._write(insert):
            self._notify()

    # -- receiving ----------------------------------------------------------------------------------

    async def receive(
        self,
        *,
        max_messages: int = 1,
        lease_seconds: float,
        wait_seconds: float = 0,
        filter: Mapping[str, str] | None = None,
    ) -> list[LeasedMessage]:
        """Lease up to ``max_messages`` (priority with ageing, FIFO within a priority), long-polling."""
        count = validate_max_messages(max_messages)
        lease_us = round(validate_lease_seconds(lease_seconds) * 1_000_000)
        wait = validate_wait_seconds(wait_seconds)
        where, params = _filter_sql(validate_filter(filter))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if self._channel is not None and not self._closed:
            self._channel.listen()
        while True:
            wakeup = self._wakeup  # taken before the claim, so a publish during the claim is not missed
            leased = await self._claim(count, lease_us, where, params) if await self._any_ready(where, params) else []
            remaining = deadline - loop.time()
            if leased or remaining <= 0 or self._closed:
                return leased
            with suppress(TimeoutError):
                async with asyncio.timeout(min(self._poll_interval, remaining)):
                    await wakeup.wait()
            if self._closed:
                return []

    async def _any_ready(self, where: str, params: list[Any]) -> bool:
        """A cheap read (no write lock) so that idle pollers do not queue up for the writer."""
        self._check_open()
        sql = "SELECT 1 FROM queue_messages WHERE visible_us <= ?" + where + " LIMIT 1"  # noqa: S608
        values = (self._now_us(), *params)
        with _translate_errors():
            return await self._reader.call(lambda conn: conn.execute(sql, values).fetchone() is not None)

    async def _claim(self, count: int, lease_us: int, where: str, params: list[Any]) -> list[LeasedMessage]:
        select = (
            "SELECT seq, delivery_count FROM queue_messages WHERE visible_us <= ?"  # noqa: S608 (constant fragments)
            + where
            + " ORDER BY rank_us, seq LIMIT ?"
        )

        def lease(conn: sqlite3.Connection) -> list[LeasedMessage]:
            now = self._now_us()
            leased: list[LeasedMessage] = []
            while len(leased) < count:
                candidates = conn.execute(select, (now, *params, count - len(leased))).fetchall()
                if not candidates:
                    break
                for seq, delivery_count in candidates:
                    if delivery_count >= self._max_delivery_count:
                        _move_to_dead_letters(
                            conn,
                            seq,
                            MAX_DELIVERY_COUNT_EXCEEDED,
                            f"the message was delivered {delivery_count} times "
                            f"(max_delivery_count {self._max_delivery_count})",
                            now,
                        )
                        continue
                    token = secrets.token_urlsafe(24)
                    row = conn.execute(
                        "UPDATE queue_messages SET delivery_count = delivery_count + 1, lease_token = ?,"  # noqa: S608
                        f" lease_us = ?, visible_us = ? WHERE seq = ? RETURNING {_MESSAGE_COLUMNS}, visible_us",
                        (token, lease_us, now + lease_us, seq),
                    ).fetchone()
                    assert row is not None
                    leased.append(LeasedMessage(_message(row), token, _from_us(row[6])))
            return leased

        return await self._write(lease)

    # -- settling -----------------------------------------------------------------------------------

    async def renew(self, lease: LeasedMessage) -> datetime:
        """Extend the lease by its original duration from now; LeaseLost when it is gone."""

        def extend(conn: sqlite3.Connection) -> Any:
            now = self._now_us()
            return conn.execute(
                "UPDATE queue_messages SET visible_us = ? + lease_us"
                " WHERE message_id = ? AND lease_token = ? AND visible_us > ? RETURNING visible_us",
                (now, lease.message.message_id, lease.lease_token, now),
            ).fetchone()

        row = await self._write(extend)
        if row is None:
            raise LeaseLost.for_message(lease.message.message_id)
        return _from_us(row[0])

    async def complete(self, lease: LeasedMessage) -> None:
        """Remove the message; LeaseLost when the lease is gone."""

        def remove(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM queue_messages WHERE message_id = ? AND lease_token = ? AND visible_us > ?",
                (lease.message.message_id, lease.lease_token, self._now_us()),
            ).rowcount

        if await self._write(remove) != 1:
            raise LeaseLost.for_message(lease.message.message_id)

    async def abandon(self, lease: LeasedMessage, *, delay_seconds: float = 0) -> None:
        """Release the lease; receivable again after ``delay_seconds``. LeaseLost when it is gone."""
        delay_us = round(validate_delay(delay_seconds) * 1_000_000)

        def release(conn: sqlite3.Connection) -> int:
            now = self._now_us()
            return conn.execute(
                "UPDATE queue_messages SET lease_token = NULL, lease_us = NULL, visible_us = ?"
                " WHERE message_id = ? AND lease_token = ? AND visible_us > ?",
                (now + delay_us, lease.message.message_id, lease.lease_token, now),
            ).rowcount

        if await self._write(release) != 1:
            raise LeaseLost.for_message(lease.message.message_id)
        if delay_us == 0:
            self._notify()

    async def dead_letter(self, lease: LeasedMessage, *, reason: str, description: str) -> None:
        """Move the leased message to the dead letters; LeaseLost when the lease is gone."""
        reason, description = validate_dead_letter_reason(reason, description)

        def move(conn: sqlite3.Connection) -> None:
            now = self._now_us()
            row = conn.execute(
                "SELECT seq FROM queue_messages WHERE message_id = ? AND lease_token = ? AND visible_us > ?",
                (lease.message.message_id, lease.lease_token, now),
            ).fetchone()
            if row is None:
                raise LeaseLost.for_message(lease.message.message_id)
            _move_to_dead_letters(conn, row[0], reason, description, now)

        await self._write(move)

    # -- dead letters -------------------------------------------------------------------------------

    async def list_dead_letters(
        self, *, page_size: int = 0, page_token: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Dead letters in the order they were set aside; ``page_size`` 0 means 50, at most 1000."""
        size = resolve_page_size(page_size)
        after = 0 if not page_token else _decode_token(page_token)
        self._check_open()
        sql = (
            f"SELECT {_MESSAGE_COLUMNS}, reason, description, dead_lettered_us, seq"  # noqa: S608
            " FROM queue_dead_letters WHERE seq > ? ORDER BY seq LIMIT ?"
        )
        with _translate_errors():
            found = await self._reader.call(lambda conn: conn.execute(sql, (after, size + 1)).fetchall())
        letters = [
            DeadLetter(message=_message(row), reason=row[6], description=row[7], dead_lettered_time=_from_us(row[8]))
            for row in found[:size]
        ]
        next_token = _encode_token(found[size - 1][9]) if len(found) > size else None
        return letters, next_token

    async def redrive(self, message_id: str) -> None:
        """Put a dead letter back on the active queue (delivery count 0, ageing from now)."""
        validate_message_id(message_id)

        def restore(conn: sqlite3.Connection) -> None:
            now = self._now_us()
            row = conn.execute(
                "SELECT seq, priority FROM queue_dead_letters WHERE message_id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise dead_letter_not_found(message_id)
            level = Priority(row[1]).level
            conn.execute(
                "INSERT INTO queue_messages"
                " (message_id, body, properties, priority, enqueued_us, rank_us, visible_us, delivery_count)"
                " SELECT message_id, body, properties, priority, enqueued_us, ?, ?, 0"
                " FROM queue_dead_letters WHERE seq = ?",
                (now - level * self._ageing_us, now, row[0]),
            )
            conn.execute("DELETE FROM queue_dead_letters WHERE seq = ?", (row[0],))

        await self._write(restore)
        self._notify()

    # -- monitoring ---------------------------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Per priority: active (ready or leased), scheduled (not visible yet and not leased), dead-lettered,
        and the oldest active message's publish time. Two aggregate reads on the reader connection."""
        self._check_open()
        now = self._now_us()
        with _translate_errors():
            active_rows = await self._reader.call(lambda conn: conn.execute(_STATS_ACTIVE, (now,)).fetchall())
            dead_rows = await self._reader.call(lambda conn: conn.execute(_STATS_DEAD).fetchall())
        dead = {Priority(row[0]): int(row[1]) for row in dead_rows}
        found: dict[Priority, PriorityStats] = {}
        for priority_value, active, scheduled, oldest in active_rows:
            priority = Priority(priority_value)
            found[priority] = PriorityStats(
                active=int(active),
                scheduled=int(scheduled),
                dead_lettered=dead.get(priority, 0),
                oldest_enqueued_time=None if oldest is None else _from_us(int(oldest)),
            )
        priorities = {p: found.get(p, PriorityStats(dead_lettered=dead.get(p, 0))) for p in Priority}
        return QueueStats(priorities=priorities, measured_time=_from_us(now))

    # -- plumbing -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close both connections (idempotent); waiting receivers return empty-handed."""
        if self._closed:
            return
        self._closed = True
        self._wake_local()
        if self._channel is not None:
            self._channel.close()
        await self._reader.close()
        await self._writer.close()

    def _notify(self) -> None:
        """Something became receivable: wake this instance's receivers and other processes' ones."""
        self._wake_local()
        if self._channel is not None:
            self._channel.announce()

    def _wake_local(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the work queue is closed")

    def _now_us(self) -> int:
        now = self._clock()
        if now.tzinfo is None or now.tzinfo.utcoffset(now) is None:
            raise RuntimeError("the clock must return aware datetimes")
        return (now - _EPOCH) // _MICROSECOND

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` as one write transaction on the writer's thread (it reads ``now`` inside it)."""
        self._check_open()
        with _translate_errors():
            return await self._writer.transaction(fn)


def _known(conn: sqlite3.Connection, message_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM queue_messages WHERE message_id = ?1"
        " UNION ALL SELECT 1 FROM queue_dead_letters WHERE message_id = ?1"
        " UNION ALL SELECT 1 FROM queue_duplicates WHERE message_id = ?1 LIMIT 1",
        (message_id,),
    ).fetchone()
    return row is not None


def _move_to_dead_letters(conn: sqlite3.Connection, seq: int, reason: str, description: str, now: int) -> None:
    conn.execute(
        "INSERT INTO queue_dead_letters"  # noqa: S608 (constant fragments)
        f" ({_MESSAGE_COLUMNS}, reason, description, dead_lettered_us)"
        f" SELECT {_MESSAGE_COLUMNS}, ?, ?, ? FROM queue_messages WHERE seq = ?",
        (reason, description, now, seq),
    )
    conn.execute("DELETE FROM queue_messages WHERE seq = ?", (seq,))


def _check_schema_version(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the work queue schema is version {current}, newer than this code ({SCHEMA_VERSION})")


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS queue_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM queue_schema").fetchone()
        current = int(row[0]) if row else 0
        _check_schema_version(current)
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO queue_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        elif current != SCHEMA_VERSION:
            conn.execute("UPDATE queue_schema SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

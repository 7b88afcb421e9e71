"""SQLite connections for every embedded adapter (document store, work queue, search probe): jobs in batches,
concurrent write transactions committed together, run on the event loop unless they would have to wait.

A *job* is a plain function of the ``sqlite3.Connection`` that runs whole — a read, or every statement of one
write transaction — never a statement at a time. Jobs submitted while the event loop is busy are run together
in the loop's next turn (one batch), and the write transactions of a batch share ONE ``BEGIN IMMEDIATE`` …
``COMMIT`` (group commit): each job runs in a savepoint of its own, so a job that raises is rolled back alone
and the others still commit; a job's result is delivered only after the commit succeeded, and if the
transaction fails (begin, commit) every job of the group fails with that error (none of them was applied).
Jobs run one after the other in the order they were submitted, so a batch behaves exactly like its jobs run
in turn.

Nothing waits on the event loop: there the connection has ``busy_timeout`` 0 — a lock another process
holds makes SQLite answer "busy" at once instead of sleeping — and never checkpoints the WAL
(``wal_autocheckpoint`` 0; with WAL and ``synchronous=NORMAL`` a commit appends to the WAL file without
``fsync``), so a job there is CPU work and reads and writes of the file through the OS page cache. A job that
finds the database busy is handed, untouched (its transaction rolled back), to the connection's own thread,
which runs it with the configured busy timeout — and that thread also runs the WAL checkpoints (every
:data:`CHECKPOINT_EVERY` committed transactions) and anything submitted from outside the loop that opened
the connection. The thread and the loop never use the connection at the same time (a lock; the loop only
tries it, and hands its batch to the thread when the thread is busy). ``on_loop=False`` runs every job on
the thread.

Pragmas: autocommit outside explicit transactions, foreign keys, ``synchronous=NORMAL`` (safe with WAL: a
crash can lose the last commits, never corrupt the file).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "MAX_BATCH_JOBS",
    "SqliteConnection",
    "is_busy",
    "require_wal",
]

DEFAULT_BUSY_TIMEOUT_MS = 10_000
#: At most this many jobs run in one batch (bounds the latency a backlog adds to the jobs of a batch).
MAX_BATCH_JOBS = 256
#: The connection's thread checkpoints the WAL (PASSIVE) after this many transactions committed on the loop.
CHECKPOINT_EVERY = 200

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_CALL = 0
_TRANSACTION = 1
_STOP = 2
_names = itertools.count(1)


class _Item:
    __slots__ = ("fn", "future", "kind")

    def __init__(self, kind: int, fn: Job | None, future: asyncio.Future[Any]) -> None:
        self.kind = kind
        self.fn = fn
        self.future = future


#: A finished job: the job, its value and the exception it raised (None: it succeeded).
Outcome = tuple[_Item, Any, BaseException | None]


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's "database is locked / busy" (another connection holds a lock)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    text = str(error).lower()
    return "locked" in text or "busy" in text


class SqliteConnection:
    """One SQLite connection, its batches on the event loop and its thread (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int, read_only: bool, on_loop: bool) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._read_only = read_only
        self._on_loop = on_loop
        self._conn: sqlite3.Connection | None = None
        self._use = threading.Lock()  # held by whoever runs jobs on the connection (the loop or the thread)
        self._jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._pending: list[_Item] = []
        self._flush_scheduled = False
        self._commits = 0
        self._done: collections.deque[Outcome] = collections.deque()
        self._delivery_lock = threading.Lock()
        self._delivery_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        read_only: bool = False,
        on_loop: bool = True,
    ) -> SqliteConnection:
        """Open ``path`` (created if missing, unless ``read_only``: then ``PRAGMA query_only``); its thread
        starts at once (it connects, and waits for the work the loop cannot do)."""
        connection = cls(path, busy_timeout_ms=busy_timeout_ms, read_only=read_only, on_loop=on_loop)
        connection._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = connection._loop.create_future()
        connection._thread = threading.Thread(
            target=connection._serve, args=(opened,), name=f"sqlite-{next(_names)}", daemon=True
        )
        connection._thread.start()
        await opened
        return connection

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` outside any transaction and return its result."""
        return await self._submit(_CALL, fn)  # type: ignore[no-any-return]

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a write transaction, possibly together with other jobs (group commit);
        its result once committed. If ``fn`` raises, its statements are rolled back and the exception is
        raised here. ``fn`` must not begin, commit or roll back itself."""
        return await self._submit(_TRANSACTION, fn)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Run what was submitted, close the connection and end the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        loop = self._home()
        stopped: asyncio.Future[None] = loop.create_future()
        self._jobs.put(_Item(_STOP, None, stopped))
        await asyncio.shield(stopped)

    # -- event loop side --------------------------------------------------------------------------

    def _home(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the connection is not open")
        return loop

    def _submit(self, kind: int, fn: Job) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("the SQLite connection is closed")
        loop = asyncio.get_running_loop()
        item = _Item(kind, fn, loop.create_future())
        if self._on_loop and loop is self._loop:
            self._pending.append(item)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self._jobs.put(item)
        return item.future

    def _flush(self) -> None:
        """Run the jobs submitted since the last turn, on the loop (see the module docstring)."""
        self._flush_scheduled = False
        while self._pending:
            batch = self._pending[:MAX_BATCH_JOBS]
            del self._pending[:MAX_BATCH_JOBS]
            conn = self._conn
            if conn is None or not self._use.acquire(blocking=False):
                for item in batch:  # the thread is at work (or gone): it takes them, in order
                    self._jobs.put(item)
                continue
            try:
                outcomes = _run_batch(conn, batch)
            finally:
                self._use.release()
            for outcome in outcomes:
                item, _, error = outcome
                if error is not None and is_busy(error):
                    self._jobs.put(item)  # another process holds the lock: the thread waits for it
                else:
                    _settle(outcome)
            self._commits += sum(1 for item, _, error in outcomes if item.kind == _TRANSACTION and error is None)
            if self._commits >= CHECKPOINT_EVERY and not self._read_only:
                self._commits = 0
                self._checkpoint_on_thread()

    def _checkpoint_on_thread(self) -> None:
        future: asyncio.Future[Any] = self._home().create_future()
        future.add_done_callback(_retrieve)
        self._jobs.put(_Item(_CALL, _checkpoint, future))

    def _deliver(self) -> None:
        with self._delivery_lock:
            self._delivery_scheduled = False
        done = self._done
        while done:
            _settle(done.popleft())

    # -- the connection's thread --------------------------------------------------------------------

    def _post(self, outcomes: list[Outcome]) -> None:
        """Hand results to the event loop: one wake-up for however many are waiting."""
        home = self._loop
        for outcome in outcomes:
            loop = outcome[0].future.get_loop()
            if loop is home:
                self._done.append(outcome)
                continue
            with contextlib.suppress(RuntimeError):  # submitted from another event loop than the one that opened it
                loop.call_soon_threadsafe(_settle, outcome)
        with self._delivery_lock:
            if self._delivery_scheduled:
                return
            self._delivery_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._home().call_soon_threadsafe(self._deliver)

    def _connect(self) -> sqlite3.Connection:
        if not self._read_only:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, cached_statements=256)
        try:
            conn.execute(f"PRAGMA busy_timeout={0 if self._on_loop else self._busy_timeout_ms}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            if self._read_only:
                conn.execute("PRAGMA query_only=ON")
            elif self._on_loop:
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, opened: asyncio.Future[None]) -> None:
        stub = _Item(_CALL, None, opened)
        try:
            conn = self._connect()
        except BaseException as error:  # reported to open(), which raises it
            self._post([(stub, None, error)])
            return
        self._conn = conn
        self._post([(stub, None, None)])
        jobs = self._jobs
        while True:
            batch = [jobs.get()]
            while len(batch) < MAX_BATCH_JOBS:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            stop = next((item for item in batch if item.kind == _STOP), None)
            work = [item for item in batch if item.kind != _STOP]
            with self._use:
                if self._on_loop:  # here waiting is allowed
                    conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
                outcomes = _run_batch(conn, work)
                if self._on_loop:
                    conn.execute("PRAGMA busy_timeout=0")
                if stop is not None:
                    while True:  # whatever was queued behind the stop is refused
                        try:
                            late = jobs.get_nowait()
                        except queue.Empty:
                            break
                        outcomes.append((late, None, RuntimeError("the SQLite connection is closed")))
                    self._conn = None
                    try:
                        conn.close()
                        outcomes.append((stop, None, None))
                    except BaseException as error:
                        outcomes.append((stop, None, error))
            self._post(outcomes)
            if stop is not None:
                return


def _run_batch(conn: sqlite3.Connection, batch: Sequence[_Item]) -> list[Outcome]:
    """Run ``batch`` in order: calls one by one, each run of consecutive transactions as one group."""
    outcomes: list[Outcome] = []
    group: list[_Item] = []
    for item in batch:
        if item.kind == _TRANSACTION:
            group.append(item)
            continue
        if group:
            outcomes.extend(_run_group(conn, group))
            group = []
        outcomes.append(_run_call(conn, item))
    if group:
        outcomes.extend(_run_group(conn, group))
    return outcomes


def _run_call(conn: sqlite3.Connection, item: _Item) -> Outcome:
    assert item.fn is not None
    try:
        return item, item.fn(conn), None
    except BaseException as error:
        _rollback(conn)  # a call never leaves a transaction open
        return item, None, error


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _run_group(conn: sqlite3.Connection, group: list[_Item]) -> list[Outcome]:
    """Run write transactions in one ``BEGIN IMMEDIATE`` … ``COMMIT``, each in its own savepoint; if the
    transaction itself fails (begin, a savepoint, commit), every job of the group fails with that error."""
    _rollback(conn)  # never inherit a transaction a failed job left open
    try:
        conn.execute("BEGIN IMMEDIATE")
        return _run_jobs(conn, group)
    except BaseException as error:
        _rollback(conn)
        return [(item, None, error) for item in group]


def _run_jobs(conn: sqlite3.Connection, group: list[_Item]) -> list[Outcome]:
    single = len(group) == 1
    results: list[Outcome] = []
    for item in group:
        assert item.fn is not None
        if not single:
            conn.execute("SAVEPOINT exthub_job")
        try:
            value = item.fn(conn)
        except BaseException as error:
            if not conn.in_transaction:  # SQLite rolled the whole transaction back: nothing of it is kept
                return [(each, None, error) for each in group]
            if single:
                _rollback(conn)
                return [(item, None, error)]
            conn.execute("ROLLBACK TO exthub_job")
            conn.execute("RELEASE exthub_job")
            results.append((item, None, error))
            continue
        if not single:
            conn.execute("RELEASE exthub_job")
        results.append((item, value, None))
    conn.execute("COMMIT")
    return results


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failed checkpoint is retried with the next one: nothing to report


def _settle(outcome: Outcome) -> None:
    item, value, error = outcome
    future = item.future
    if future.done():  # the caller was cancelled: the job ran all the same
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def require_wal(path: Path, row: Any) -> None:
    """Fails unless ``PRAGMA journal_mode=WAL`` answered ``wal`` (readers then never block the writer)."""
    if row is None or str(row[0]).lower() != "wal":
        raise RuntimeError(f"could not switch {path} to WAL mode")

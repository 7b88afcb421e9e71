"""The Celery side of the asynchronous-execution benchmark: one task that makes the agent's HTTP call to echo.

Started by :mod:`bench.async_execution` as ``python -m celery -A bench.celery_echo worker --pool threads ...``
with Redis as broker and result backend (``EXTHUB_BENCH_REDIS_URL``). The task :func:`call_echo` does what an
Exthub agent does for one attempt, minus the hub round-trips: it builds the same request body
(:func:`services.agent.adapters.request_body.build_request_document` over an ``ExecutionTask``), signs it with
the benchmark's own ES256 key ring (``EXTHUB_BENCH_KEY_DIR``, a :class:`SigningKeyRing`; the hub's key never
leaves the execution service) with the audience, time and attempt claims the hub binds, and POSTs it to
echo's ``/execute`` with a timeout. It records ``time.time()`` when it starts, so the client computes the
queue-to-start latency against its own send time (same machine, same clock).

Settings that make the comparison like for like (see the module docstring of :mod:`bench.async_execution`):
``task_acks_late`` (a message is acknowledged after the call, as the agent completes its queue message after
the report) and ``worker_prefetch_multiplier = 1`` (a worker reserves at most one message per free slot, as an
agent receives only for a free slot).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from celery import Celery  # type: ignore[import-untyped]
from celery.signals import worker_ready  # type: ignore[import-untyped]
from google.protobuf import timestamp_pb2

from exthub.contract.extension_request import build_request_document, encode_body
from exthub.contract.signatures import SIGNATURE_HEADER
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.execution.signing import SigningKeyRing

REDIS_URL_ENV = "EXTHUB_BENCH_REDIS_URL"
KEY_DIR_ENV = "EXTHUB_BENCH_KEY_DIR"
#: The line the worker prints on stdout once it consumes (the benchmark waits for it).
READY_LINE = "celery echo worker ready"
#: The hub id of the benchmark's key ring (only a label: direct tokens are never issued here).
KEY_RING_ID = "celery-bench"
TASK_NAME = "bench.call_echo"
HTTP_TIMEOUT_SECONDS = 10.0
EXECUTION_SECONDS = 300

app: Any = Celery("bench_celery_echo")
app.conf.update(
    broker_url=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=10,
    redis_socket_timeout=30,
    redis_socket_connect_timeout=10,
    worker_redirect_stdouts=False,
    worker_hijack_root_logger=False,
)

_local = threading.local()
_ring_lock = threading.Lock()
_ring: SigningKeyRing | None = None


def configure(redis_url: str) -> None:
    """Point this process's app (the client side) at the benchmark's Redis."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)


def _key_ring() -> SigningKeyRing:
    global _ring
    with _ring_lock:
        if _ring is None:
            _ring = SigningKeyRing.load_or_create(Path(os.environ[KEY_DIR_ENV]), hub_id=KEY_RING_ID)
        return _ring


def _session() -> requests.Session:
    """One keep-alive HTTP session per worker thread (the agent shares one pooled aiohttp session)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        _local.session = session
    return session


def request_body(execution_id: str, attempt: int) -> bytes:
    """The http-json request body the agent would send for this attempt of ``echo-plain``."""
    deadline = timestamp_pb2.Timestamp()
    deadline.FromDatetime(datetime.now(UTC) + timedelta(seconds=EXECUTION_SECONDS))
    task = execution_pb2.ExecutionTask(
        execution=f"executions/{execution_id}",
        extension="extensions/echo-plain",
        extension_version="extensions/echo-plain/versions/1.0.0",
        profile="async",
        priority=types_pb2.NORMAL,
        attempt=attempt,
        tenant="bench",
        user="bench",
        deadline=deadline,
    )
    return encode_body(build_request_document(task, {}))


def call_echo(echo_url: str, attempt: int = 1) -> dict[str, Any]:
    """One attempt: build and sign the body, POST it to echo, check the answer. Returns when it started and
    ended (``time.time()``)."""
    started = time.time()
    execution_id = uuid.uuid4().hex
    body = request_body(execution_id, attempt)
    signature = _key_ring().sign_extension_request(
        body,
        audience="extensions/echo-plain",
        execution=f"executions/{execution_id}",
        attempt=attempt,
        now=datetime.now(UTC),
    )
    response = _session().post(
        f"{echo_url}/execute",
        data=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
        timeout=HTTP_TIMEOUT_SECONDS,
        allow_redirects=False,
    )
    if response.status_code != 200:
        raise RuntimeError(f"echo answered {response.status_code}: {response.text[:200]}")
    answer = response.json()
    if answer.get("responseData", {}).get("executionId") != execution_id:
        raise RuntimeError("echo answered for another execution")
    return {"started": started, "finished": time.time(), "status": response.status_code}


call_echo_task: Any = app.task(name=TASK_NAME)(call_echo)


def _announce_ready(**_: object) -> None:
    print(READY_LINE, flush=True)


worker_ready.connect(_announce_ready, weak=False)

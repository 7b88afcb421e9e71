"""Small builders of execution values for unit tests."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from services.execution.domain import ExecutionRecord
from services.execution.domain.model import (
    Execution,
    ExecutionRequest,
    Priority,
    ProfileSnapshot,
    VersionSnapshot,
)
from services.execution.domain.modes import Mode

ID = "0b7e5f0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c"
HTTP_JSON_SYNC = "http-json/sync/v1"
HTTP_JSON_ASYNC = "http-json/async/v1"


def execution(record: ExecutionRecord, *, execution_id: str = ID, **overrides: Any) -> Execution:
    """An asynchronous execution of ``extensions/echo/versions/1.0.0`` with ``record`` (``overrides`` replace
    fields)."""
    built = Execution(
        id=execution_id,
        record=record,
        request=ExecutionRequest(
            extension_version="extensions/echo/versions/1.0.0",
            extension="extensions/echo",
            profile="async",
            priority=Priority.NORMAL,
            tenant="tenant-a",
            created_by="user-1",
        ),
        mode=Mode.ASYNC,
        version=VersionSnapshot(
            supports_validation=False,
            execution_timeout=timedelta(hours=1),
            profile=ProfileSnapshot(name="async", execution_model=HTTP_JSON_ASYNC),
        ),
    )
    return dataclasses.replace(built, **overrides)

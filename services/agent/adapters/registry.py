"""Execution adapters by execution model name: ``http-json/sync/v1``, ``http-json/async/v1``, …"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.execution.v1 import execution_pb2

__all__ = ["MODEL_NAME_PATTERN", "AdapterRegistry", "ExecutionAdapter"]

MODEL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*(/[a-z][a-z0-9-]*)*/v[1-9][0-9]*$")


class ExecutionAdapter(Protocol):
    """Runs one attempt of an execution and says how it ended. Never raises for the extension's behaviour:
    every failure is an outcome (FAILED or RETRYABLE_FAILURE) with an error."""

    async def execute(
        self, task: execution_pb2.ExecutionTask, *, time_limit: float | None = None
    ) -> agent_pb.ExecuteResponse:
        """Run ``task``; ``time_limit`` is how many seconds the caller still waits (None: no caller deadline)."""
        ...


class AdapterRegistry:
    """Adapters by model name; one adapter may serve several models."""

    def __init__(self, adapters: Mapping[str, ExecutionAdapter] | None = None) -> None:
        self._adapters: dict[str, ExecutionAdapter] = {}
        for model, adapter in (adapters or {}).items():
            self.register(model, adapter)

    def register(self, model: str, adapter: ExecutionAdapter) -> None:
        """Add ``adapter`` for ``model`` (``family/…/vN``); a model is registered once."""
        if not MODEL_NAME_PATTERN.fullmatch(model):
            raise ValueError(f"invalid execution model name {model!r}: expected e.g. http-json/sync/v1")
        if model in self._adapters:
            raise ValueError(f"execution model {model!r} is already registered")
        self._adapters[model] = adapter

    def get(self, model: str) -> ExecutionAdapter | None:
        """The adapter of ``model``, if any."""
        return self._adapters.get(model)

    @property
    def models(self) -> tuple[str, ...]:
        """The supported model names, sorted."""
        return tuple(sorted(self._adapters))

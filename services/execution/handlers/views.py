"""The API view of an execution: the execution plus fresh object accessors (what GetExecution shows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exthub.contract.execution import DEFAULT_EXECUTION_TIMEOUT
from services.execution.domain import ExecutionState
from services.execution.domain.model import Execution
from services.execution.handlers.context import ExecutionContext
from services.objects.port import Accessor, ObjectRef

__all__ = ["ExecutionView", "render"]


@dataclass(frozen=True)
class ExecutionView:
    """An execution as a client sees it: write-only upload accessors while it waits for inputs, read-only
    download accessors of the outputs the extension provided."""

    execution: Execution
    uploads: Mapping[str, Accessor]
    downloads: Mapping[str, Accessor]

    def upload(self, name: str) -> Accessor | None:
        """The upload accessor of input ``name``, if it has one now."""
        return self.uploads.get(name)

    def download(self, name: str) -> Accessor | None:
        """The download accessor of output ``name``, if it was provided."""
        return self.downloads.get(name)


async def render(ctx: ExecutionContext, execution: Execution) -> ExecutionView:
    """The view with fresh accessors (each valid for the contract's default execution timeout)."""
    uploads: dict[str, Accessor] = {}
    downloads: dict[str, Accessor] = {}
    if execution.state is ExecutionState.PENDING_INPUTS:
        for item in execution.inputs:
            ref = ObjectRef(execution.id, "input", item.name)
            uploads[item.name] = await ctx.objects.upload_accessor(ref, DEFAULT_EXECUTION_TIMEOUT)
    for output in execution.outputs:
        if output.provided:
            ref = ObjectRef(execution.id, "output", output.name)
            downloads[output.name] = await ctx.objects.download_accessor(ref, DEFAULT_EXECUTION_TIMEOUT)
    return ExecutionView(execution, uploads, downloads)

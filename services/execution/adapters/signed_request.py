"""Signing an attempt's extension request ahead, at the edge where the task is built.

The agent builds the http-json request body from the task and has the execution service sign it
(``AgentTaskService.SignExtensionRequest``): one more round trip per attempt. When the body depends on
nothing but the task — an ``http-json/*`` model and a version without extension services, whose contexts only
the agent can build — the execution service builds the same bytes itself (the one builder,
:mod:`exthub.contract.extension_request`) and sends them signed in the task (``ExecutionTask.signed_request``),
with exactly the checks of a signing request: the attempt was just claimed (or started, for a synchronous
run), so it is the current one and RUNNING.
"""

from __future__ import annotations

from datetime import datetime

from exthub.contract.extension_request import HTTP_JSON_MODELS, build_request_document, encode_body
from exthub.execution.v1 import execution_pb2
from services.execution.signing import SigningKeyRing

__all__ = ["sign_ahead"]


def sign_ahead(task: execution_pb2.ExecutionTask, signing: SigningKeyRing, *, now: datetime) -> bool:
    """Put the signed request body into ``task`` when the hub can build it alone; whether it did."""
    if task.execution_model not in HTTP_JSON_MODELS or task.services:
        return False
    body = encode_body(build_request_document(task, {}))
    signature = signing.sign_extension_request(
        body, audience=task.extension, execution=task.execution, attempt=task.attempt, now=now
    )
    task.signed_request.body = body
    task.signed_request.signature = signature
    return True

"""Structured logging: structlog for our code, the standard library routed through the same renderer.

Secrets never reach a log line: :func:`redact_secrets` masks values whose key looks like a token,
secret, key, password or authorization header, at any depth.

Correlation: when tracing is on (:mod:`services.platform.telemetry`), every line logged inside a span carries
``trace_id`` and ``span_id`` (W3C hex); :func:`execution_context` binds ``execution`` and ``attempt`` for the
lines logged while one execution's work runs.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from services.platform.settings import Settings

__all__ = [
    "REDACTED",
    "add_trace_context",
    "configure_logging",
    "disable_trace_context",
    "enable_trace_context",
    "execution_context",
    "get_logger",
    "redact_secrets",
]

REDACTED = "[REDACTED]"
_SENSITIVE = re.compile(r"token|secret|key|password|passwd|authorization|credential|signature", re.IGNORECASE)
_HANDLER_NAME = "exthub-structlog"
_MAX_DEPTH = 8


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key != "event" and _SENSITIVE.search(key) is not None


def _redact(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_sensitive(k) else _redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the values of sensitive-looking keys (nested mappings included)."""
    for key in list(event_dict):
        if _is_sensitive(key):
            event_dict[key] = REDACTED
        elif isinstance(event_dict[key], Mapping | list | tuple):
            event_dict[key] = _redact(event_dict[key], 1)
    return event_dict


_current_span: Callable[[], Any] | None = None


def enable_trace_context() -> None:
    """Make :func:`add_trace_context` read the current span (called when tracing is turned on)."""
    global _current_span
    from opentelemetry.trace import get_current_span

    _current_span = get_current_span


def disable_trace_context() -> None:
    """Undo :func:`enable_trace_context`."""
    global _current_span
    _current_span = None


def add_trace_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span (nothing when tracing is off)."""
    if _current_span is not None:
        context = _current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


# structlog's ``merge_contextvars`` merges every context variable named ``structlog_<key>``: these two are ours, set
# and reset directly (cheaper than ``bound_contextvars``, which looks its variables up by name on every call).
_EXECUTION: contextvars.ContextVar[Any] = contextvars.ContextVar(
    f"{structlog.contextvars.STRUCTLOG_KEY_PREFIX}execution", default=Ellipsis
)
_ATTEMPT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    f"{structlog.contextvars.STRUCTLOG_KEY_PREFIX}attempt", default=Ellipsis
)


# a class (cheaper than a generator-based context manager), used like a function: ``with execution_context(…):``
class execution_context:
    """Bind ``execution`` (its name) and ``attempt`` to every line logged inside (nothing when None)."""

    __slots__ = ("_attempt", "_execution", "_tokens")

    def __init__(self, execution: str | None, attempt: int | None = None) -> None:
        self._execution = execution
        self._attempt = attempt
        self._tokens: tuple[contextvars.Token[Any], contextvars.Token[Any]] | None = None

    def __enter__(self) -> None:
        if self._execution is not None:
            attempt = Ellipsis if self._attempt is None else self._attempt
            self._tokens = (_EXECUTION.set(self._execution), _ATTEMPT.set(attempt))

    def __exit__(self, *_: object) -> None:
        if self._tokens is not None:
            _EXECUTION.reset(self._tokens[0])
            _ATTEMPT.reset(self._tokens[1])
            self._tokens = None


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the root logger once per process (calling again replaces the setup)."""
    level = logging.getLevelName(settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    # Tracebacks never include local variables: they may hold tokens, secrets or request data.
    if settings.log_format == "json":
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        final: list[Any] = [
            structlog.processors.ExceptionRenderer(tracebacks),
            structlog.processors.JSONRenderer(),
        ]
    else:
        final = [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # grpc's own loggers are chatty at INFO; keep them at WARNING unless we debug.
    logging.getLogger("grpc").setLevel(level if level <= logging.DEBUG else logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to ``name`` (works before and after :func:`configure_logging`)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger

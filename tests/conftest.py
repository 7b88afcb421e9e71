"""Fixtures every suite may use."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from services.platform.logging import disable_trace_context


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """Undo what a test's ``configure_logging`` (and tracing's log correlation) changed in this process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    disable_trace_context()

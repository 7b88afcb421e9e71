"""The per-call access line is built only when its level is on."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from services.platform import interceptors


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(interceptors, "_access_log", recorder)
    return recorder


def _restore_level(level: int) -> None:
    logging.getLogger("exthub.access").setLevel(level)


def test_the_access_line_is_skipped_when_info_is_off(recorder: _Recorder) -> None:
    logger = logging.getLogger("exthub.access")
    before = logger.level
    try:
        logger.setLevel(logging.WARNING)
        interceptors.HubServerInterceptor._log("/x.v1.S/M", interceptors._CallState(), time.perf_counter())
        assert recorder.lines == []
        logger.setLevel(logging.INFO)
        interceptors.HubServerInterceptor._log("/x.v1.S/M", interceptors._CallState(), time.perf_counter())
        assert [(line["event"], line["method"], line["code"]) for line in recorder.lines] == [
            ("rpc", "/x.v1.S/M", "OK")
        ]
    finally:
        _restore_level(before)

"""Logging: secrets are redacted at any depth; stdlib records go through the same pipeline."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.platform.logging import REDACTED, configure_logging, get_logger, redact_secrets
from services.platform.settings import Settings


def test_redaction_processor() -> None:
    event = {
        "event": "login",
        "authorization": "Bearer abc",
        "page_token_secret": "s3",
        "statusUpdateKey": "k",
        "nested": {"password": "p", "ok": 1, "list": [{"access_token": "t"}]},
        "tenant": "t1",
    }
    out = redact_secrets(None, "info", event)
    assert out["authorization"] == out["page_token_secret"] == out["statusUpdateKey"] == REDACTED
    assert out["nested"] == {"password": REDACTED, "ok": 1, "list": [{"access_token": REDACTED}]}
    assert (out["event"], out["tenant"]) == ("login", "t1")


@pytest.mark.usefixtures("_restore_logging")
def test_json_logging_routes_stdlib_and_redacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.local_defaults(tmp_path, log_format="json", log_level="info"))
    configure_logging(Settings.local_defaults(tmp_path, log_format="json", log_level="info"))  # idempotent
    get_logger("exthub.test").info("hello", token="eyJ-secret", tenant="t1")
    logging.getLogger("some.library").warning("from stdlib %s", "x", extra={"password": "hunter2"})
    get_logger("exthub.test").debug("hidden")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0]["event"] == "hello"
    assert lines[0]["token"] == REDACTED
    assert lines[0]["tenant"] == "t1"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "from stdlib x"
    assert lines[1]["password"] == REDACTED
    assert "hunter2" not in json.dumps(lines)


@pytest.mark.usefixtures("_restore_logging")
def test_console_logging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.local_defaults(tmp_path, log_format="console", log_level="DEBUG"))
    get_logger("exthub.test").debug("visible", secret="zzz")
    err = capsys.readouterr().err
    assert "visible" in err
    assert "zzz" not in err


def _fail(secret_value: str) -> None:
    raise RuntimeError(f"boom ({len(secret_value)})")


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tracebacks_have_no_locals(tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    configure_logging(Settings.local_defaults(tmp_path, log_format=log_format))
    bearer = "eyJ-local-variable-value"
    try:
        _fail(bearer)
    except RuntimeError:
        get_logger("exthub.test").exception("failed", context_len=len(bearer))
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    assert "eyJ-local-variable-value" not in err


_LOG_AN_EXCEPTION = """
import logging, sys
from pathlib import Path
if sys.argv[1] == "shut-out":
    from services.platform.entrypoint import shut_out_unused_optional_modules
    shut_out_unused_optional_modules()
from services.platform.logging import configure_logging, get_logger
from services.platform.settings import Settings
configure_logging(Settings.local_defaults(Path(sys.argv[2]), log_format=sys.argv[3], log_level="info"))
try:
    {}["missing"]
except KeyError:
    get_logger("exthub.test").exception("failed", token="eyJ-secret")
    logging.getLogger("some.library").exception("stdlib failed")
print(",".join(sorted(m for m in ("rich", "structlog") if sys.modules.get(m) is not None)))
"""


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_service_processes_log_the_same_without_rich(tmp_path: Path, log_format: str) -> None:
    """Service processes shut rich out (memory); structlog then renders exactly as with rich installed."""

    def run(mode: str) -> tuple[str, str]:
        proc = subprocess.run(
            [sys.executable, "-c", _LOG_AN_EXCEPTION, mode, str(tmp_path), log_format],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        stamps = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
        return proc.stdout.strip(), stamps.sub("<time>", proc.stderr)

    loaded_with, logged_with = run("as-installed")
    loaded_without, logged_without = run("shut-out")
    assert (loaded_with, loaded_without) == ("rich,structlog", "structlog")
    assert "Traceback" in logged_with or '"exc_type": "KeyError"' in logged_with
    assert REDACTED in logged_with and "eyJ-secret" not in logged_with
    assert logged_without == logged_with

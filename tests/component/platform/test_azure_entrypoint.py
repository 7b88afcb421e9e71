"""A service process on the azure backend refuses to start without the endpoints it uses, naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AZURE_BASE = {
    "EXTHUB_BACKEND": "azure",
    "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE": "api://exthub/.default",
    "EXTHUB_AUTH__ISSUERS": "https://login.microsoftonline.com/t/v2.0",
    "EXTHUB_AUTH__AUDIENCES": "api://exthub",
    "EXTHUB_AUTH__JWKS_URI": "https://login.microsoftonline.com/t/discovery/v2.0/keys",
}


@pytest.mark.parametrize(
    ("service", "missing"),
    [
        ("catalog", "EXTHUB_AZURE__COSMOS_ENDPOINT"),
        ("agent", "EXTHUB_AZURE__SERVICEBUS_NAMESPACE"),
        ("execution", "EXTHUB_AZURE__BLOB_ACCOUNT_URL"),
    ],
)
def test_a_service_without_its_endpoint_exits_2_naming_it(tmp_path: Path, service: str, missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTHUB_")}
    env.update(AZURE_BASE, EXTHUB_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "EXTHUB_BACKEND=azure needs" in done.stderr and missing in done.stderr and "(not set)" in done.stderr
    assert "Traceback" not in done.stderr

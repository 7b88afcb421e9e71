"""`exthub up`'s registration step: a refusal becomes a one-line start error, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from exthub.cli.supervisor import HubStartError, _register_echo
from exthub.contract.dev_tokens import DevIssuer
from services.catalog.app import start_catalog
from services.platform.settings import Settings


async def test_a_refused_registration_is_a_clear_start_error(tmp_path: Path) -> None:
    DevIssuer.load_or_create(tmp_path / "hub")
    catalog = await start_catalog(Settings.local_defaults(tmp_path / "hub", log_format="console"), port=0)
    try:
        with pytest.raises(HubStartError, match="registering the sample extension failed: UNAUTHENTICATED"):
            # a data directory with another development issuer: the catalog does not trust its token
            await _register_echo(
                DevIssuer.load_or_create(tmp_path / "elsewhere"), catalog.address, "http://127.0.0.1:9"
            )
    finally:
        await catalog.stop(0)

"""The emulator stack of ``exthub up --backend azure --emulators``: what the services are given, and that a stack
started again on a data dir first stops what a killed run left there (by pid, only its own processes), keeping the
token authority's port so the issuer (and the tokens it signed) stay valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.platform.settings import Settings
from tests.e2e.exthub_up import alive
from tools.emulators.stack import API, STACK_DIR, EmulatorStack, user_token


def test_a_second_start_stops_a_killed_runs_emulators_and_keeps_the_issuer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = EmulatorStack.start(tmp_path)
    try:
        environment = {**first.hub_environment(), **first.service_environment("execution")}
        assert not any("KEY" in name or "CONNECTION" in name or "SAS" in name for name in environment)
        for name in [n for n in os.environ if n.startswith("EXTHUB_")]:
            monkeypatch.delenv(name)
        for name, value in first.hub_environment().items():
            monkeypatch.setenv(name, value)
        settings = Settings(data_dir=tmp_path)
        settings.require_backend()  # every endpoint a hub needs, and the issuer, from the standard variables
        assert settings.auth.issuers == [first.issuer] and settings.auth.audiences == [API]
        token = user_token(tmp_path, roles=["Executions.Run"], user="developer")
        leftover = first.parts()
        assert (tmp_path / STACK_DIR / "stack.json").exists()
        # `exthub up` killed: nobody stopped `first`; the next start must
        second = EmulatorStack.start(tmp_path)
    except BaseException:
        first.stop()
        raise
    try:
        assert not [name for name, pid in leftover.items() if alive(pid)], "the killed run's emulators are stopped"
        assert all(alive(pid) for pid in second.parts().values())
        assert second.issuer == first.issuer, "the authority's port is kept: issued tokens stay valid"
        assert user_token(tmp_path, roles=["Executions.Run"], user="developer").split(".")[0] == token.split(".")[0]
    finally:
        second.stop()
        first.stop()  # reaps the processes the second start stopped (they were children of this process)
    assert not any(alive(pid) for pid in second.parts().values())
    assert not (tmp_path / STACK_DIR / "stack.json").exists()

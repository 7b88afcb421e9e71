"""The agent's identity: its id (configured, or generated once and kept in the data directory) and version."""

from __future__ import annotations

import importlib.metadata
import uuid
from pathlib import Path

from exthub.contract.keyfiles import read_or_create_once
from services.platform.settings import Settings

__all__ = ["AGENT_ID_FILE", "agent_id", "agent_version"]

AGENT_ID_FILE = Path("agent", "agent-id")
_DISTRIBUTION = "exthub"


def agent_id(settings: Settings) -> str:
    """``settings.agent_id``, else the id in ``data_dir/agent/agent-id`` (``agent-<uuid>``, made on first use).

    Blocking file I/O: call it at startup through ``asyncio.to_thread``.
    """
    if settings.agent_id:
        return settings.agent_id
    path = settings.data_dir / AGENT_ID_FILE
    stored = read_or_create_once(path, f"agent-{uuid.uuid4()}\n".encode(), mode=0o644).decode("utf-8").strip()
    if not stored:
        raise ValueError(f"{path} is empty")
    return stored


def agent_version() -> str:
    """The installed software version (``0.0.0+unknown`` when not installed as a distribution)."""
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"

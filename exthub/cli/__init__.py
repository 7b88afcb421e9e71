"""The ``exthub`` command line: run the hub locally and mint development tokens."""

from __future__ import annotations

from exthub.cli.main import app

__all__ = ["app"]

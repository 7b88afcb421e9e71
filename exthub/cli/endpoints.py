"""``<data-dir>/endpoints.json``: where every part of a running ``exthub up`` listens, so tools and people find
them without reading logs.

Written (atomically) once the hub is ready and again whenever a part is restarted; removed when the hub stops.
The document::

    {
      "url": "http://127.0.0.1:8080",            the gateway: REST and gRPC
      "pid": 4242,                               the exthub up process
      "tracing": "OTLP http/protobuf http://127.0.0.1:4318/v1/traces",   or null (tracing off)
      "parts": {
        "catalog":   {"pid": 4243, "grpc": "127.0.0.1:50051", "http": "http://127.0.0.1:50055",
                      "metrics": "http://127.0.0.1:50055/metrics"},
        "agent":     {…the same keys…},
        "execution": {…the same keys…, "objects": "http://127.0.0.1:50054"},
        "echo":      {"pid": 4246, "http": "http://127.0.0.1:41234"},
        "gateway":   {"pid": 4247, "http": "http://127.0.0.1:8080", "grpc": "127.0.0.1:8080"}
      }
    }

A part's values come from the lines it announces on start (see :func:`part_endpoints`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ENDPOINTS_FILE", "METRICS_PATH", "part_endpoints", "read_endpoints", "remove_endpoints", "write_endpoints"]

ENDPOINTS_FILE = "endpoints.json"
METRICS_PATH = "/metrics"
#: The parts that announce ``<name> serving on <grpc>`` then ``<name> http serving on <url>``.
SERVICES = frozenset({"catalog", "agent", "execution"})


def part_endpoints(name: str, pid: int, announced: Sequence[str]) -> dict[str, Any]:
    """One part's entry from what it announced: a service its gRPC address, HTTP URL (and the execution
    service its object URL); echo and the gateway their URL."""
    entry: dict[str, Any] = {"pid": pid}
    if name in SERVICES:
        grpc_address, http_url, *more = announced
        entry.update(grpc=grpc_address, http=http_url, metrics=f"{http_url}{METRICS_PATH}")
        if name == "execution" and more:
            entry["objects"] = more[0]
    elif name == "gateway":
        url = announced[0]
        entry.update(http=url, grpc=url.split("://", 1)[-1])
    else:
        entry["http"] = announced[0]
    return entry


def write_endpoints(
    data_dir: Path,
    *,
    url: str,
    tracing: str | None,
    parts: Iterable[tuple[str, int, Sequence[str]]],
    pid: int | None = None,
) -> Path:
    """Write the document (``parts``: name, pid, announced values) through a temporary file and a rename."""
    document = {
        "url": url,
        "pid": os.getpid() if pid is None else pid,
        "tracing": tracing,
        "parts": {name: part_endpoints(name, part_pid, announced) for name, part_pid, announced in parts},
    }
    path = data_dir / ENDPOINTS_FILE
    temporary = path.with_name(f".{ENDPOINTS_FILE}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def remove_endpoints(data_dir: Path) -> None:
    """Remove the document (the hub stopped)."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / ENDPOINTS_FILE).unlink()


def read_endpoints(data_dir: Path) -> dict[str, Any]:
    """The document of the hub running on ``data_dir`` (``FileNotFoundError`` when none runs)."""
    document: dict[str, Any] = json.loads((data_dir / ENDPOINTS_FILE).read_text(encoding="utf-8"))
    return document

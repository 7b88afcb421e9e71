"""The execution service's layers: dependencies point inward (checked on the source, like the pre-merge hook)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3] / "services" / "execution"
PROTOS_OR_GRPC = re.compile(
    r"^\s*(import grpc|from grpc|from exthub\.[a-z_]+\.v1|import exthub\.[a-z_]+\.v1|from google\.(rpc|protobuf))",
    re.M,
)


def sources(folder: str) -> list[Path]:
    found = sorted((ROOT / folder).rglob("*.py"))
    assert found, f"no sources under {folder}"
    return found


@pytest.mark.parametrize("folder", ["handlers", "domain"])
def test_use_cases_and_domain_import_no_protos_and_no_grpc(folder: str) -> None:
    offenders = [str(path.relative_to(ROOT)) for path in sources(folder) if PROTOS_OR_GRPC.search(path.read_text())]
    assert offenders == []


def test_the_domain_depends_on_nothing_outside_it() -> None:
    outward = re.compile(r"^\s*from services\.execution\.(?!domain\b)", re.M)
    assert [str(p.relative_to(ROOT)) for p in sources("domain") if outward.search(p.read_text())] == []


def test_handlers_do_not_import_adapters_or_the_edge() -> None:
    outward = re.compile(r"^\s*from services\.execution\.(adapters|mapping|servicer|agent_servicer|http|app)\b", re.M)
    assert [str(p.relative_to(ROOT)) for p in sources("handlers") if outward.search(p.read_text())] == []


def test_only_the_repository_and_the_document_mapping_see_stored_documents() -> None:
    """(and ``app.py``, which opens the store)"""
    store = re.compile(r"^\s*from services\.platform\.docstore\b", re.M)
    readers = {str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py")) if store.search(p.read_text())}
    assert readers == {"adapters/documents.py", "repository.py", "app.py"}

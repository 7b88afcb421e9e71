"""The execution service's own layers, checked on the code (the handlers' "no protos" rule is in
``tests/architecture/test_import_boundaries.py``): the domain depends on nothing else of the service, the use
cases do not reach for adapters or the gRPC edge, and only the repository sees stored documents."""

from __future__ import annotations

from tests.architecture.test_import_boundaries import (
    PROTO_OR_GRPC,
    ROOT,
    is_generated,
    is_under,
    python_files,
    violations,
)

SERVICE = ROOT / "services" / "execution"


def test_the_domain_imports_no_protos_and_nothing_else_of_the_service() -> None:
    def forbidden(module: str) -> bool:
        outside = is_under(module, ("services.execution",)) and not is_under(module, ("services.execution.domain",))
        return outside or is_under(module, PROTO_OR_GRPC) or is_generated(module)

    assert violations(python_files(SERVICE / "domain"), forbidden) == []


def test_handlers_do_not_import_adapters_or_the_edge() -> None:
    edge = tuple(
        f"services.execution.{name}"
        for name in ("adapters", "mapping", "servicer", "agent_servicer", "http", "app", "outbox", "sweeper")
    )
    assert violations(python_files(SERVICE / "handlers"), lambda module: is_under(module, edge)) == []


def test_only_the_repository_and_the_document_mapping_see_stored_documents() -> None:
    """(and ``app.py``, which opens the store)"""
    allowed = {"repository.py", "adapters/documents.py", "app.py"}
    readers = {
        line.split(":", 1)[0].removeprefix("services/execution/")
        for line in violations(python_files(SERVICE), lambda module: is_under(module, ("services.platform.docstore",)))
    }
    assert readers == allowed

"""The repository explains itself: no section references ("§") and no pointers to issue numbers or to
documents a reader of the repository does not have, in code, protos, docs, configuration or tests.
``docs/architecture.md`` carries what a maintainer needs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.architecture.test_import_boundaries import ROOT

#: Where the project's own text lives (generated OpenAPI included: proto comments become its descriptions).
ROOTS = (
    "bench", "deploy", "docs", "exthub", "gateway", "helm", "protos/exthub", "scripts", "services", "terraform",
    "tests", "tools", "clients", "gen/openapi",
)  # fmt: skip
FILES = ("README.md", "Makefile", "pyproject.toml", "Dockerfile", "buf.yaml", "buf.gen.yaml")
TEXT_SUFFIXES = {
    ".py", ".proto", ".md", ".yaml", ".yml", ".json", ".toml", ".tf", ".tpl", ".txt", ".sh", ".js", ".hcl", ".example",
}  # fmt: skip
#: A section sign, an issue number, or the name of a planning document outside the repository.
OUTSIDE = re.compile(r"\u00a7|\bissues? #?\d+\b|\bPRODUCT\.md\b|\bDECISIONS\.md\b|\.coordination/", re.IGNORECASE)


def project_text_files() -> list[Path]:
    """The project's own text files (no virtual environments, caches or installed packages)."""
    found = [ROOT / name for name in FILES if (ROOT / name).exists()]
    for root in ROOTS:
        found.extend(
            path
            for path in (ROOT / root).rglob("*")
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts
        )
    return sorted(found)


def test_no_references_outside_the_repository() -> None:
    files = project_text_files()
    assert len(files) > 300 and ROOT / "docs" / "architecture.md" in files
    this_file = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}"
        for path in files
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not found, found


def test_the_check_catches_what_it_looks_for() -> None:
    for line in ("see spec \u00a76", "fixed in issue 10", "(issue #4)", "PRODUCT.md says", ".coordination/async.md"):
        assert OUTSIDE.search(line), line
    for line in ("an issue with the key", "RFC 7515 Appendix F", "AIP-160 filters", "issues show"):
        assert not OUTSIDE.search(line), line

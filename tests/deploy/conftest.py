"""Fixtures of the offline deployment checks: helm and checkov binaries (installed by scripts/setup.sh; a
missing tool fails the tests, it never skips them), the chart rendered for the default values and the two
example environments, and one checkov run per target per session (checkov is slow)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import render, tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "exthub"
EXAMPLES = ROOT / "deploy" / "examples"
ENVIRONMENTS = ("staging", "production")

#: checkov checks skipped in the Kubernetes scan, each with its reason (nothing else may be skipped).
K8S_SKIPS: Mapping[str, str] = {
    # The digest of the services' image is known only after the operator's build and push, and the Envoy
    # image's after its mirror to the registry: values take both (image.digest, gateway.image.digest),
    # deploy.render warns while they are empty, and test_images_by_digest_when_given shows every image is
    # then pulled by digest. The examples cannot know digests of images that were never built here.
    "CKV_K8S_43": "image digests are per deployment (image.digest, gateway.image.digest)",
    # The settings model reads EXTHUB_PAGE_TOKEN_SECRET and APPLICATIONINSIGHTS_CONNECTION_STRING from the
    # environment. Both come from Key Vault through the CSI driver (a Secret it syncs), never from values.
    "CKV_K8S_35": "the services read these two secrets from environment variables (Key Vault via the CSI driver)",
}


def run(args: Sequence[str | Path], *, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a checker; on failure the assertion message carries its output."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Rendered:
    """One rendered deployment: its files and parsed manifests."""

    name: str
    values: dict[str, Any]
    manifests_file: Path
    envoy_file: Path | None
    documents: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``."""
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        """The document of ``kind`` named ``name``."""
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]


def parse(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``text``."""
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm binary (scripts/setup.sh installs it)."""
    return tools.helm()


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    """The checkov entry point (scripts/setup.sh installs it in its own venv)."""
    return tools.checkov()


@pytest.fixture(scope="session")
def example_outputs() -> dict[str, Any]:
    """The example environment's Terraform outputs."""
    return render.read_outputs(render.EXAMPLE_OUTPUTS)


@pytest.fixture(scope="session")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, helm_bin: Path, example_outputs: dict[str, Any]
) -> dict[str, Rendered]:
    """The chart rendered three ways: default values (``helm template``) and the two example environments
    (``python -m deploy.render``, which runs ``helm lint --strict`` first)."""
    out: dict[str, Rendered] = {}
    base = tmp_path_factory.mktemp("rendered")
    default_dir = base / "default"
    default_dir.mkdir()
    run([helm_bin, "lint", "--strict", CHART, "--namespace", "exthub"])
    manifests = run([helm_bin, "template", "exthub", CHART, "--namespace", "exthub"]).stdout
    (default_dir / "manifests.yaml").write_text(manifests, encoding="utf-8")
    out["default"] = Rendered(
        "default", render.chart_defaults(), default_dir / "manifests.yaml", None, parse(manifests)
    )
    for name in ENVIRONMENTS:
        overrides = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
        result = render.render(example_outputs, [overrides], base / name)
        values = render.deep_merge(render.chart_defaults(), yaml.safe_load(result.values.read_text(encoding="utf-8")))
        documents = parse(result.manifests.read_text(encoding="utf-8"))
        out[name] = Rendered(name, values, result.manifests, result.envoy, documents)
    return out


def _checkov_report(process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode in (0, 1), f"checkov ({what}) could not run:\n{stdout[-2000:]}\n{stderr[-2000:]}"
    report = json.loads(stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1, [r.get("check_type") for r in reports]
    assert reports[0]["summary"]["parsing_errors"] == 0, reports[0]["summary"]
    checked: dict[str, Any] = reports[0]
    return checked


@pytest.fixture(scope="session")
def checkov_reports(checkov_bin: Path, rendered: dict[str, Rendered]) -> dict[str, dict[str, Any]]:
    """checkov over the rendered manifests, terraform/ and the Dockerfile: the three runs at once, once a session
    (each takes seconds to tens of seconds)."""
    manifests: list[str | Path] = []
    for item in rendered.values():
        manifests += ["--file", item.manifests_file]
    targets: dict[str, list[str | Path]] = {
        "kubernetes": [*manifests, "--framework", "kubernetes", "--skip-check", ",".join(sorted(K8S_SKIPS))],
        "terraform": ["--directory", ROOT / "terraform", "--framework", "terraform"],
        "dockerfile": ["--file", ROOT / "Dockerfile", "--framework", "dockerfile"],
    }
    processes = {
        name: subprocess.Popen(
            [str(a) for a in (checkov_bin, *args, "--skip-download", "--compact", "--output", "json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in targets.items()
    }
    try:
        return {name: _checkov_report(process, name) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="session")
def checkov_kubernetes(checkov_reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """checkov's Kubernetes checks over every rendered manifest."""
    return checkov_reports["kubernetes"]


@pytest.fixture(scope="session")
def checkov_terraform(checkov_reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """checkov's Terraform checks over terraform/."""
    return checkov_reports["terraform"]


@pytest.fixture(scope="session")
def checkov_dockerfile(checkov_reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """checkov's Dockerfile checks over the Dockerfile."""
    return checkov_reports["dockerfile"]

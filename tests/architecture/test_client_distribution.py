"""The client installs alone: the ``exthub-client`` wheel (``clients/python``) holds the stubs, ``exthub.client``
and ``exthub.contract`` and declares what they need at run time — nothing of the hub's services.

The wheel is built offline from a copy of exactly the sources it maps in (so no stale build directory and no
other file of the repository can slip into it), then installed with ``--no-deps`` into a fresh virtual
environment that sees only the wheel's declared dependencies: their files, resolved from the wheel's
``Requires-Dist`` against this environment's installed distributions, are linked into a directory the fresh
environment puts on its path. A module missing from the wheel, a dependency it does not declare, or a
declared version that is not the one pinned here makes the test fail.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path("clients", "python")
#: What the client distribution maps in (relative to the repository root).
SOURCES = (PROJECT, Path("exthub", "client"), Path("exthub", "contract"), Path("gen", "python", "exthub"))
TIMEOUT = 180
IMPORT_EVERYTHING = """
import importlib, pathlib, sys, sysconfig
import exthub
names = sorted(
    ".".join(("exthub", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for root in map(pathlib.Path, exthub.__path__)
    for path in root.rglob("*.py")
)
for name in names:
    importlib.import_module(name)
import exthub.client
site = sysconfig.get_paths()["purelib"]
assert [pathlib.Path(p) for p in exthub.__path__] == [pathlib.Path(site, "exthub")], exthub.__path__
assert not [m for m in sys.modules if m == "services" or m.startswith("services.")]
assert importlib.util.find_spec("services") is None, "the repository leaks into the environment"
print("\\n".join(names))
"""


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build_wheel(tmp_path: Path) -> Path:
    staged = tmp_path / "src"
    for source in SOURCES:
        shutil.copytree(
            ROOT / source, staged / source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
        )
    wheels = tmp_path / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", "--no-index",
        "--wheel-dir", wheels, staged / PROJECT,
    )  # fmt: skip
    (wheel,) = wheels.glob("exthub_client-*.whl")
    return wheel


def _expected_files() -> set[str]:
    """Every module (and typed stub) of the client, the contract package and the generated stubs."""
    files = {
        path.relative_to(ROOT).as_posix()
        for package in ("client", "contract")
        for path in (ROOT / "exthub" / package).rglob("*")
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    gen = ROOT / "gen" / "python"
    files |= {
        path.relative_to(gen).as_posix()
        for path in (gen / "exthub").rglob("*")
        if path.suffix in (".py", ".pyi") and "__pycache__" not in path.parts
    }
    return files


def _declared(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
    return [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]


def _closure(requirements: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that satisfy ``requirements`` (recursively); fails on a missing one or on a
    version outside a declared specifier."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [(req, frozenset[str]()) for req in requirements]
    while pending:
        req, extras = pending.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
            continue
        key = req.name.lower().replace("_", "-")
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{req} is declared but not installed here (requirements.lock)") from None
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} declared, {dist.version} pinned"
        if key in found:
            continue
        found[key] = dist
        pending.extend((Requirement(text), frozenset(req.extras)) for text in dist.requires or [])
    return found


def _link_files(distributions: dict[str, importlib.metadata.Distribution], target: Path) -> None:
    """Symlink every installed file of ``distributions`` (not their scripts) under ``target``."""
    for dist in distributions.values():
        base = Path(str(dist.locate_file("")))
        for file in dist.files or ():
            if file.parts and file.parts[0] == "..":
                continue
            link = target / Path(*file.parts)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(base / Path(*file.parts))


def test_the_wheel_holds_exactly_the_client_contract_and_stubs(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n for n in archive.namelist() if not n.startswith("exthub_client-")}
    assert packaged == _expected_files()
    names = {req.name for req in _declared(wheel)}
    assert names >= {"grpcio", "protobuf", "googleapis-common-protos", "grpcio-status", "aiohttp", "pyjwt"}
    assert not names & {"typer", "rich", "aiosqlite", "lark", "pydantic", "structlog", "azure-cosmos"}


def test_the_wheel_alone_imports_in_an_environment_of_its_declared_dependencies(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    requirements = _declared(wheel)
    # the extras ("azure") resolve to the pinned versions too; the environment gets the required ones only
    _closure([Requirement(str(r).split(";")[0]) for r in requirements if r.marker is not None])
    dependencies = _closure([r for r in requirements if r.marker is None])
    assert "exthub" not in dependencies and "exthub-client" not in dependencies
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(environment)
    python = environment / "bin" / "python"
    site = Path(_run(python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()).resolve()
    assert site.is_relative_to(environment.resolve())
    linked = tmp_path / "dependencies"
    _link_files(dependencies, linked)
    (site / "declared-dependencies.pth").write_text(f"{linked}\n", encoding="utf-8")

    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python))
    _run(*pip, "install", "--quiet", "--no-deps", "--no-index", wheel)
    assert "No broken requirements found" in _run(*pip, "check")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run(
        [str(python), "-I", "-c", IMPORT_EVERYTHING],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    assert {"exthub.client.hub", "exthub.contract.signatures", "exthub.execution.v1.agent_task_service_pb2_grpc"} <= (
        imported
    )
    assert sysconfig.get_paths()["purelib"] != str(site)

"""``requirements-runtime.lock``: the pins of ``requirements.lock`` that the services need at run time.

The image installs only the runtime closure of ``pyproject.toml``'s ``[project].dependencies`` (extras as
written there, environment markers evaluated for the image: CPython 3.11 on Linux x86_64), with the versions
``requirements.lock`` pins. The closure is read from the installed distributions' metadata (the project venv is
built from ``requirements.lock``), so the result is reproducible offline.

``python -m deploy.runtime_lock`` rewrites the file; ``--check`` exits 1 when it is stale (the tests run it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
FULL_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"

#: The image's interpreter and platform (the base image is python:3.11 slim on linux/amd64).
IMAGE_ENVIRONMENT: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.16",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.16",
    "python_version": "3.11",
    "sys_platform": "linux",
}

HEADER = (
    "# The runtime pins of requirements.lock for the container image (generated: python -m deploy.runtime_lock).\n"
    "# The closure of pyproject.toml [project].dependencies for CPython 3.11 on Linux x86_64; do not edit by hand.\n"
)


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """``canonical name -> (name as written, version)`` of an ``name==version`` lock file."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path.name}: not an exact pin: {raw!r}")
        pins[canonicalize_name(name)] = (name.strip(), version.strip())
    return pins


def runtime_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """``[project].dependencies`` of ``pyproject``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _applies(marker: Marker | None, extras: Iterable[str]) -> bool:
    if marker is None:
        return True
    wanted = set(extras) or {""}
    return any(marker.evaluate({**IMAGE_ENVIRONMENT, "extra": extra}) for extra in wanted)


def closure(roots: Iterable[Requirement]) -> dict[str, set[str]]:
    """Every distribution the ``roots`` need in the image, with the extras requested of it."""
    needed: dict[str, set[str]] = {}
    queue: list[tuple[str, set[str]]] = [(canonicalize_name(r.name), set(r.extras)) for r in roots]
    while queue:
        name, extras = queue.pop()
        known = needed.get(name)
        if known is not None and extras <= known:
            continue
        needed[name] = (known or set()) | extras
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            raise LookupError(f"{name} is not installed in this environment: run scripts/setup.sh") from None
        for text in requires:
            requirement = Requirement(text)
            if _applies(requirement.marker, needed[name]):
                queue.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return needed


def render(pins: Mapping[str, tuple[str, str]], needed: Iterable[str]) -> str:
    """The runtime lock text: the ``needed`` distributions with their ``pins``, sorted like ``pip freeze``."""
    lines = []
    for name in needed:
        if name not in pins:
            raise LookupError(f"{name} is needed at run time but not pinned in requirements.lock")
        written, version = pins[name]
        installed = importlib.metadata.version(name)
        if installed != version:
            raise LookupError(
                f"{name}: requirements.lock pins {version}, the venv has {installed}: run scripts/setup.sh"
            )
        lines.append(f"{written}=={version}")
    return HEADER + "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


def generate() -> str:
    """The text ``requirements-runtime.lock`` must have."""
    return render(read_lock(FULL_LOCK), closure(runtime_requirements()))


def main(argv: list[str] | None = None) -> int:
    """CLI: write the runtime lock, or ``--check`` that it is current."""
    parser = argparse.ArgumentParser(prog="python -m deploy.runtime_lock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if requirements-runtime.lock is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = RUNTIME_LOCK.read_text(encoding="utf-8") if RUNTIME_LOCK.exists() else ""
        if current != text:
            print("requirements-runtime.lock is stale: run python -m deploy.runtime_lock", file=sys.stderr)
            return 1
        return 0
    RUNTIME_LOCK.write_text(text, encoding="utf-8")
    print(f"wrote {RUNTIME_LOCK.relative_to(ROOT)} ({text.count(chr(10)) - 2} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

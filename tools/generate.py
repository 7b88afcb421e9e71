"""Regenerate everything derived from the contracts in ``protos/`` (run from anywhere).

``python -m tools.generate``
    checks the protos (``buf format``, ``buf lint``, ``buf breaking`` against the committed baseline
    ``protos/baseline/exthub.binpb``), then regenerates ``gen/``:

    * ``gen/python/``: messages (``*_pb2.py``), typed stubs (``*_pb2.pyi``), gRPC stubs
      (``*_pb2_grpc.py``, ``*_pb2_grpc.pyi``) for the ``exthub.*`` packages;
    * ``gen/descriptor/exthub.binpb``: a FileDescriptorSet with imports and source info, for Envoy's
      gRPC-JSON transcoder (``google/rpc/error_details.proto`` is included so that
      ``convert_grpc_status`` can render ``ErrorInfo`` and ``BadRequest`` details);
    * ``gen/openapi/exthub.openapi.yaml``: the OpenAPI 3.0.3 document of the REST surface, validated
      with openapi-spec-validator.

``python -m tools.generate --check``
    regenerates into a temporary directory and exits 1 with a summary of the differences when
    ``gen/`` is stale (nothing is written).

``python -m tools.generate --update-baseline``
    rewrites the breaking-change baseline (a buf image of the current protos) after lint, then
    regenerates. Only do this for an intended, reviewed breaking change or a new release baseline.

Generation is deterministic: the same protos and tool versions give byte-identical files.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "gen"
BASELINE = ROOT / "protos" / "baseline" / "exthub.binpb"
DESCRIPTOR = Path("gen") / "descriptor" / "exthub.binpb"
OPENAPI = Path("gen") / "openapi" / "exthub.openapi.yaml"
#: Top-level directories of gen/ owned by this generator.
GENERATED_DIRS = ("python", "descriptor", "openapi")
#: What the generator neither writes nor compares (Python caches, editable-install metadata).
IGNORED_PARTS = ("__pycache__", ".mypy_cache")
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
#: Extra protos that the descriptor set for Envoy must contain although no exthub proto imports them.
DESCRIPTOR_EXTRA = ("protos/third_party/google/rpc/error_details.proto",)
MAX_DIFF_LINES = 40


class GenerationError(Exception):
    """A step of the generation failed; the message says which and why."""


def buf_binary() -> str:
    """The buf binary of this virtualenv (buf-bin), else the one on PATH."""
    local = Path(sys.executable).parent / "buf"
    if local.exists():
        return str(local)
    found = shutil.which("buf")
    if found is None:
        raise GenerationError("buf not found: install the dev extras (buf-bin) into this virtualenv")
    return found


def run(args: Sequence[str], *, what: str) -> str:
    """Run a command in the repo root; raise GenerationError with its output when it fails."""
    proc = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise GenerationError(f"{what} failed (exit {proc.returncode}):\n{output}")
    return proc.stdout


def verify(*, breaking: bool) -> None:
    """Format, lint and (when a baseline exists) breaking-change checks of the protos."""
    buf = buf_binary()
    run([buf, "format", "--diff", "--exit-code"], what="buf format (run `buf format -w` to fix)")
    run([buf, "lint"], what="buf lint")
    if breaking and BASELINE.exists():
        proc = check_breaking(ROOT)
        if proc.returncode != 0:
            raise GenerationError(
                "buf breaking against protos/baseline/exthub.binpb failed (for an intended breaking change "
                f"run `python -m tools.generate --update-baseline`):\n{(proc.stdout + proc.stderr).strip()}"
            )


def check_breaking(root: Path) -> subprocess.CompletedProcess[str]:
    """Run ``buf breaking`` for the workspace at ``root`` against its ``protos/baseline/exthub.binpb``.

    buf cannot compare a two-module workspace (ours plus the vendored third_party module) with a
    single image ("input contained 2 images, whereas against contained 1"), so the current exthub
    protos are first built into an image the same way as the baseline and the two images are compared
    (buf's default, and our, rule set: FILE). Returns the completed process (exit 0 = no breaking change).
    """
    buf = buf_binary()
    with tempfile.TemporaryDirectory(prefix="exthub-breaking-") as tmp:
        current = Path(tmp) / "current.binpb"
        build = subprocess.run(
            [buf, "build", "--path", "protos/exthub", "--exclude-source-info", "--output", str(current)],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0:
            return build
        return subprocess.run(
            [buf, "breaking", str(current), "--against", "protos/baseline/exthub.binpb"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )


def validate_openapi(path: Path) -> None:
    """Validate the generated OpenAPI document (OpenAPI 3.0 schema and semantics)."""
    import yaml
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    document = yaml.safe_load(path.read_text("utf-8"))
    try:
        validate(document)
    except OpenAPIValidationError as exc:
        raise GenerationError(f"the generated OpenAPI document is invalid: {exc}") from exc


def generation_template() -> str:
    """``buf.gen.yaml``, or its content pointed at this interpreter's virtualenv when that is not ``.venv``.

    buf.gen.yaml names the plugins by their path in the repo's ``.venv`` (so that a plain
    ``buf generate`` works from the repo root); a virtualenv elsewhere gets the same template inline.
    """
    venv_bin = Path(sys.executable).parent
    if (ROOT / ".venv" / "bin").resolve() == venv_bin.resolve():
        return "buf.gen.yaml"
    return (ROOT / "buf.gen.yaml").read_text("utf-8").replace(".venv/bin/", f"{venv_bin.as_posix()}/")


def generate_into(base: Path) -> None:
    """Generate every artefact under ``base/gen/``."""
    buf = buf_binary()
    run([buf, "generate", "--template", generation_template(), "--output", str(base)], what="buf generate")
    descriptor = base / DESCRIPTOR
    descriptor.parent.mkdir(parents=True, exist_ok=True)
    paths = [arg for extra in ("protos/exthub", *DESCRIPTOR_EXTRA) for arg in ("--path", extra)]
    run(
        [buf, "build", *paths, "--as-file-descriptor-set", "--output", str(descriptor)],
        what="buf build (descriptor set)",
    )
    validate_openapi(base / OPENAPI)


def is_ignored(rel: Path) -> bool:
    """Whether a path under gen/ is not ours (caches, build metadata)."""
    return any(part in IGNORED_PARTS or part.endswith(IGNORED_SUFFIXES) for part in rel.parts)


def snapshot(gen_dir: Path) -> dict[str, bytes]:
    """All generated files under ``gen_dir`` (relative POSIX path → content)."""
    files: dict[str, bytes] = {}
    for top in GENERATED_DIRS:
        root = gen_dir / top
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(gen_dir)
            if path.is_file() and not is_ignored(rel):
                files[rel.as_posix()] = path.read_bytes()
    return files


def compare(current: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """Human-readable differences between the committed and the freshly generated files."""
    report = [f"missing in gen/: {name}" for name in sorted(fresh.keys() - current.keys())]
    report.extend(f"stale extra file in gen/: {name}" for name in sorted(current.keys() - fresh.keys()))
    for name in sorted(current.keys() & fresh.keys()):
        if current[name] == fresh[name]:
            continue
        report.append(f"differs: {name}")
        try:
            old = current[name].decode("utf-8").splitlines()
            new = fresh[name].decode("utf-8").splitlines()
        except UnicodeDecodeError:
            report.append(f"  (binary, {len(current[name])} → {len(fresh[name])} bytes)")
            continue
        lines = list(difflib.unified_diff(old, new, f"gen/{name}", f"fresh/{name}", lineterm="", n=1))
        report.extend(f"  {line}" for line in lines[:MAX_DIFF_LINES])
        if len(lines) > MAX_DIFF_LINES:
            report.append(f"  … {len(lines) - MAX_DIFF_LINES} more diff lines")
    return report


def sync(fresh_gen: Path, gen_dir: Path) -> list[str]:
    """Make ``gen_dir`` equal to ``fresh_gen`` (only the generated dirs; caches are left alone)."""
    current = snapshot(gen_dir)
    fresh = snapshot(fresh_gen)
    changed: list[str] = []
    for name in sorted(current.keys() - fresh.keys()):
        (gen_dir / name).unlink()
        changed.append(f"removed {name}")
    for name, content in sorted(fresh.items()):
        if current.get(name) != content:
            target = gen_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            changed.append(f"{'updated' if name in current else 'added'} {name}")
    for top in GENERATED_DIRS:  # drop directories left empty by removals
        root = gen_dir / top
        if root.is_dir():
            for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
                if not any(directory.iterdir()):
                    directory.rmdir()
    return changed


def update_baseline() -> None:
    """Rewrite the breaking-change baseline: a buf image of the exthub protos (no source info)."""
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    run(
        [buf_binary(), "build", "--path", "protos/exthub", "--exclude-source-info", "--output", str(BASELINE)],
        what="buf build (baseline image)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.generate", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if gen/ is stale; write nothing")
    mode.add_argument(
        "--update-baseline", action="store_true", help="rewrite protos/baseline/exthub.binpb, then regenerate"
    )
    parser.add_argument("--skip-verify", action="store_true", help="skip buf format/lint/breaking before generating")
    args = parser.parse_args(argv)
    try:
        if not args.check and not args.skip_verify:
            verify(breaking=not args.update_baseline)
        if args.update_baseline:
            update_baseline()
            print(f"baseline rewritten: {BASELINE.relative_to(ROOT)}")
        with tempfile.TemporaryDirectory(prefix="exthub-gen-") as tmp:
            generate_into(Path(tmp))
            fresh_gen = Path(tmp) / "gen"
            if args.check:
                differences = compare(snapshot(GEN), snapshot(fresh_gen))
                if differences:
                    print("gen/ is stale; run `python -m tools.generate`:", file=sys.stderr)
                    print("\n".join(differences), file=sys.stderr)
                    return 1
                print("gen/ is up to date")
                return 0
            changes = sync(fresh_gen, GEN)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(changes) if changes else "gen/ already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

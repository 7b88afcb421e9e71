"""Contract tests of the protos: buf checks, generation freshness, OpenAPI, and descriptor-driven rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from exthub.contract.roles import AGENT, EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from tools.generate import ROOT, buf_binary, check_breaking
from tools.protodesc import Options, http_verb_and_path, leading_comments

OPENAPI = ROOT / "gen" / "openapi" / "exthub.openapi.yaml"
#: Public services: every RPC has a google.api.http rule and the gateway routes them.
PUBLIC_SERVICES = ("exthub.catalog.v1.CatalogService", "exthub.execution.v1.ExecutionService")
#: Internal services: called inside the cluster only; no RPC has a google.api.http rule.
INTERNAL_SERVICES = ("exthub.agent.v1.AgentService", "exthub.execution.v1.AgentTaskService")
SERVICES = (*PUBLIC_SERVICES, *INTERNAL_SERVICES)
#: The REST surface: RPC → (verb, path template, body). RPCs not listed have no http rule.
EXPECTED_HTTP: dict[str, tuple[str, str, str]] = {
    "CatalogService.CreateExtension": ("post", "/v1/extensions", "extension"),
    "CatalogService.GetExtension": ("get", "/v1/{name=extensions/*}", ""),
    "CatalogService.ListExtensions": ("get", "/v1/extensions", ""),
    "CatalogService.SearchExtensions": ("get", "/v1/extensions:search", ""),
    "CatalogService.UpdateExtension": ("patch", "/v1/{extension.name=extensions/*}", "extension"),
    "CatalogService.DeleteExtension": ("delete", "/v1/{name=extensions/*}", ""),
    "CatalogService.UndeleteExtension": ("post", "/v1/{name=extensions/*}:undelete", "*"),
    "CatalogService.CreateExtensionVersion": ("post", "/v1/{parent=extensions/*}/versions", "version"),
    "CatalogService.GetExtensionVersion": ("get", "/v1/{name=extensions/*/versions/*}", ""),
    "CatalogService.ListExtensionVersions": ("get", "/v1/{parent=extensions/*}/versions", ""),
    "CatalogService.DeprecateExtensionVersion": ("post", "/v1/{name=extensions/*/versions/*}:deprecate", "*"),
    "CatalogService.DeleteExtensionVersion": ("delete", "/v1/{name=extensions/*/versions/*}", ""),
    "ExecutionService.CreateExecution": ("post", "/v1/executions", "execution"),
    "ExecutionService.GetExecution": ("get", "/v1/{name=executions/*}", ""),
    "ExecutionService.ListExecutions": ("get", "/v1/executions", ""),
    "ExecutionService.ContinueExecution": ("post", "/v1/{name=executions/*}:continue", "*"),
    "ExecutionService.CancelExecution": ("post", "/v1/{name=executions/*}:cancel", "*"),
    "ExecutionService.RetryExecution": ("post", "/v1/{name=executions/*}:retry", "*"),
    "ExecutionService.ListExecutionEvents": ("get", "/v1/{parent=executions/*}/events", ""),
    "ExecutionService.WatchExecution": ("get", "/v1/{name=executions/*}:watch", ""),
    "ExecutionService.WaitExecution": ("get", "/v1/{name=executions/*}:wait", ""),
    "ExecutionService.ReportExecutionStatus": ("post", "/v1/{name=executions/*}:reportStatus", "*"),
    "ExecutionService.GetSigningKeys": ("get", "/v1/signingKeys", ""),
    "ExecutionService.ListDeadLetters": ("get", "/v1/deadLetters", ""),
}
#: The access rules (the role column of the API table in docs/architecture.md): RPC → (audience, roles).
EXPECTED_ACCESS: dict[str, tuple[str, list[str]]] = {
    **{
        f"CatalogService.{m}": ("AUTHENTICATED", [])
        for m in [
            "GetExtension",
            "ListExtensions",
            "SearchExtensions",
            "UpdateExtension",
            "DeleteExtension",
            "UndeleteExtension",
            "CreateExtensionVersion",
            "GetExtensionVersion",
            "ListExtensionVersions",
            "DeprecateExtensionVersion",
            "DeleteExtensionVersion",
        ]
    },
    "CatalogService.CreateExtension": ("ROLES", [EXTENSIONS_PUBLISH]),
    **{
        f"ExecutionService.{m}": ("AUTHENTICATED", [])
        for m in [
            "GetExecution",
            "ListExecutions",
            "ContinueExecution",
            "CancelExecution",
            "RetryExecution",
            "ListExecutionEvents",
            "WatchExecution",
            "WaitExecution",
        ]
    },
    "ExecutionService.CreateExecution": ("ROLES", [EXECUTIONS_RUN]),
    "ExecutionService.ReportExecutionStatus": ("PUBLIC", []),
    "ExecutionService.GetSigningKeys": ("PUBLIC", []),
    "ExecutionService.ListDeadLetters": ("ROLES", [HUB_ADMIN]),
    "AgentTaskService.ClaimExecution": ("ROLES", [AGENT]),
    "AgentTaskService.BatchClaimExecutions": ("ROLES", [AGENT]),
    "AgentTaskService.BatchReportExecutionStatus": ("ROLES", [AGENT]),
    "AgentTaskService.HeartbeatExecution": ("ROLES", [AGENT]),
    "AgentTaskService.SignExtensionRequest": ("ROLES", [AGENT]),
    "AgentTaskService.ReleaseExecution": ("ROLES", [AGENT]),
    "AgentService.Execute": ("ROLES", [AGENT]),
    "AgentService.GetAgentInfo": ("ROLES", [AGENT]),
}
BEHAVIORS = {"REQUIRED", "OPTIONAL", "OUTPUT_ONLY", "IDENTIFIER"}


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run buf in ``cwd``."""
    return subprocess.run([buf_binary(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """A fresh descriptor set (with imports and source info) built from the current protos."""
    out = tmp_path_factory.mktemp("descriptor") / "exthub.binpb"
    proc = buf("build", "--path", "protos/exthub", "--as-file-descriptor-set", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def options(descriptor_set: descriptor_pb2.FileDescriptorSet) -> Options:
    """The custom options of the descriptor set."""
    return Options(descriptor_set.file)


def exthub_files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    """The files of our own packages."""
    files = [file for file in fds.file if file.package.startswith("exthub.")]
    assert len(files) >= 7
    return files


def rpcs(
    fds: descriptor_pb2.FileDescriptorSet, services: tuple[str, ...] = SERVICES
) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    """(``Service.Method``, method) for every RPC of ``services`` (all of them must exist, and no other)."""
    found = set()
    for file in exthub_files(fds):
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            assert full_name in SERVICES, f"{full_name} is neither a public nor an internal service of the tests"
            if full_name in services:
                found.add(full_name)
                for method in service.method:
                    yield f"{service.name}.{method.name}", method
    assert found == set(services)


def walk_messages(
    messages: Any, path: tuple[int, ...], prefix: str
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
    """(full name, message, source path) of messages and their nested messages (map entries skipped)."""
    for i, message in enumerate(messages):
        if message.options.map_entry:
            continue
        here = (*path, i)
        yield f"{prefix}{message.name}", message, here
        yield from walk_messages(message.nested_type, (*here, 3), f"{prefix}{message.name}.")


# --------------------------------------------------------------------------------------------- buf checks
def test_buf_lint_passes() -> None:
    proc = buf("lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_buf_format_diff_is_empty() -> None:
    proc = buf("format", "--diff", "--exit-code")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_no_breaking_change_against_baseline() -> None:
    assert (ROOT / "protos" / "baseline" / "exthub.binpb").is_file()
    proc = check_breaking(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_breaking_check_detects_a_deleted_field(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    resources = tmp_path / "protos" / "exthub" / "catalog" / "v1" / "resources.proto"
    text = resources.read_text("utf-8")
    edited = re.sub(r"\n  string copyright_notice = \d+[^;]*;", "", text, count=1)
    assert edited != text, "the copyright_notice field of Extension was not found"
    resources.write_text(edited, "utf-8")

    proc = check_breaking(tmp_path)

    assert proc.returncode != 0
    assert "copyright_notice" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- generation
def test_generation_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_modules_import_as_namespace_packages(tmp_path: Path) -> None:
    gen_python = ROOT / "gen" / "python"
    assert not list((gen_python / "exthub").rglob("__init__.py"))
    modules = sorted(
        path.relative_to(gen_python).with_suffix("").as_posix().replace("/", ".")
        for path in (gen_python / "exthub").rglob("*_pb2*.py")
    )
    assert "exthub.catalog.v1.catalog_service_pb2_grpc" in modules
    assert "exthub.execution.v1.execution_service_pb2_grpc" in modules
    assert "exthub.agent.v1.agent_service_pb2_grpc" in modules
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {**os.environ, "PYTHONPATH": str(gen_python)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_no_reference_to_documents_outside_the_repository() -> None:
    """Proto comments become the API documentation (the OpenAPI descriptions): no section references ("\u00a7")
    to a specification that the reader of the API does not have."""
    section = "\u00a7"
    sources = [*sorted((ROOT / "protos" / "exthub").rglob("*.proto")), OPENAPI]
    assert len(sources) >= 8
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if section in line or "spec " in line.lower()
    ]
    assert not found, found


# ---------------------------------------------------------------------------------------------- OpenAPI
def openapi_shape(path: str) -> str:
    """An OpenAPI path with each parameter replaced by ``*`` (the shape Envoy matches)."""
    return re.sub(r"\{[^{}]+\}", "*", path)


def template_shape(template: str) -> str:
    """An http rule template with each variable replaced by its segment pattern."""
    return re.sub(r"\{[^{}=]+(?:=([^{}]*))?\}", lambda m: m.group(1) or "*", template)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(OPENAPI.read_text("utf-8"))
    return document


def test_openapi_document_validates(openapi: dict[str, Any]) -> None:
    validate(openapi)  # raises on an invalid document
    assert openapi["openapi"] == "3.0.3"


def test_openapi_has_an_operation_for_every_http_rule(
    openapi: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet, options: Options
) -> None:
    operations = {
        (openapi_shape(path), verb): operation
        for path, item in openapi["paths"].items()
        for verb, operation in item.items()
    }
    rules = 0
    for name, method in rpcs(descriptor_set):
        rule = options.http_rule(method)
        if rule is None:
            continue
        rules += 1
        verb, template = http_verb_and_path(rule)
        operation = operations.get((template_shape(template), verb))
        assert operation is not None, f"{name}: no {verb.upper()} {template} in the OpenAPI document"
        assert operation["operationId"] == name.replace(".", "_")
        access = options.access(method) or {}
        if access.get("audience") == "PUBLIC":
            assert operation["security"] == []
        else:
            assert operation["security"] == [{"bearerAuth": []}]
    assert rules == len(operations) == len(EXPECTED_HTTP)


def test_openapi_paths_are_served_shapes(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert "get" in paths["/v1/extensions:search"]
    assert "post" in paths["/v1/executions/{execution}:cancel"]
    assert "post" in paths["/v1/extensions/{extension}/versions/{version}:deprecate"]
    assert "patch" in paths["/v1/extensions/{extension}"]
    assert paths["/v1/signingKeys"]["get"]["security"] == []
    create = paths["/v1/extensions"]["post"]
    assert {p["name"] for p in create["parameters"]} == {"extensionId"}
    listing = {p["name"] for p in paths["/v1/extensions"]["get"]["parameters"]}
    assert listing == {"pageSize", "pageToken", "filter", "orderBy", "showDeleted"}
    update = {p["name"] for p in paths["/v1/extensions/{extension}"]["patch"]["parameters"]}
    assert update == {"extension", "updateMask"}
    schemas = openapi["components"]["schemas"]
    execution = schemas["exthub.execution.v1.Execution"]
    assert execution["required"] == ["extensionVersion"]
    assert execution["properties"]["state"]["readOnly"] is True
    assert execution["properties"]["createTime"] == {
        "type": "string",
        "format": "date-time",
        "description": "When the execution was created.",
        "readOnly": True,
    }
    assert schemas["exthub.execution.v1.ExecutionEvent"]["properties"]["sequence"]["type"] == "string"
    assert "QUEUED" in schemas["exthub.execution.v1.Execution.State"]["enum"]
    default = paths["/v1/executions"]["post"]["responses"]["default"]
    assert default["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/google.rpc.Status"}


# ----------------------------------------------------------------------------------- descriptor checks
def test_every_rpc_has_the_expected_access_rule(
    descriptor_set: descriptor_pb2.FileDescriptorSet, options: Options
) -> None:
    seen = {}
    for name, method in rpcs(descriptor_set):
        access = options.access(method)
        assert access is not None, f"{name} has no (exthub.type.v1.access) option"
        assert set(access) <= {"audience", "roles"}, f"{name}: unknown access fields {sorted(access)}"
        seen[name] = (access.get("audience"), access.get("roles", []))
    assert seen == EXPECTED_ACCESS


def test_http_rules_exactly_on_public_rpcs(descriptor_set: descriptor_pb2.FileDescriptorSet, options: Options) -> None:
    for name, method in rpcs(descriptor_set, INTERNAL_SERVICES):
        assert options.http_rule(method) is None, f"internal RPC {name} must not have a google.api.http rule"
    seen = {}
    for name, method in rpcs(descriptor_set, PUBLIC_SERVICES):
        rule = options.http_rule(method)
        assert rule is not None, f"public RPC {name} has no google.api.http rule"
        verb, template = http_verb_and_path(rule)
        seen[name] = (verb, template, rule.get("body", ""))
    assert seen == EXPECTED_HTTP


def test_every_field_has_a_field_behavior(descriptor_set: descriptor_pb2.FileDescriptorSet, options: Options) -> None:
    missing = []
    for file in exthub_files(descriptor_set):
        for full_name, message, _ in walk_messages(file.message_type, (4,), f"{file.package}."):
            for proto_field in message.field:
                behaviors = set(options.field_behavior(proto_field))
                if not behaviors & BEHAVIORS:
                    missing.append(f"{full_name}.{proto_field.name}")
                if proto_field.name == "name" and options.resource(message):
                    assert "IDENTIFIER" in behaviors, f"{full_name}.name must be IDENTIFIER"
    assert not missing, f"fields without google.api.field_behavior: {missing}"


def test_every_element_has_a_leading_comment(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    missing = []
    for file in exthub_files(descriptor_set):
        comments = leading_comments(file)
        assert comments, f"{file.name} has no source info"

        def need(path: tuple[int, ...], what: str, comments: dict[tuple[int, ...], str] = comments) -> None:
            if not comments.get(path):
                missing.append(what)

        def enums(enum_list: Any, path: tuple[int, ...], prefix: str) -> None:
            for i, enum in enumerate(enum_list):
                need((*path, i), f"enum {prefix}{enum.name}")
                for j, value in enumerate(enum.value):
                    need((*path, i, 2, j), f"enum value {prefix}{enum.name}.{value.name}")

        enums(file.enum_type, (5,), f"{file.package}.")
        for full_name, message, path in walk_messages(file.message_type, (4,), f"{file.package}."):
            need(path, f"message {full_name}")
            for j, proto_field in enumerate(message.field):
                need((*path, 2, j), f"field {full_name}.{proto_field.name}")
            enums(message.enum_type, (*path, 4), f"{full_name}.")
        for i, service in enumerate(file.service):
            need((6, i), f"service {service.name}")
            for j, method in enumerate(service.method):
                need((6, i, 2, j), f"rpc {service.name}.{method.name}")
    assert not missing, f"elements without a leading comment: {missing}"


def test_resources_declare_exthub_io_types(descriptor_set: descriptor_pb2.FileDescriptorSet, options: Options) -> None:
    types = {}
    for file in exthub_files(descriptor_set):
        for full_name, message, _ in walk_messages(file.message_type, (4,), f"{file.package}."):
            resource = options.resource(message)
            if resource:
                types[resource["type"]] = (full_name, resource["pattern"])
    assert types == {
        "exthub.io/Extension": ("exthub.catalog.v1.Extension", ["extensions/{extension}"]),
        "exthub.io/ExtensionVersion": (
            "exthub.catalog.v1.ExtensionVersion",
            ["extensions/{extension}/versions/{version}"],
        ),
        "exthub.io/Execution": ("exthub.execution.v1.Execution", ["executions/{execution}"]),
        "exthub.io/ExecutionEvent": ("exthub.execution.v1.ExecutionEvent", ["executions/{execution}/events/{event}"]),
    }

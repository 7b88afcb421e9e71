"""The published OpenAPI document is valid and describes the routes the gateway transcodes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from openapi_spec_validator import validate

from gateway.access import load_descriptor_set, service_methods
from gateway.render import DEFAULT_DESCRIPTOR, TRANSCODED_SERVICES

OPENAPI = Path(__file__).resolve().parents[3] / "gen" / "openapi" / "exthub.openapi.yaml"


def test_openapi_document_validates() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    validate(document)
    assert str(document["openapi"]).startswith("3.")


def test_every_routed_method_is_documented_and_nothing_internal() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    operation_ids = {
        str(operation.get("operationId", ""))
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    }
    methods = service_methods(load_descriptor_set(DEFAULT_DESCRIPTOR), TRANSCODED_SERVICES)
    for method in methods:
        documented = any(method.method in operation_id for operation_id in operation_ids)
        assert documented == method.has_http_rule, method.path


def _matching_templates(document: dict[str, Any], path: str) -> list[str]:
    """The path templates a validator would match ``path`` against, honouring the parameters' patterns."""
    found = []
    for template, item in document["paths"].items():
        patterns = {
            parameter["name"]: parameter["schema"].get("pattern", ".*")
            for operation in item.values()
            if isinstance(operation, dict)
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "path"
        }
        regex = re.escape(template)
        for name in patterns:
            regex = regex.replace(re.escape(f"{{{name}}}"), f"(?P<{name}>[^/]+)")
        match = re.fullmatch(regex, path)
        if match and all(re.search(patterns[name], value) for name, value in match.groupdict().items()):
            found.append(template)
    return found


def test_path_parameters_tell_a_resource_from_its_custom_methods() -> None:
    """``/v1/executions/{execution}`` must not also match ``/v1/executions/x:watch`` (nor ``:cancel`` …)."""
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    for template, item in document["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter["in"] == "path":
                    assert parameter["schema"].get("pattern"), f"{template}: {parameter['name']} has no pattern"
        concrete = re.sub(r"\{[^}]+\}", "0b8d5f7e-3c1a-4d2b-9e6f-1a2b3c4d5e6f", template)
        assert _matching_templates(document, concrete) == [template], concrete
    watch = "/v1/executions/0b8d5f7e-3c1a-4d2b-9e6f-1a2b3c4d5e6f:watch"
    assert _matching_templates(document, watch) == ["/v1/executions/{execution}:watch"]

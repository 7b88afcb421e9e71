"""The published OpenAPI document is valid and describes the routes the gateway transcodes."""

from __future__ import annotations

from pathlib import Path

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

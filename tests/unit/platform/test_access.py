"""Access rules: role checks, wildcard lookup, the principal contextvar, rules read from descriptors."""

from __future__ import annotations

import importlib

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from exthub.catalog.v1 import catalog_service_pb2
from exthub.contract.roles import AGENT, EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from exthub.type.v1 import access_pb2
from services.platform.auth.access import (
    PUBLIC_METHODS,
    AccessRule,
    Audience,
    access_rules_from_descriptors,
    authenticated,
    check_access,
    current_principal,
    principal_scope,
    public,
    require_principal,
    require_roles,
    resolve_rule,
)
from services.platform.auth.principal import Principal
from services.platform.errors import PermissionDenied, Unauthenticated


def _principal(*roles: str) -> Principal:
    return Principal(subject="s", tenant="t", user="u", roles=frozenset(roles), issuer="i")


def test_public_admits_anybody() -> None:
    check_access(public(), None)
    check_access(public(), _principal())


def test_authenticated_needs_a_principal() -> None:
    with pytest.raises(Unauthenticated) as caught:
        check_access(authenticated(), None)
    assert caught.value.reason == "TOKEN_INVALID"
    check_access(authenticated(), _principal())


def test_roles_rule() -> None:
    rule = require_roles(EXTENSIONS_PUBLISH, EXECUTIONS_RUN)
    with pytest.raises(Unauthenticated):
        check_access(rule, None)
    with pytest.raises(PermissionDenied) as caught:
        check_access(rule, _principal(AGENT))
    assert caught.value.reason == "ROLE_REQUIRED"
    assert caught.value.metadata == {"requiredRoles": "Executions.Run,Extensions.Publish"}
    check_access(rule, _principal(EXECUTIONS_RUN))
    check_access(rule, _principal(HUB_ADMIN))


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="at least one role"):
        AccessRule(Audience.ROLES)
    with pytest.raises(ValueError, match="only meaningful"):
        AccessRule(Audience.PUBLIC, frozenset({AGENT}))
    assert require_roles(AGENT).roles == frozenset({AGENT})


def test_resolve_rule_exact_then_wildcard() -> None:
    rules = {**PUBLIC_METHODS, "/grpc.health.v1.Health/Check": require_roles(AGENT)}
    assert resolve_rule(rules, "/grpc.health.v1.Health/Check") == require_roles(AGENT)
    assert resolve_rule(rules, "/grpc.health.v1.Health/Watch") == public()
    assert resolve_rule(rules, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") == public()
    assert resolve_rule(rules, "/x.Y/Z") is None
    assert resolve_rule(rules, "garbage") is None


async def test_principal_contextvar() -> None:
    assert current_principal() is None
    with pytest.raises(Unauthenticated):
        require_principal()
    principal = _principal(AGENT)
    with principal_scope(principal):
        assert current_principal() is principal
        assert require_principal() is principal
    assert current_principal() is None


def test_rules_from_a_service_descriptor() -> None:
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/platform/access_test.proto",
        package="exthub.accesstest.v1",
        dependency=["exthub/type/v1/access.proto", "google/protobuf/empty.proto"],
        syntax="proto3",
    )
    service = file.service.add(name="AccessTestService")
    rule_pb = access_pb2.AccessRule
    cases: dict[str, tuple[access_pb2.AccessRule.Audience.ValueType, list[str]] | None] = {
        "Publish": (rule_pb.ROLES, [EXTENSIONS_PUBLISH]),
        "Read": (rule_pb.AUTHENTICATED, []),
        "Keys": (rule_pb.PUBLIC, []),
        "Claim": (rule_pb.ROLES, [AGENT]),
        "Unspecified": (rule_pb.AUDIENCE_UNSPECIFIED, ["Ignored"]),
        "NoOption": None,
    }
    for name, option in cases.items():
        method = service.method.add(
            name=name, input_type=".google.protobuf.Empty", output_type=".google.protobuf.Empty"
        )
        if option is not None:
            rule = method.options.Extensions[access_pb2.access]
            rule.audience = option[0]
            rule.roles.extend(option[1])  # the option is present even when the audience is unset
    importlib.import_module("google.protobuf.empty_pb2")
    pool = descriptor_pool.Default()
    pool.Add(file)
    rules = access_rules_from_descriptors([pool.FindServiceByName("exthub.accesstest.v1.AccessTestService")])
    prefix = "/exthub.accesstest.v1.AccessTestService/"
    assert rules == {
        prefix + "Publish": require_roles(EXTENSIONS_PUBLISH),
        prefix + "Read": authenticated(),
        prefix + "Keys": public(),
        prefix + "Claim": require_roles(AGENT),
    }


def test_rules_from_the_catalog_contract() -> None:
    rules = access_rules_from_descriptors(catalog_service_pb2.DESCRIPTOR.services_by_name.values())
    assert rules["/exthub.catalog.v1.CatalogService/CreateExtension"] == require_roles(EXTENSIONS_PUBLISH)
    assert rules["/exthub.catalog.v1.CatalogService/GetExtension"] == authenticated()

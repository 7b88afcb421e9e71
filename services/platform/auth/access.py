"""Per-method access rules (``exthub.type.v1.access``) and the caller's principal for handlers."""

from __future__ import annotations

import contextlib
import enum
import importlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from services.platform.auth.principal import Principal
from services.platform.errors import PermissionDenied, Unauthenticated
from services.platform.logging import get_logger

__all__ = [
    "PUBLIC_METHODS",
    "AccessRule",
    "Audience",
    "access_rules_from_descriptors",
    "authenticated",
    "check_access",
    "current_principal",
    "principal_scope",
    "public",
    "require_principal",
    "require_roles",
    "resolve_rule",
]

_log = get_logger("exthub.access_rules")

ACCESS_MODULE = "exthub.type.v1.access_pb2"


class Audience(enum.Enum):
    """Who may call a method: anybody, any valid token, or holders of one of some roles."""

    PUBLIC = "PUBLIC"
    AUTHENTICATED = "AUTHENTICATED"
    ROLES = "ROLES"


@dataclass(frozen=True)
class AccessRule:
    """The access rule of one method."""

    audience: Audience
    roles: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.audience is Audience.ROLES and not self.roles:
            raise ValueError("an AccessRule with audience ROLES needs at least one role")
        if self.audience is not Audience.ROLES and self.roles:
            raise ValueError("roles are only meaningful with audience ROLES")


def public() -> AccessRule:
    """Anybody may call (a bearer token, if sent, must still be valid)."""
    return AccessRule(Audience.PUBLIC)


def authenticated() -> AccessRule:
    """Any valid token may call."""
    return AccessRule(Audience.AUTHENTICATED)


def require_roles(*roles: str) -> AccessRule:
    """A valid token holding one of ``roles`` (or Hub.Admin) may call."""
    return AccessRule(Audience.ROLES, frozenset(roles))


PUBLIC_METHODS: Mapping[str, AccessRule] = {
    "/grpc.health.v1.Health/*": public(),
    "/grpc.reflection.v1alpha.ServerReflection/*": public(),
    "/grpc.reflection.v1.ServerReflection/*": public(),
}
"""Rules every server adds: health checks and reflection need no token."""


def resolve_rule(rules: Mapping[str, AccessRule], method: str) -> AccessRule | None:
    """The rule for ``/pkg.Service/Method``: an exact entry, else a ``/pkg.Service/*`` entry, else None."""
    rule = rules.get(method)
    if rule is not None:
        return rule
    service, sep, _ = method.rpartition("/")
    if not sep or not service:
        return None
    return rules.get(f"{service}/*")


def check_access(rule: AccessRule, principal: Principal | None) -> None:
    """Raise ``Unauthenticated`` or ``PermissionDenied`` unless ``principal`` satisfies ``rule``."""
    if rule.audience is Audience.PUBLIC:
        return
    if principal is None:
        raise Unauthenticated("a valid bearer token is required")
    if rule.audience is Audience.AUTHENTICATED or principal.has_any_role(rule.roles):
        return
    required = ",".join(sorted(rule.roles))
    raise PermissionDenied(
        f"one of the roles {required} is required",
        reason="ROLE_REQUIRED",
        metadata={"requiredRoles": required},
    )


_current: ContextVar[Principal | None] = ContextVar("exthub_principal", default=None)


def current_principal() -> Principal | None:
    """The verified caller of the current RPC, or None (public call without a token)."""
    return _current.get()


def require_principal() -> Principal:
    """The verified caller of the current RPC; ``Unauthenticated`` when there is none."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("a valid bearer token is required")
    return principal


@contextlib.contextmanager
def principal_scope(principal: Principal | None) -> Iterator[None]:
    """Make ``principal`` the current caller inside the ``with`` block (used by the interceptor and tests)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


_AUDIENCE_NUMBERS = {1: Audience.PUBLIC, 2: Audience.AUTHENTICATED, 3: Audience.ROLES}


def access_rules_from_descriptors(service_descriptors: Iterable[Any]) -> dict[str, AccessRule]:
    """Read the ``exthub.type.v1.access`` method option of every method of the given services.

    ``service_descriptors`` are ``google.protobuf.descriptor.ServiceDescriptor`` objects. A method without
    the option, or with ``AUDIENCE_UNSPECIFIED``, is left out, so the interceptor refuses it (fail closed).
    """
    access_pb2 = importlib.import_module(ACCESS_MODULE)
    extension = access_pb2.DESCRIPTOR.extensions_by_name["access"]
    rules: dict[str, AccessRule] = {}
    for service in service_descriptors:
        for method in service.methods:
            full_name = f"/{service.full_name}/{method.name}"
            options = method.GetOptions()
            if not options.HasExtension(extension):
                _log.warning("method has no access option; calls will be refused", method=full_name)
                continue
            option = options.Extensions[extension]
            audience = _AUDIENCE_NUMBERS.get(int(option.audience))
            if audience is None:
                _log.warning("method access option has no audience; calls will be refused", method=full_name)
                continue
            rules[full_name] = AccessRule(
                audience, frozenset(option.roles) if audience is Audience.ROLES else frozenset()
            )
    return rules

"""Authentication and authorization: token verification, the caller's principal, access rules.

The development issuer, the role names and the dev-issuer constants are the contract's
(:mod:`exthub.contract.dev_tokens`, :mod:`exthub.contract.roles`).
"""

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
)
from services.platform.auth.principal import Principal
from services.platform.auth.verifier import TokenVerifier

__all__ = [
    "PUBLIC_METHODS",
    "AccessRule",
    "Audience",
    "Principal",
    "TokenVerifier",
    "access_rules_from_descriptors",
    "authenticated",
    "check_access",
    "current_principal",
    "principal_scope",
    "public",
    "require_principal",
    "require_roles",
]

"""Authentication and authorization: development issuer, token verification, access rules."""

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from services.platform.auth.access import (
    AGENT,
    EXECUTIONS_RUN,
    EXTENSIONS_PUBLISH,
    HUB_ADMIN,
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
    "AGENT",
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "EXECUTIONS_RUN",
    "EXTENSIONS_PUBLISH",
    "HUB_ADMIN",
    "PUBLIC_METHODS",
    "AccessRule",
    "Audience",
    "DevIssuer",
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

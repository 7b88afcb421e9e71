"""The authenticated caller, as read from a verified access token."""

from __future__ import annotations

from dataclasses import dataclass, field

from exthub.contract.roles import HUB_ADMIN

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: token subject, tenant (``tid``), user (``oid``, else ``sub``), app roles, issuer."""

    subject: str
    tenant: str
    user: str
    roles: frozenset[str] = field(default_factory=frozenset)
    issuer: str = ""

    @property
    def is_admin(self) -> bool:
        """True when the caller holds ``Hub.Admin`` (sees every tenant, satisfies every role rule)."""
        return HUB_ADMIN in self.roles

    def has_any_role(self, roles: frozenset[str]) -> bool:
        """True when the caller holds one of ``roles`` or is Hub.Admin."""
        return self.is_admin or not self.roles.isdisjoint(roles)

"""The hub's app roles (the ``roles`` claim of an access token)."""

from __future__ import annotations

__all__ = ["AGENT", "ALL_ROLES", "EXECUTIONS_RUN", "EXTENSIONS_PUBLISH", "HUB_ADMIN"]

#: Sees every tenant and satisfies every role rule.
HUB_ADMIN = "Hub.Admin"
#: May register extensions (and then change the ones it owns).
EXTENSIONS_PUBLISH = "Extensions.Publish"
#: May create executions.
EXECUTIONS_RUN = "Executions.Run"
#: The hub's own agents (and the execution service calling them): ``AgentTaskService``, ``AgentService``.
AGENT = "Agent"

ALL_ROLES = (HUB_ADMIN, EXTENSIONS_PUBLISH, EXECUTIONS_RUN, AGENT)

"""``python -m services.agent``: run the agent until SIGTERM/SIGINT (then drain gracefully).

On the local backend the agent also runs the queue worker (asynchronous executions) by default; the
settings it reads (``services/platform/settings.py``) include ``EXTHUB_DATA_DIR``, ``EXTHUB_BACKEND``,
``EXTHUB_AGENT_PORT``, ``EXTHUB_EXECUTION_ADDRESS`` and ``EXTHUB_AGENT_WORKER_SLOTS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from services.platform.entrypoint import run_service

if TYPE_CHECKING:
    from services.agent.app import AgentApp
    from services.platform.settings import Settings


async def _start(settings: Settings) -> AgentApp:
    from services.agent.app import start_agent  # after run_service's set-up (see services.platform.entrypoint)

    return await start_agent(settings)


def _worker_line(app: AgentApp) -> Iterable[str]:
    if app.worker is not None:
        yield f"agent {app.agent_id} consuming the work queue"


def main() -> None:
    """Entry point."""
    run_service("agent", _start, announce_more=_worker_line, http_port=lambda settings: settings.agent_http_port)


if __name__ == "__main__":
    main()

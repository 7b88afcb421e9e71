"""``python -m services.agent``: run the agent until SIGTERM/SIGINT (then drain gracefully)."""

from __future__ import annotations

from services.agent.app import start_agent
from services.platform.entrypoint import run_service


def main() -> None:
    """Entry point."""
    run_service("agent", start_agent)


if __name__ == "__main__":
    main()

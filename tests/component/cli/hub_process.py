"""A real hub (:func:`running_hub`) in its own process, for the CLI tests.

``python -m tests.component.cli.hub_process DATA_DIR READY_FD [--no-worker]``.

Writes one JSON line ``{"catalog", "execution", "objects", "echo"}`` to the inherited file descriptor ``READY_FD``
once it serves (its logs go to stdout/stderr), then runs until SIGTERM or SIGINT. The agent works the queue, as under
``exthub up`` (``--no-worker``: nothing does). The CLI tests run the ``exthub`` commands in the test process
against it, as a user would against ``exthub up``: two processes, real sockets, real SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from exthub.contract.dev_tokens import DevIssuer
from tests.support.hub import running_hub


async def serve(data_dir: Path, ready_fd: int, *, worker: bool = True) -> None:
    """Serve until signalled; announce the addresses on ``ready_fd``. ``worker=False``: nothing takes queued work."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    issuer = await asyncio.to_thread(DevIssuer.load_or_create, data_dir)
    # like `exthub up`: the agent consumes the work queue
    async with running_hub(data_dir, issuer, agent_worker=worker) as hub:
        ready = {
            "catalog": hub.catalog.address,
            "execution": hub.execution.address,
            "objects": hub.execution.http_url.removeprefix("http://"),
            "echo": hub.echo_url,
        }
        with os.fdopen(ready_fd, "w", encoding="utf-8") as channel:
            channel.write(json.dumps(ready) + "\n")
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2]), worker="--no-worker" not in sys.argv[3:]))

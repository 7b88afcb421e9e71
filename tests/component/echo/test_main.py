"""``python -m services.echo``: prints its URL when ready, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp

from tests.component.echo.conftest import new_key

REPO_ROOT = Path(__file__).resolve().parents[3]


async def test_entry_point_prints_url_and_verifies(tmp_path: Path) -> None:
    key = new_key("cli-key")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.jwk()]}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.echo",
        "--port",
        "0",
        "--jwks-file",
        str(jwks_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        raw = json.dumps(
            {"executionId": "e1", "extensionId": "echo", "attempt": 1, "requestParameters": {"x": 1}}
        ).encode()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 200
            async with session.post(f"{url}/execute", data=raw, headers={"Exthub-Signature": key.sign(raw)}) as resp:
                assert resp.status == 200
                assert (await resp.json())["responseData"]["echo"] == {"x": 1}
            async with session.post(f"{url}/execute", data=raw) as resp:
                assert resp.status == 401
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

"""The development CA: a server certificate for 127.0.0.1 that a client trusting the bundle accepts."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tools.emulators.certs import load_or_create


async def test_a_client_trusting_the_bundle_accepts_the_server_certificate(tmp_path: Path) -> None:
    certs = load_or_create(tmp_path / "pki")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        client_context = ssl.create_default_context(cafile=str(certs.trust_bundle))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname="127.0.0.1"), 5
        )
        assert await asyncio.wait_for(reader.read(), 5) == b"ok"
        writer.close()
        untrusting = ssl.create_default_context()  # the system roots alone do not know the dev CA
        try:
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=untrusting, server_hostname="127.0.0.1"), 5
            )
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("a client without the dev CA accepted the certificate")
    finally:
        server.close()
        await server.wait_closed()


def test_the_same_directory_keeps_the_same_certificates(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    ca = first.ca_cert.read_bytes()
    second = load_or_create(tmp_path)
    assert second.ca_cert.read_bytes() == ca
    assert second.server_key.stat().st_mode & 0o777 == 0o600
    assert ca in second.trust_bundle.read_bytes()

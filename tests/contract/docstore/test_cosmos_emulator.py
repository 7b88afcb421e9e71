"""The emulator launcher (tools/emulators/cosmos.py) and what its preload changes, checked with the plain SDK."""

from __future__ import annotations

import socket
import ssl
import uuid
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from exthub.contract.dev_tokens import DevIssuer
from tests.support.cosmos import DevTokenCredential
from tools.emulators.cosmos import CosmosEmulator, CosmosEmulatorError, emulator_binary, start_cosmos_emulator


def test_start_on_an_os_chosen_port_serve_the_dev_certificate_and_stop_by_pid(tmp_path: Path) -> None:
    emulator = start_cosmos_emulator(tmp_path)
    try:
        assert emulator.port > 0
        assert emulator.endpoint == f"https://127.0.0.1:{emulator.port}/"
        context = ssl.create_default_context(cafile=str(emulator.certificates.ca_cert))
        with (
            socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None  # the handshake verified the certificate against the dev CA
        with pytest.raises(CosmosEmulatorError, match="faults=True"):
            emulator.inject_faults(status=429, count=1)
    finally:
        emulator.stop()
    assert not emulator.running()
    assert emulator.process.returncode is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", emulator.port), timeout=2):
        pass
    emulator.stop()  # idempotent


def test_a_missing_installation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CosmosEmulatorError, match=r"scripts/setup\.sh"):
        emulator_binary(tmp_path)


async def test_missing_items_and_containers_answer_404_like_cosmos_db(
    cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    async with CosmosClient(cosmos_emulator.endpoint, credential=DevTokenCredential(dev_issuer)) as client:
        name = f"t{uuid.uuid4().hex[:16]}"
        database = await client.create_database_if_not_exists(name)
        container = await database.create_container_if_not_exists("c", partition_key=PartitionKey("/partition"))
        await container.create_item({"id": "a", "partition": "p1"})
        for partition, item in [("p1", "missing"), ("p2", "a")]:
            with pytest.raises(CosmosResourceNotFoundError) as err:
                await container.read_item(item, partition_key=partition)
            assert err.value.status_code == 404
            assert err.value.sub_status in (None, 0)
        async with CosmosClient(cosmos_emulator.endpoint, credential=DevTokenCredential(dev_issuer)) as other:
            await other.get_database_client(name).delete_container("c")
        for operation in (
            container.create_item({"id": "b", "partition": "p1"}),
            container.read_item("a", partition_key="p1"),
        ):
            with pytest.raises(CosmosResourceNotFoundError) as missing:
                await operation
            assert missing.value.sub_status == 1003  # owner resource (the container) does not exist

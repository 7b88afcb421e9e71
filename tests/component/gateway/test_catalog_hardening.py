"""The catalog refuses extension URLs the hub must not call (SSRF), and shows a profile's extension settings only
to the extension's owner, Hub.Admin and the hub's services — through the gateway (REST) and at the catalog's
own port (gRPC). The gateway's admin interface is not reachable over TCP at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.roles import AGENT, EXTENSIONS_PUBLISH, HUB_ADMIN
from gateway.envoy import RunningEnvoy
from tests.component.gateway.conftest import Bearer, call
from tests.component.gateway.test_input_limits import metadata_of, violations
from tests.support.hub import Hub

PUBLISH = (EXTENSIONS_PUBLISH,)
REFUSED_URLS = [
    "http://127.0.0.1:9901/quitquitquit",
    "http://localhost:8080/execute",
    "http://[::1]:8080/execute",
    "http://2130706433/execute",
    "http://0x7f.1/execute",
    "http://0177.0.0.1/execute",
    "http://127.1/execute",
    "http://10.0.0.7/execute",
    "http://172.16.3.4/execute",
    "http://192.168.1.1/execute",
    "http://169.254.169.254/metadata/instance",
    "http://168.63.129.16/machine",
    "http://100.64.0.1/execute",
    "http://[fd00::1]/execute",
    "http://[fe80::1]/execute",
    "http://[::ffff:127.0.0.1]/execute",
    "http://[::ffff:10.0.0.1]/execute",
    "http://0.0.0.0:8080/execute",
    "http://224.0.0.1/execute",
    "http://255.255.255.255/execute",
    "http://user:secret@extensions.example.com/execute",
    "ftp://extensions.example.com/execute",
    "file:///etc/passwd",
    "http://metadata.google.internal/computeMetadata/v1/",
]


def version_body(url: str, *, setting: str = "execution_url") -> dict[str, Any]:
    settings = {"execution_url": "https://extensions.example.com/execute", setting: url}
    profile = {
        "name": "default",
        "executionModel": "http-json/sync/v1",
        "supportedPriorities": ["NORMAL"],
        "extensionSettings": settings,
        "clientConfig": {"theme": "dark"},
    }
    return {"profiles": [profile]}


async def _extension(http: aiohttp.ClientSession, gateway: RunningEnvoy, headers: dict[str, str], name: str) -> None:
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": name},
        json_body={"displayName": name, "publisher": "Me"},
        headers=headers,
    )
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_registration_refuses_internal_and_odd_urls_over_rest(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, url: str
) -> None:
    publisher = bearer(roles=PUBLISH)
    await _extension(http, gateway, publisher, "ssrf")
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/ssrf/versions",
        params={"versionId": "1.0.0"},
        json_body=version_body(url),
        headers=publisher,
    )
    assert (reply.status, reply.code) == (400, "INVALID_ARGUMENT"), reply.body
    assert reply.field_violations == ["version.profiles[0].extension_settings['execution_url']"], reply.body
    assert "secret" not in str(reply.body)


@pytest.mark.parametrize("setting", ["validation_url", "callback_url"])
async def test_every_url_setting_the_hub_calls_is_checked(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, setting: str
) -> None:
    publisher = bearer(roles=PUBLISH)
    await _extension(http, gateway, publisher, "ssrf-other")
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/ssrf-other/versions",
        params={"versionId": "1.0.0"},
        json_body=version_body("http://127.0.0.1:22/", setting=setting),
        headers=publisher,
    )
    assert reply.status == 400, reply.body
    assert reply.field_violations == [f"version.profiles[0].extension_settings['{setting}']"]


async def test_registration_refuses_internal_urls_at_the_catalog_port(hub: Hub, bearer: Bearer) -> None:
    publisher = metadata_of(bearer(roles=PUBLISH))
    async with grpc.aio.insecure_channel(hub.catalog.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        await stub.CreateExtension(
            pb.CreateExtensionRequest(
                extension_id="direct", extension=resources_pb2.Extension(display_name="D", publisher="P")
            ),
            metadata=publisher,
            timeout=10,
        )
        for url in ("http://127.0.0.1:9901/ready", "http://[::ffff:a9fe:a9fe]/", "http://2852039166/"):
            version = resources_pb2.ExtensionVersion(
                profiles=[
                    resources_pb2.ExecutionProfile(
                        name="default", execution_model="http-json/sync/v1", extension_settings={"execution_url": url}
                    )
                ]
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateExtensionVersion(
                    pb.CreateExtensionVersionRequest(parent="extensions/direct", version_id="1.0.0", version=version),
                    metadata=publisher,
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
            assert violations(refused.value) == ["version.profiles[0].extension_settings['execution_url']"]


async def test_any_publisher_may_register_a_version_served_by_the_allow_listed_sample(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    publisher = bearer(roles=PUBLISH, tenant="another-publisher", user="someone")
    await _extension(http, gateway, publisher, "my-echo")
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/my-echo/versions",
        params={"versionId": "1.0.0"},
        json_body=version_body(f"{hub.echo_url}/execute"),
        headers=publisher,
    )
    assert reply.status == 200, reply.body
    other_port = version_body(f"{hub.echo_url.rsplit(':', 1)[0]}:1/execute")
    refused = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/my-echo/versions",
        params={"versionId": "1.0.1"},
        json_body=other_port,
        headers=publisher,
    )
    assert refused.status == 400, "the allow-list names echo's port, not the whole loopback"


# -- visibility of extension settings ---------------------------------------------------------------------


async def test_extension_settings_are_shown_only_to_the_owner_and_admins_over_rest(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    owner = bearer(roles=PUBLISH, tenant="owner-tenant", user="owner")
    await _extension(http, gateway, owner, "secretive")
    secret_url = "https://hooks.example.com/run?code=s3cr3t"
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/secretive/versions",
        params={"versionId": "1.0.0"},
        json_body=version_body(secret_url, setting="validation_url"),
        headers=owner,
    )
    assert created.status == 200, created.body
    readers = {
        "owner": (owner, True),
        "admin": (bearer(roles=(HUB_ADMIN,), tenant="ops"), True),
        "same tenant, another user": (bearer(tenant="owner-tenant", user="colleague"), False),
        "another tenant": (bearer(tenant="elsewhere"), False),
        "another publisher": (bearer(roles=PUBLISH, tenant="elsewhere"), False),
    }
    for who, (headers, sees) in readers.items():
        for path in (
            "/v1/extensions/secretive/versions/1.0.0",
            "/v1/extensions/secretive/versions/latest",
            "/v1/extensions/secretive/versions",
        ):
            reply = await call(http, gateway, "GET", path, headers=headers)
            assert reply.status == 200, reply.body
            (version,) = reply.body.get("versions", [reply.body])
            (profile,) = version["profiles"]
            assert profile["clientConfig"] == {"theme": "dark"}, (who, path)
            if sees:
                assert profile["extensionSettings"]["validation_url"] == secret_url, (who, path)
            else:
                assert profile["extensionSettings"] == {}, (who, path)
                assert "s3cr3t" not in str(reply.body)


async def test_extension_settings_are_hidden_at_the_catalog_port_too(hub: Hub, bearer: Bearer) -> None:
    """Directly over gRPC: the same rule (the hub's own services, role Agent, see them: they call the URL)."""
    async with grpc.aio.insecure_channel(hub.catalog.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        for roles, sees in (((), False), ((AGENT,), True), ((HUB_ADMIN,), True)):
            headers = metadata_of(bearer(roles=roles, tenant="reader"))
            version = await stub.GetExtensionVersion(
                pb.GetExtensionVersionRequest(name="extensions/echo/versions/1.0.0"), metadata=headers, timeout=10
            )
            listed = await stub.ListExtensionVersions(
                pb.ListExtensionVersionsRequest(parent="extensions/echo"), metadata=headers, timeout=10
            )
            for profile in [*version.profiles, *listed.versions[0].profiles]:
                assert bool(profile.extension_settings) == sees, roles


# -- the gateway's admin interface ------------------------------------------------------------------------


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched against /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_the_gateway_admin_listens_on_a_private_unix_socket_only(gateway: RunningEnvoy) -> None:
    assert _listening_tcp_ports(gateway.process.pid) == {gateway.port}
    mode = stat.S_IMODE(gateway.admin_socket.stat().st_mode)
    assert stat.S_ISSOCK(gateway.admin_socket.stat().st_mode) and mode & 0o077 == 0, oct(mode)
    assert await gateway.stat("server.live") == 1  # and it works over the socket

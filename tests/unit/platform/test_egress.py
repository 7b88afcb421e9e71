"""The egress policy (services.platform.egress): which URLs the hub calls, and the allow-list."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic
import pytest

from services.platform.egress import (
    EGRESS_DESTINATION_REFUSED,
    EGRESS_UNRESOLVABLE,
    EGRESS_URL_REFUSED,
    EgressPolicy,
    EgressRefused,
    is_called_url_setting,
    parse_allow_entry,
)
from services.platform.settings import Settings


def resolving(*addresses: str) -> EgressPolicy:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return addresses

    return EgressPolicy(resolver=resolver)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", EGRESS_DESTINATION_REFUSED),
        ("http://127.255.0.9:8080/", EGRESS_DESTINATION_REFUSED),
        ("http://[::1]/", EGRESS_DESTINATION_REFUSED),
        ("http://localhost/", EGRESS_DESTINATION_REFUSED),
        ("http://api.localhost/", EGRESS_DESTINATION_REFUSED),
        ("http://10.1.2.3/", EGRESS_DESTINATION_REFUSED),
        ("http://172.31.255.255/", EGRESS_DESTINATION_REFUSED),
        ("http://192.168.0.1/", EGRESS_DESTINATION_REFUSED),
        ("http://169.254.169.254/latest/meta-data/", EGRESS_DESTINATION_REFUSED),
        ("http://169.254.170.2/v2/credentials", EGRESS_DESTINATION_REFUSED),
        ("http://168.63.129.16/", EGRESS_DESTINATION_REFUSED),
        ("http://100.100.100.200/", EGRESS_DESTINATION_REFUSED),
        ("http://[fd00:ec2::254]/", EGRESS_DESTINATION_REFUSED),
        ("http://100.64.0.1/", EGRESS_DESTINATION_REFUSED),
        ("http://100.127.255.254/", EGRESS_DESTINATION_REFUSED),
        ("http://[fc00::1]/", EGRESS_DESTINATION_REFUSED),
        ("http://[fdff::1]/", EGRESS_DESTINATION_REFUSED),
        ("http://[fe80::1]/", EGRESS_DESTINATION_REFUSED),
        ("http://0.0.0.0/", EGRESS_DESTINATION_REFUSED),
        ("http://[::]/", EGRESS_DESTINATION_REFUSED),
        ("http://224.0.0.251/", EGRESS_DESTINATION_REFUSED),
        ("http://[ff02::1]/", EGRESS_DESTINATION_REFUSED),
        ("http://255.255.255.255/", EGRESS_DESTINATION_REFUSED),
        ("http://240.0.0.1/", EGRESS_DESTINATION_REFUSED),
        ("http://[::ffff:127.0.0.1]/", EGRESS_DESTINATION_REFUSED),
        ("http://[::ffff:169.254.169.254]/", EGRESS_DESTINATION_REFUSED),
        ("http://[::127.0.0.1]/", EGRESS_DESTINATION_REFUSED),
        ("http://[64:ff9b::a9fe:a9fe]/", EGRESS_DESTINATION_REFUSED),
        ("http://[2002:a00:1::]/", EGRESS_DESTINATION_REFUSED),
        ("http://2130706433/", EGRESS_URL_REFUSED),
        ("http://0x7f000001/", EGRESS_URL_REFUSED),
        ("http://0x7f.0.0.1/", EGRESS_URL_REFUSED),
        ("http://0177.0.0.1/", EGRESS_URL_REFUSED),
        ("http://017700000001/", EGRESS_URL_REFUSED),
        ("http://127.1/", EGRESS_URL_REFUSED),
        ("http://127.0.1/", EGRESS_URL_REFUSED),
        ("http://127.000.000.001/", EGRESS_URL_REFUSED),
        ("http://example.123/", EGRESS_URL_REFUSED),
        ("http://user:hunter2@example.com/", EGRESS_URL_REFUSED),
        ("http://user@example.com/", EGRESS_URL_REFUSED),
        ("http://@example.com/", EGRESS_URL_REFUSED),
        ("http://example.com\\@127.0.0.1/", EGRESS_URL_REFUSED),
        ("http://exam ple.com/", EGRESS_URL_REFUSED),
        ("http://example.com:0/", EGRESS_URL_REFUSED),
        ("ftp://example.com/", EGRESS_URL_REFUSED),
        ("gopher://example.com/", EGRESS_URL_REFUSED),
        ("file:///etc/passwd", EGRESS_URL_REFUSED),
        ("/relative/path", EGRESS_URL_REFUSED),
        ("http:///no-host", EGRESS_URL_REFUSED),
        ("", EGRESS_URL_REFUSED),
        ("http://metadata.google.internal/", EGRESS_DESTINATION_REFUSED),
    ],
)
async def test_refused(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        await resolving("93.184.215.14").resolve(url)
    assert refused.value.reason == reason
    assert "hunter2" not in refused.value.message
    assert not url or url not in refused.value.message


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["127.0.0.1"], ["93.184.215.14", "192.168.1.1"], ["169.254.169.254"], ["::1"], ["fd12::1"]],
)
async def test_a_name_resolving_to_a_refused_address_is_refused(addresses: list[str]) -> None:
    with pytest.raises(EgressRefused) as refused:
        await resolving(*addresses).resolve("https://ext.example.com/run")
    assert refused.value.reason == EGRESS_DESTINATION_REFUSED


async def test_a_public_name_is_pinned_to_its_checked_address() -> None:
    destination = await resolving("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c").resolve(
        "https://Ext.Example.com:8443/run?x=1"
    )
    assert str(destination.pinned_url) == "https://93.184.215.14:8443/run?x=1"
    assert destination.host_header == "ext.example.com:8443"
    assert destination.server_hostname == "ext.example.com"
    ipv6 = await resolving("2606:2800:21f:cb07:6820:80da:af6b:8b2c").resolve("http://ext.example.com/run")
    assert str(ipv6.pinned_url) == "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/run"
    assert ipv6.host_header == "ext.example.com" and ipv6.server_hostname is None


async def test_a_public_literal_needs_no_resolution() -> None:
    async def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError("a literal address is not resolved")

    destination = await EgressPolicy(resolver=no_dns).resolve("http://93.184.215.14/run")
    assert destination.address == "93.184.215.14"


async def test_resolution_failures_and_timeouts() -> None:
    async def failing(host: str, port: int) -> Sequence[str]:
        raise OSError("NXDOMAIN")

    async def hanging(host: str, port: int) -> Sequence[str]:
        import asyncio

        await asyncio.Event().wait()
        return []

    for policy in (EgressPolicy(resolver=failing), EgressPolicy(resolver=hanging, resolve_timeout=0.05), resolving()):
        with pytest.raises(EgressRefused) as refused:
            await policy.resolve("https://ext.example.com/run")
        assert refused.value.reason == EGRESS_UNRESOLVABLE


async def test_the_allow_list_admits_internal_destinations_by_cidr_address_port_or_name() -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return {"ext.internal": ["10.20.0.7"], "echo.internal": ["10.99.0.1"]}[host]

    policy = EgressPolicy(["10.20.0.0/16", "127.0.0.1:8123", "[::1]:9000", "echo.internal:443"], resolver=resolver)
    assert (await policy.resolve("http://ext.internal:80/x")).address == "10.20.0.7"
    assert (await policy.resolve("http://127.0.0.1:8123/x")).address == "127.0.0.1"
    assert (await policy.resolve("http://[::1]:9000/x")).address == "::1"
    assert (await policy.resolve("https://echo.internal/x")).address == "10.99.0.1"
    for refused in ("http://127.0.0.1:8124/x", "http://10.21.0.1/x", "http://echo.internal:8443/x"):
        with pytest.raises(EgressRefused):
            await policy.resolve(refused)
    with pytest.raises(EgressRefused) as odd:  # an allow-list never admits odd spellings or credentials
        await policy.resolve("http://u:p@127.0.0.1:8123/x")
    assert odd.value.reason == EGRESS_URL_REFUSED


async def test_registration_accepts_a_host_that_does_not_resolve_yet() -> None:
    async def failing(host: str, port: int) -> Sequence[str]:
        raise OSError("NXDOMAIN")

    policy = EgressPolicy(resolver=failing)
    assert await policy.registration_violations("f", "https://not-yet.example.com/run") == []
    (violation,) = await policy.registration_violations("f", "http://user:secret@not-yet.example.com/run")
    assert violation.field == "f" and "secret" not in violation.description


def test_allow_list_entries_and_settings() -> None:
    assert str(parse_allow_entry("10.0.0.0/8")) == "10.0.0.0/8"
    assert parse_allow_entry("EXT.internal.:443") == ("ext.internal", 443)
    for bad in ("", "nonsense", "host:0", "host:99999", "bad_name:80", ":80"):
        with pytest.raises(ValueError, match="egress"):
            parse_allow_entry(bad)
    settings = Settings.model_validate({"egress": {"allow": "127.0.0.1:8123, 10.0.0.0/8"}})
    assert settings.egress.allow == ["127.0.0.1:8123", "10.0.0.0/8"]
    with pytest.raises(pydantic.ValidationError):
        Settings.model_validate({"egress": {"allow": "localhost"}})


def test_which_settings_are_called_urls() -> None:
    assert is_called_url_setting("execution_url") and is_called_url_setting("Callback_URL")
    assert not is_called_url_setting("region") and not is_called_url_setting("url_prefix")

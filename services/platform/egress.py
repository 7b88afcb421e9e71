"""The egress policy for every URL a publisher supplies and the hub calls (OWASP SSRF prevention).

An extension's ``execution_url``/``validation_url`` (every ``extension_settings`` key ending in ``_url``) is
checked twice with the same rules: by the catalog when a version is registered (:meth:`EgressPolicy.
registration_violations`) and by the agent right before each call (:meth:`EgressPolicy.resolve`), which
resolves the host once, with a timeout, checks every address it resolves to, and returns a
:class:`Destination` *pinned* to one checked address: the caller connects to that address (the ``Host``
header and the TLS server name stay the URL's host), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot redirect the call. Redirects are never followed by callers.

Refused:

- schemes other than ``http``/``https``, URLs with credentials (``user:pass@``), backslashes, whitespace or
  control characters, missing hosts, port 0;
- host spellings that are not a DNS name or a canonical address: decimal, octal, hex and short IPv4 forms
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``), an all-numeric last label, ``localhost`` and its
  subdomains, the cloud metadata host names;
- addresses (literal or resolved) that are loopback, private (RFC 1918 and the other special-purpose ranges),
  link-local, shared/CGNAT (100.64.0.0/10), unique-local (fc00::/7), unspecified, multicast, broadcast,
  reserved, or any cloud metadata address (169.254.169.254, Azure's 168.63.129.16, fd00:ec2::254, …),
  including their IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms.

An operator who needs an internal extension lists it in ``EXTHUB_EGRESS__ALLOW``: CIDRs (``10.1.2.0/24``,
``fd00::/64``, a single address) or ``host:port`` (``127.0.0.1:8123``, ``[::1]:8080``,
``extensions.internal:443``). An allowed destination skips only the address check, never the URL checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from yarl import URL

from services.platform.errors import FieldViolation
from services.platform.logging import get_logger

__all__ = [
    "DEFAULT_RESOLVE_TIMEOUT_SECONDS",
    "EGRESS_DESTINATION_REFUSED",
    "EGRESS_UNRESOLVABLE",
    "EGRESS_URL_REFUSED",
    "Destination",
    "EgressPolicy",
    "EgressRefused",
    "Resolver",
    "address_refusal",
    "is_called_url_setting",
    "parse_allow_entry",
]

_log = get_logger("exthub.egress")

DEFAULT_RESOLVE_TIMEOUT_SECONDS = 2.0
EGRESS_URL_REFUSED = "EGRESS_URL_REFUSED"
EGRESS_DESTINATION_REFUSED = "EGRESS_DESTINATION_REFUSED"
EGRESS_UNRESOLVABLE = "EGRESS_UNRESOLVABLE"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``; the default asks the system resolver (``getaddrinfo``).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_SCHEMES = frozenset({"http", "https"})
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, Azure IMDS, GCP, OpenStack, …
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure WireServer / platform DNS and health (a public address)
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SETTING_SUFFIX = "_url"


def is_called_url_setting(key: str) -> bool:
    """True for the ``extension_settings`` keys whose value is a URL the hub calls (``execution_url``, …)."""
    return key.lower().endswith(_SETTING_SUFFIX)


class EgressRefused(Exception):
    """The hub does not call this URL. ``message`` never contains the URL (it may hold credentials)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Destination:
    """A checked URL and the one address the connection must use."""

    url: URL
    address: str

    @property
    def pinned_url(self) -> URL:
        """The URL with its host replaced by the checked address (connect here)."""
        return self.url.with_host(self.address)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the URL's own host (and port, when it names one)."""
        return self.url.raw_authority

    @property
    def server_hostname(self) -> str | None:
        """The TLS server name (SNI and certificate check) for ``https``: the URL's host."""
        if self.url.scheme != "https":
            return None
        return str(self.url.raw_host).rstrip(".")


@dataclass(frozen=True)
class _Allow:
    networks: tuple[IPNetwork, ...]
    addresses: frozenset[tuple[IPAddress, int]]
    names: frozenset[tuple[str, int]]


def parse_allow_entry(entry: str) -> IPNetwork | tuple[IPAddress | str, int]:
    """One ``EXTHUB_EGRESS__ALLOW`` entry: a CIDR (or address), or ``host:port``; ValueError when malformed."""
    text = entry.strip()
    if not text:
        raise ValueError("empty egress allow-list entry")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65_535 or not host:
        raise ValueError(f"egress allow-list entry {text!r} is neither a CIDR nor host:port") from None
    host = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host), int(port_text)
    except ValueError:
        if not _is_dns_name(host):
            raise ValueError(f"egress allow-list entry {text!r} has an invalid host") from None
        return host, int(port_text)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class EgressPolicy:
    """Which URLs the hub may call; see the module documentation. Thread-safe and immutable."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT_SECONDS,
        resolver: Resolver | None = None,
    ) -> None:
        networks: list[IPNetwork] = []
        addresses: set[tuple[IPAddress, int]] = set()
        names: set[tuple[str, int]] = set()
        for entry in allow:
            parsed = parse_allow_entry(entry)
            if isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(parsed)
            elif isinstance(parsed[0], str):
                names.add((parsed[0], parsed[1]))
            else:
                addresses.add((parsed[0], parsed[1]))
        self._allow = _Allow(tuple(networks), frozenset(addresses), frozenset(names))
        self._resolve_timeout = resolve_timeout
        self._resolver: Resolver = resolver or _system_resolver

    def check_url(self, raw: str) -> URL:
        """The URL, if its form is acceptable (scheme, no credentials, host spelling, port, literal address);
        raises :class:`EgressRefused` otherwise. Host names are not resolved here."""
        if not isinstance(raw, str) or not raw or _FORBIDDEN_CHARACTERS.search(raw):
            raise EgressRefused(
                "the URL is empty or contains whitespace, control characters or '\\'", reason=EGRESS_URL_REFUSED
            )
        try:
            url = URL(raw)
            netloc = urlsplit(raw).netloc
            port = url.port
        except ValueError:
            raise EgressRefused("the URL cannot be parsed", reason=EGRESS_URL_REFUSED) from None
        if url.scheme not in _SCHEMES or not url.is_absolute():
            raise EgressRefused("only absolute http(s) URLs are called", reason=EGRESS_URL_REFUSED)
        if "@" in netloc or url.raw_user is not None or url.raw_password is not None:
            raise EgressRefused("URLs with credentials (user:password@) are not called", reason=EGRESS_URL_REFUSED)
        host = url.raw_host
        if not host:
            raise EgressRefused("the URL has no host", reason=EGRESS_URL_REFUSED)
        if port is None or not 0 < port <= 65_535:
            raise EgressRefused("the URL's port must be between 1 and 65535", reason=EGRESS_URL_REFUSED)
        literal = _literal_address(host)
        if literal is not None:
            self._check_address(literal, host, port)
            return url
        name = host.lower().rstrip(".")
        if not _is_dns_name(name) or _odd_ipv4(name):
            raise EgressRefused(
                "the URL's host is neither a DNS name nor a canonical IP address", reason=EGRESS_URL_REFUSED
            )
        if (name in _LOCAL_HOSTS or name.endswith(".localhost")) and not self._name_allowed(name, port):
            raise EgressRefused("the URL's host is this machine", reason=EGRESS_DESTINATION_REFUSED)
        if name in _METADATA_HOSTS and not self._name_allowed(name, port):
            raise EgressRefused("the URL's host is a cloud metadata service", reason=EGRESS_DESTINATION_REFUSED)
        return url

    async def resolve(self, raw: str) -> Destination:
        """Check ``raw``, resolve its host once (with the timeout) and return it pinned to a checked address.

        Every address the host resolves to must pass (a name that also resolves to a refused address is
        refused: the connection could otherwise end there). Raises :class:`EgressRefused`.
        """
        url = self.check_url(raw)
        host = str(url.raw_host)
        port = int(url.port or 0)
        literal = _literal_address(host)
        if literal is not None:
            return Destination(url, str(literal))
        name = host.rstrip(".")
        try:
            async with asyncio.timeout(self._resolve_timeout):
                found = list(await self._resolver(name, port))
        except (OSError, TimeoutError, UnicodeError):
            raise EgressRefused("the URL's host cannot be resolved", reason=EGRESS_UNRESOLVABLE) from None
        addresses = [_parse_address(text) for text in found]
        if not addresses or any(address is None for address in addresses):
            raise EgressRefused("the URL's host cannot be resolved", reason=EGRESS_UNRESOLVABLE)
        checked = [address for address in addresses if address is not None]
        if not self._name_allowed(name.lower(), port):
            for address in checked:
                self._check_address(address, name, port)
        return Destination(url, str(checked[0]))

    async def registration_violations(self, field: str, raw: str) -> list[FieldViolation]:
        """What the catalog says about a URL setting at registration: its form and, when the host resolves
        now, its addresses (a host that does not resolve yet is accepted; the agent checks again per call)."""
        try:
            await self.resolve(raw)
        except EgressRefused as refused:
            if refused.reason == EGRESS_UNRESOLVABLE:
                _log.info("egress: a registered URL's host does not resolve yet", field=field)
                return []
            return [FieldViolation(field, f"the hub does not call this URL: {refused.message}")]
        return []

    def _check_address(self, address: IPAddress, host: str, port: int) -> None:
        if self._address_allowed(address, port) or self._name_allowed(host.lower().rstrip("."), port):
            return
        refusal = address_refusal(address)
        if refusal is not None:
            raise EgressRefused(f"the URL's host is {refusal}", reason=EGRESS_DESTINATION_REFUSED)

    def _address_allowed(self, address: IPAddress, port: int) -> bool:
        if (address, port) in self._allow.addresses:
            return True
        return any(address.version == network.version and address in network for network in self._allow.networks)

    def _name_allowed(self, name: str, port: int) -> bool:
        return (name, port) in self._allow.names


def address_refusal(address: IPAddress) -> str | None:
    """Why the hub does not call ``address`` (a short phrase), or None for a public address."""
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_refusal(embedded)
            if inner is not None:
                return f"{inner} (in an IPv6 form)"
            if address.ipv4_mapped is not None or address in _IPV4_COMPATIBLE:
                return "an IPv4 address in an IPv6 form"
        if address.scope_id:
            return "a scoped (link-local) address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address == _BROADCAST:
        return "the broadcast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (CGNAT) address"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for network in _NAT64:
        if address in network:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal_address(host: str) -> IPAddress | None:
    """The address of a host written as a canonical IPv4 dotted quad or an IPv6 literal."""
    text = host.rstrip(".") if host.count(".") == 4 and host.endswith(".") else host
    return _parse_address(text)


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_dns_name(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _odd_ipv4(name: str) -> bool:
    """A spelling the C library reads as an IPv4 address although it is not a dotted quad (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``), or a name whose last label is all digits."""
    if name.rsplit(".", 1)[-1].isdigit():
        return True
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True

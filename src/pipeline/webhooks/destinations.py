"""Where a webhook may go: untrusted URLs, checked after resolving and pinned.

An endpoint's URL is the tenant's to choose, and the deliverer runs inside the
deployment's network: a URL naming ``127.0.0.1``, ``10.0.0.5``, ``169.254.169.254`` (a
cloud's metadata service) or a hostname resolving to one of those would let a tenant
probe and call internal services. So every address a host resolves to is classified
(:func:`refusal`), and one that is loopback, private, link-local, CGNAT, multicast,
reserved, unspecified, an IPv4-mapped or NAT64 form of those, or a metadata address
refuses the whole host. The connection is then made to the address that was checked
(:class:`GuardedBackend`, below httpx): the hostname is resolved once per connection,
so a DNS answer that changes between the check and the connect (DNS rebinding) cannot
slip another address in; TLS still verifies the certificate for the hostname (SNI),
since httpcore starts TLS with the URL's host.

``PIPELINE_WEBHOOKS_ALLOW_PRIVATE`` lifts the address check and allows plain ``http``
(tests, closed networks); off by default.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable, Iterable
from typing import Final
from urllib.parse import urlsplit

import httpcore

from pipeline.errors import PipelineError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``resolve(host, port)``: every address the host has (as text)."""

ALLOW_SETTING: Final = "PIPELINE_WEBHOOKS_ALLOW_PRIVATE"
MAX_URL_CHARS: Final = 2048
METADATA: Final[frozenset[Address]] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS, over IPv6
    }
)
CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(PipelineError):
    """A webhook URL that may not be called: a bad scheme or host, or an internal address."""


def refusal(address: Address) -> str | None:
    """Why a delivery may not connect to ``address`` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} (as {address})" if reason else None
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    for kind, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in CGNAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    ):
        if test:
            return f"{address} is a {kind} address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for the host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_address(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # a zone index names no other host


def check_addresses(host: str, addresses: Iterable[str]) -> list[str]:
    """The addresses, if every one may be called; else :class:`DestinationRefused`."""
    found = list(addresses)
    if not found:
        raise DestinationRefused(f"{host} resolves to no address")
    for text in found:
        reason = refusal(parse_address(text))
        if reason is not None:
            raise DestinationRefused(
                f"{host} resolves to {text}: {reason}; webhook destinations must be public "
                f"addresses ({ALLOW_SETTING}=true allows internal ones, for tests and "
                "closed networks)"
            )
    return found


def check_url(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """The scheme, host and port of a URL a webhook may be registered for.

    Refuses (:class:`DestinationRefused`) a URL that is not ``https`` (``http`` too when
    private destinations are allowed), has credentials or no host. The address check
    needs DNS and is :func:`resolve_checked`'s.
    """
    if len(url) > MAX_URL_CHARS:
        raise DestinationRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise DestinationRefused(f"not a valid URL: {error}") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        allowed = " or ".join(schemes)
        hint = "" if allow_private else f" ({ALLOW_SETTING}=true also allows http, for tests)"
        raise DestinationRefused(f"a webhook URL must be {allowed}, not {url!r}{hint}")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("a webhook URL may not carry credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise DestinationRefused(f"the URL {url!r} names no host")
    if any(ch.isspace() for ch in url):
        raise DestinationRefused("a webhook URL may not contain whitespace")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def resolve_checked(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses to connect to for ``host``, each one checked (unless allowed)."""
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as error:
        raise DestinationRefused(f"{host} does not resolve: {error}") from None
    if allow_private:
        return addresses
    return check_addresses(host, addresses)


def check_destination(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> None:
    """All of a registration's checks: the URL's form, then its host's addresses."""
    _, host, port = check_url(url, allow_private=allow_private)
    resolve_checked(host, port, allow_private=allow_private, resolver=resolver)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to addresses it checked itself.

    httpcore asks the backend for a TCP connection to the URL's host; this one resolves
    the host, refuses it if any address is internal, and connects to a checked address
    (the first that answers). TLS is started by httpcore afterwards with
    ``server_hostname`` set to the URL's host, so SNI and certificate checks are the
    hostname's, not the pinned address's.
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.inner = httpcore.SyncBackend()
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_checked(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise DestinationRefused("webhooks are not delivered to unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)

"""Server-side request forgery guard for subscriber URLs.

A subscriber URL must not make this service call into its own network: every address the host
resolves to must be publicly routable (not private, loopback, link-local, multicast, reserved,
unspecified, shared/CGNAT, documentation ...). The check runs when an endpoint is created and again
before every delivery, and the request then goes to the very address that was checked (the
connection is pinned to it), so a DNS answer that changes in between (DNS rebinding) cannot
redirect a delivery. Development may allow loopback for local receivers.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from accrue.domain.webhooks import UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the public addresses it may be reached at."""

    scheme: str
    host: str
    port: int
    parts: SplitResult
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def forbidden_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why a delivery may not go to this address; None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_reason(address.ipv4_mapped, allow_loopback=allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "is a loopback address"
    if address.is_unspecified:
        return "is the unspecified address"
    if address.is_link_local:
        return "is a link-local address"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_private:
        return "is a private address"
    if address.is_reserved:
        return "is a reserved address"
    if not address.is_global:
        return "is not a publicly routable address"
    return None


def split_url(url: str, *, allow_http: bool = True) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused("must be an http or https URL")
    if scheme == "http" and not allow_http:
        raise UrlRefused("must use https")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not contain credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("must name a host")
    if parts.fragment:
        raise UrlRefused("must not contain a fragment")
    return parts, host, port if port is not None else DEFAULT_PORTS[scheme]


def resolve(host: str, port: int, resolver: Resolver = socket.getaddrinfo) -> tuple[IPAddress, ...]:
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"host '{host}' does not resolve ({exc})") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UrlRefused(f"host '{host}' does not resolve")
    return tuple(found)


def check_url(
    url: str,
    *,
    allow_loopback: bool = False,
    allow_http: bool = True,
    resolver: Resolver = socket.getaddrinfo,
) -> Target:
    """The URL's target when every address it resolves to may be called; UrlRefused if not."""
    parts, host, port = split_url(url, allow_http=allow_http)
    addresses = resolve(host, port, resolver)
    for address in addresses:
        reason = forbidden_reason(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise UrlRefused(f"host '{host}' resolves to {address}, which {reason}")
    return Target(scheme=parts.scheme.lower(), host=host, port=port, parts=parts, addresses=addresses)

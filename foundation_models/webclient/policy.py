"""Which addresses a web tool may connect to: public ones, and what an explicit allow-list names.

Every address a host name resolves to is checked (one private address among public ones refuses the host), and
the fetch then connects to the address that was checked (``guarded.py``), so a DNS answer that changes between
the check and the connection (rebinding) cannot move the request inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import WebError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings

# Named for the one-sentence refusals; anything else that is not globally routable is refused as "non-public".
KINDS = (
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local (cloud metadata)", lambda ip: ip.is_link_local),
    ("unspecified", lambda ip: ip.is_unspecified),
    ("private", lambda ip: ip.is_private),
    ("multicast", lambda ip: ip.is_multicast),
)


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (tests replace this)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebError(f"The host name {host} could not be resolved ({exc}).") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None


def refusal(ip: Address) -> str | None:
    """Why connecting to ``ip`` is refused (its kind), or None for a public address."""
    mapped = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    if mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        return refusal(mapped)
    for kind, test in KINDS:
        if test(ip):
            return kind
    return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the networks and host names of an explicit allow-list (a local intranet)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: tuple[str, ...] = ()  # exact names, or ".example.org" for the domain and every name under it
    resolve: Resolver | None = None  # None: system_resolve, looked up at each call (tests patch it)

    @classmethod
    def from_allow_list(cls, entries: Iterable[str], resolve: Resolver | None = None) -> AddressPolicy:
        """``10.0.0.0/8``, ``127.0.0.1``, ``intranet.example.org`` or ``*.corp.example.org`` entries."""
        networks, hosts = [], []
        for entry in (e.strip().lower() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.append("." + entry[2:] if entry.startswith("*.") else entry.rstrip("."))
        return cls(tuple(networks), tuple(hosts), resolve)

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(
            host == h or (h.startswith(".") and (host.endswith(h) or host == h[1:])) for h in self.hosts
        )

    def pin(self, host: str, port: int) -> str:
        """The checked address to connect to for ``host``; WebError (one sentence) when it may not be reached."""
        literal = parse_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            resolver = self.resolve or system_resolve
            addresses = [a for a in map(parse_address, resolver(host, port)) if a is not None]
            if not addresses:
                raise WebError(f"The host name {host} resolves to no address.")
        if not self.allows_host(host):
            for ip in addresses:
                kind = refusal(ip)
                if kind and not any(ip in net for net in self.networks if net.version == ip.version):
                    named = host if literal is not None else f"{host} ({ip})"
                    raise WebError(
                        f"Refused to connect to {named}: it is a {kind} address, and web tools reach only "
                        "public addresses unless VISUAL_ORCHESTRATOR_WEB_ALLOW lists it."
                    )
        return str(addresses[0])

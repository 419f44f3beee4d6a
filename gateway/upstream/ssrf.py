"""Which hosts and addresses a remote (``url:``) server may be reached at: the SSRF guard.

A gateway that fetches URLs from its config is a request forgery risk only if the config is not
the operator's, but the addresses behind a name are not the operator's either: DNS can answer
with a cloud metadata address (169.254.169.254 hands out the machine's credentials) or change
between a check and a connect (DNS rebinding). So the rules apply twice: to the URL's host when
the config is read (what can be decided without DNS), and to every address the name resolves to
when connecting, and the connection goes to one of the addresses that were checked, never to a
second resolution of the name (see ``http_peer.GuardedBackend``).

Rules, in order:

1. An address that is not a unicast address (unspecified, multicast, reserved, broadcast) is refused.
2. Link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata endpoints
   (169.254.169.254, fd00:ec2::254, 100.100.100.200, and the name metadata.google.internal) are
   refused unless ``allow_link_local``. An IPv6 address that embeds an IPv4 one (IPv4-mapped,
   NAT64 64:ff9b::/96, 6to4) is judged by the embedded address.
3. With ``allow_hosts`` set, only those: a host name listed (``*.example.com`` for its subdomains)
   or an address inside a listed network (an address or a CIDR). Without it, any host.

Loopback and private addresses are allowed by default: people run local servers.

Pure: no trio, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LINK_LOCAL: Final = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
METADATA_ADDRESSES: Final = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"))
METADATA_NAMES: Final = frozenset({"metadata.google.internal"})
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_HOST_LABEL: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def parse_entry(entry: str) -> str | IPNetwork:
    """One ``allow_hosts`` entry: a network (an address is a /32 or /128) or a lowercase host name
    (``*.`` in front matches the subdomains). Raises ValueError saying what is wrong."""
    text = entry.strip().lower().rstrip(".")
    if not text:
        raise ValueError("empty host")
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        pass
    name = text[2:] if text.startswith("*.") else text
    labels = name.split(".")
    if any(not label or not set(label) <= _HOST_LABEL for label in labels) or len(name) > 253:
        raise ValueError(f"{entry!r} is neither a host name, an IP address nor a network (CIDR)")
    return text


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


@dataclass(frozen=True, slots=True)
class HostGuard:
    """The rules above, for one gateway (``remote:`` in the config)."""

    allow_hosts: tuple[str | IPNetwork, ...] | None = None  # None: any host
    allow_link_local: bool = False
    _names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = self.allow_hosts or ()
        object.__setattr__(self, "_names", frozenset(e for e in entries if isinstance(e, str)))
        object.__setattr__(self, "_networks", tuple(e for e in entries if not isinstance(e, str)))

    @classmethod
    def build(cls, allow_hosts: Sequence[str] | None, allow_link_local: bool = False) -> HostGuard:
        entries = None if allow_hosts is None else tuple(parse_entry(e) for e in allow_hosts)
        return cls(entries, allow_link_local)

    @property
    def has_networks(self) -> bool:
        return bool(self._networks)

    def name_listed(self, host: str) -> bool:
        """Whether a host name is in ``allow_hosts`` by name (always True without a list)."""
        if self.allow_hosts is None:
            return True
        host = host.lower().rstrip(".")
        if host in self._names:
            return True
        return any(n.startswith("*.") and host.endswith(n[1:]) for n in self._names)

    def check_address(self, address: IPAddress, *, listed: bool) -> str | None:
        """Why ``address`` is refused (None: allowed); ``listed``: its host name is in allow_hosts."""
        plain = embedded_ipv4(address)
        for a in {address, plain}:
            # (IPv6's is_reserved covers ::/8, loopback and the IPv4-mapped range included: IPv4 only.)
            if a.is_unspecified or a.is_multicast or (isinstance(a, ipaddress.IPv4Address) and a.is_reserved) \
                    or a == ipaddress.IPv4Address("255.255.255.255"):
                return f"{address} is not a unicast address"
        if not self.allow_link_local:
            if address in METADATA_ADDRESSES or plain in METADATA_ADDRESSES:
                return (f"{address} is a cloud metadata address (refused unless remote.allow_link_local "
                        "is true)")
            if any(plain in net for net in LINK_LOCAL if net.version == plain.version) or \
                    any(address in net for net in LINK_LOCAL if net.version == address.version):
                return f"{address} is link-local (refused unless remote.allow_link_local is true)"
        if self.allow_hosts is not None and not listed and not any(
                a in net for net in self._networks for a in {address, plain} if a.version == net.version):
            return f"{address} is not in remote.allow_hosts"
        return None

    def check_host(self, host: str) -> str | None:
        """What can be decided from a URL's host alone, before any DNS (None: nothing against it).

        An address literal is judged entirely; a name only by name: metadata names, and a name
        missing from an ``allow_hosts`` that lists no networks (nothing it resolves to could be
        let in). The addresses a name resolves to are judged when connecting.
        """
        host = host.lower().rstrip(".").strip("[]")
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            address = None
        if address is not None:
            return self.check_address(address, listed=self.name_listed(host))
        if host in METADATA_NAMES and not self.allow_link_local:
            return f"{host} is a cloud metadata host (refused unless remote.allow_link_local is true)"
        if not self.name_listed(host) and not self._networks:
            return f"{host} is not in remote.allow_hosts"
        return None

    def check_resolved(self, host: str, addresses: Iterable[IPAddress]) -> str | None:
        """Why a name's resolved addresses are refused: every one must pass (None: all do).

        One bad address refuses the name: an answer that mixes a metadata address into a
        server's addresses is not one to pick from."""
        refused = self.check_host(host)
        if refused is not None:
            return refused
        listed = self.name_listed(host)
        for address in addresses:
            why = self.check_address(address, listed=listed)
            if why is not None:
                return f"{host} resolves to {why}"
        return None

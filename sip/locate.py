"""Locating SIP servers (RFC 3263 §4): the ordered (transport, IP, port) targets a SIP URI resolves to.

The ordering is pure and takes records as data: ``naptr_services`` (NAPTR order/preference, the services we
support), ``order_srv`` (SRV priority, then RFC 2782 weighted random selection within a priority). The DNS
queries are at the edge: ``Locator`` asks dnspython's asyncio resolver (the system's resolv.conf, or the
name servers it is given). The core never sees a name it must resolve: it gets the list and tries each
target in turn when one times out or answers 503 (§4.3).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from sip.errors import SipError
from sip.transaction import Address
from sip.uri import SipUri

__all__ = ["LocateError", "Locator", "Naptr", "Srv", "is_ip", "naptr_services", "order_srv"]

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: RFC 3263 §4.1 NAPTR services and the SRV prefix of each transport (RFC 3263 §4.1, RFC 5630 for sips).
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


class LocateError(SipError, LookupError):
    """A SIP URI's host resolves to no target; ``not_found`` when DNS said so (NXDOMAIN, no address),
    not when it failed to answer (then a later try may work)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def naptr_services(records: Iterable[Naptr], transports: Sequence[str], sips: bool) -> list[tuple[str, str]]:
    """§4.1: the (transport, SRV name) of the NAPTR records we can use, lowest order then preference first.

    Only "s" records of a SIP service whose transport we have count; a ``sips`` URI takes only SIPS+D2T.
    """
    usable = []
    for r in records:
        transport = NAPTR_SERVICES.get(r.service.upper())
        if r.flags.lower() != "s" or transport not in transports or (sips and transport != "tls"):
            continue
        usable.append((r.order, r.preference, transport, r.replacement.rstrip(".")))
    usable.sort(key=lambda u: (u[0], u[1]))
    return [(transport, name) for _, _, transport, name in usable]


def order_srv(records: Iterable[Srv], rng: random.Random | None = None) -> list[Srv]:
    """RFC 2782: by priority (lowest first); within one, weighted random selection (weight 0 rarely first).

    A single record whose target is "." says the service is not offered there: the result is empty.
    """
    rng = rng or random.Random()
    records = [r for r in records if r.target.rstrip(".")]
    out: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        # RFC 2782: weight 0 first in the list, so that they are picked only when the running sum is 0
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


class Locator:
    """RFC 3263 §4 over DNS (dnspython, asyncio): ``await locate(uri)`` → targets to try in order.

    ``nameservers`` ((ip, port) pairs) replace the system's resolv.conf (tests run their own server) and
    answer A/AAAA too; without them addresses come from the system's resolver (``getaddrinfo``: /etc/hosts,
    nsswitch), as before RFC 3263 support. ``rng`` makes SRV weight selection reproducible. Answers are
    cached for their TTL.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        rng: random.Random | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.system = not nameservers
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:  # no resolv.conf: SRV/NAPTR lookups fail alone
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.lifetime = timeout
        resolver.cache = dns.resolver.Cache()
        self.resolver = resolver
        self.rng = rng or random.Random()

    async def locate(
        self, uri: SipUri | str, transports: Sequence[str] = ("udp", "tcp"), *, ipv6: bool = False
    ) -> list[Address]:
        """The targets for ``uri`` in the order to try them (§4.1, §4.2); ``transports`` are the ones we
        have, in our order of preference; ``ipv6`` asks for AAAA records (else A).

        Raises ``LocateError`` naming the host when nothing usable resolves.
        """
        uri = SipUri.parse(uri) if isinstance(uri, str) else uri
        sips = uri.scheme == "sips"
        host = uri.params.get("maddr") or uri.host_ip
        host = host.strip("[]") if host else host
        transport = uri.transport or ("tls" if sips else None)
        if transport is not None and transport not in DEFAULT_PORTS:
            raise LocateError(f"{uri}: unsupported transport {transport!r}")
        if is_ip(host):  # §4.1: a numeric host is used as is
            transport = transport or "udp"
            return [(transport, host, uri.port or DEFAULT_PORTS[transport])]
        if uri.port is not None:  # §4.2: an explicit port: A/AAAA only
            transport = transport or "udp"
            return [(transport, ip, uri.port) for ip in await self._addresses(host, ipv6, required=True)]
        try:
            targets = await self._srv_targets(host, transport, transports, sips, ipv6)
        except LocateError as exc:
            if not self.system:
                raise
            # the system's resolver may still know the name (/etc/hosts): as before RFC 3263 support
            log.warning("%s; resolving %s with the system's resolver", exc, host)
            targets = []
        if targets:
            log.debug("%s resolves to %s", uri, targets)
            return targets
        # §4.2: no SRV: A/AAAA at the default port of the transport (UDP unless the URI says otherwise)
        if transport is None:
            transport = "udp" if "udp" in transports or not transports else transports[0]
        return [(transport, ip, DEFAULT_PORTS[transport]) for ip in await self._addresses(host, ipv6, True)]

    async def _srv_targets(
        self, host: str, transport: str | None, transports: Sequence[str], sips: bool, ipv6: bool
    ) -> list[Address]:
        """§4.1 and §4.2 with SRV: NAPTR (unless the URI names its transport), then SRV, then addresses."""
        if transport is not None:
            services = [(transport, f"{SRV_PREFIX[transport]}.{host}")]
        else:
            naptr = await self._naptr(host)
            services = naptr_services(naptr, transports, sips)
            if naptr and not services:
                log.info("NAPTR of %s names no transport we have (%s)", host, ", ".join(transports))
            if not services:  # §4.1: no NAPTR: SRV for each transport we support
                services = [(t, f"{SRV_PREFIX[t]}.{host}") for t in transports if not sips or t == "tls"]
        targets: list[Address] = []
        for tr, name in services:
            for srv in order_srv(await self._srv(name), self.rng):
                for ip in await self._addresses(srv.target.rstrip("."), ipv6, required=False):
                    targets.append((tr, ip, srv.port))
        return targets

    async def _query(self, name: str, rdtype: str) -> list[object] | None:
        """The records of ``name``; None for NXDOMAIN, [] for no such records; ``LocateError`` when DNS
        fails (no answer, SERVFAIL)."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise LocateError(f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc
        return list(answer)

    async def _naptr(self, host: str) -> list[Naptr]:
        return [
            Naptr(r.order, r.preference, r.flags.decode(), r.service.decode(), r.replacement.to_text())
            for r in await self._query(host, "NAPTR") or ()  # type: ignore[attr-defined]
        ]

    async def _srv(self, name: str) -> list[Srv]:
        return [
            Srv(r.priority, r.weight, r.port, r.target.to_text())
            for r in await self._query(name, "SRV") or ()  # type: ignore[attr-defined]
        ]

    async def _addresses(self, host: str, ipv6: bool, required: bool) -> list[str]:
        ips: list[str] = []
        nxdomain = False
        if self.system:
            return await self._getaddrinfo(host, ipv6, required)
        for rdtype in ("AAAA", "A") if ipv6 else ("A",):
            records = await self._query(host, rdtype)
            nxdomain = records is None
            ips += [r.address for r in records or ()]  # type: ignore[attr-defined]
        if not ips and required:
            why = "no such domain (NXDOMAIN)" if nxdomain else "no address record"
            raise LocateError(f"cannot resolve {host}: {why}", not_found=True)
        if not ips:
            log.info("SRV target %s has no address", host)
        return ips

    @staticmethod
    async def _getaddrinfo(host: str, ipv6: bool, required: bool) -> list[str]:
        family = socket.AF_UNSPEC if ipv6 else socket.AF_INET
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
        except OSError as exc:
            if required:
                not_found = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
                raise LocateError(f"cannot resolve {host}: {exc}", not_found=not_found) from exc
            log.info("SRV target %s has no address: %s", host, exc)
            return []
        ips = [str(i[4][0]) for i in infos]
        if ipv6:  # IPv6 first, as the AAAA-then-A order of the DNS path
            ips.sort(key=lambda ip: ":" not in ip)
        return list(dict.fromkeys(ips))

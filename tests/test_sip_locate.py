"""RFC 3263 §4: the ordered targets of a SIP URI from NAPTR, SRV (priority, weight) and A records.

The ordering is tested as pure functions, the lookups against dnsmasq run by the test on 127.0.0.1.
Failover between the targets is in tests/test_sip_failover.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sip.locate import LocateError, Locator, Naptr, Srv, naptr_services, order_srv
from tests.peers import dnsmasq as dm
from tests.peers.dnsmasq import dnsmasq, host, naptr, srv
from tests.serve_process import free_port

needs_dnsmasq = pytest.mark.skipif(not dm.available(), reason="dnsmasq is not installed (scripts/setup.sh)")


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 60))


# --------------------------------------------------------------------------------- ordering (pure)


def test_srv_order_is_by_priority_first() -> None:
    records = [Srv(20, 100, 5062, "b."), Srv(10, 0, 5061, "a."), Srv(30, 5, 5063, "c.")]
    for seed in range(20):
        assert [r.port for r in order_srv(records, random.Random(seed))] == [5061, 5062, 5063]


def test_srv_weights_spread_as_rfc_2782_says() -> None:
    """Within a priority, a target comes first with probability weight / sum (seeded: never flaky)."""
    records = [Srv(10, 60, 1, "a."), Srv(10, 30, 2, "b."), Srv(10, 10, 3, "c."), Srv(20, 99, 4, "d.")]
    rng = random.Random(3263)
    firsts: Counter[int] = Counter()
    for _ in range(10_000):
        ordered = order_srv(records, rng)
        assert sorted(r.port for r in ordered[:3]) == [1, 2, 3] and ordered[3].port == 4
        firsts[ordered[0].port] += 1
    assert 5700 < firsts[1] < 6300 and 2700 < firsts[2] < 3300 and 800 < firsts[3] < 1200


def test_srv_weight_zero_is_chosen_rarely_and_dot_means_no_service() -> None:
    records = [Srv(10, 0, 1, "zero."), Srv(10, 1000, 2, "heavy.")]
    rng = random.Random(1)
    firsts = Counter(order_srv(records, rng)[0].port for _ in range(2000))
    assert firsts[2] > 1980  # weight 0 comes first only when the draw is exactly 0
    assert order_srv([Srv(0, 0, 0, ".")], rng) == []


def test_naptr_services_sorted_and_filtered() -> None:
    records = [
        Naptr(20, 10, "S", "SIP+D2U", "_sip._udp.example.test."),
        Naptr(10, 20, "S", "SIP+D2T", "_sip._tcp.example.test."),
        Naptr(10, 10, "S", "SIPS+D2T", "_sips._tcp.example.test."),
        Naptr(5, 10, "S", "SIP+D2S", "_sip._sctp.example.test."),  # SCTP: not ours
        Naptr(5, 10, "U", "E2U+sip", "!^.*$!sip:x@y!"),  # not an "s" record
    ]
    assert naptr_services(records, ("udp", "tcp"), sips=False) == [
        ("tcp", "_sip._tcp.example.test"),
        ("udp", "_sip._udp.example.test"),
    ]
    assert naptr_services(records, ("udp", "tcp", "tls"), sips=False)[0] == ("tls", "_sips._tcp.example.test")
    assert naptr_services(records, ("udp", "tcp", "tls"), sips=True) == [("tls", "_sips._tcp.example.test")]


# --------------------------------------------------------------------------------- lookups (dnsmasq)


def locate(server: tuple[str, int], uri: str, transports: tuple[str, ...] = ("udp", "tcp"), seed: int = 0):
    async def go() -> Any:
        return await Locator([server], rng=random.Random(seed)).locate(uri, transports)

    return run(go)


@needs_dnsmasq
def test_naptr_srv_a_chain(tmp_path: Path) -> None:
    records = [
        naptr("pbx.test", 10, 10, "SIP+D2T", "_sip._tcp.pbx.test"),
        naptr("pbx.test", 20, 10, "SIP+D2U", "_sip._udp.pbx.test"),
        srv("_sip._tcp.pbx.test", "edge1.pbx.test", 5070, 10),
        srv("_sip._udp.pbx.test", "edge2.pbx.test", 5080, 10),
        srv("_sip._udp.pbx.test", "edge3.pbx.test", 5090, 20),
        host("edge1.pbx.test", "127.0.0.11"),
        host("edge2.pbx.test", "127.0.0.12"),
        host("edge3.pbx.test", "127.0.0.13"),
    ]
    with dnsmasq(records, tmp_path / "dns.log") as server:
        assert locate(server, "sip:fax@pbx.test") == [
            ("tcp", "127.0.0.11", 5070), ("udp", "127.0.0.12", 5080), ("udp", "127.0.0.13", 5090),
        ]  # fmt: skip
        # a UA without TCP skips the TCP NAPTR; ;transport=udp goes straight to the SRV
        assert locate(server, "sip:fax@pbx.test", ("udp",))[0] == ("udp", "127.0.0.12", 5080)
        assert locate(server, "sip:fax@pbx.test;transport=udp")[0] == ("udp", "127.0.0.12", 5080)
        # an explicit port: A only, no NAPTR or SRV (§4.2)
        assert locate(server, "sip:fax@edge1.pbx.test:6000") == [("udp", "127.0.0.11", 6000)]
    log = (tmp_path / "dns.log").read_text()
    assert "query[NAPTR] pbx.test" in log and "query[SRV] _sip._udp.pbx.test" in log


@needs_dnsmasq
def test_srv_without_naptr_and_weights_over_many_lookups(tmp_path: Path) -> None:
    records = [
        srv("_sip._udp.trunk.test", "a.trunk.test", 5061, 10, 75),
        srv("_sip._udp.trunk.test", "b.trunk.test", 5062, 10, 25),
        srv("_sip._udp.trunk.test", "c.trunk.test", 5063, 20, 0),
        host("a.trunk.test", "127.0.0.21"),
        host("b.trunk.test", "127.0.0.22"),
        host("c.trunk.test", "127.0.0.23"),
    ]

    async def many(server: tuple[str, int]) -> Counter[int]:
        locator = Locator([server], rng=random.Random(2782))
        firsts: Counter[int] = Counter()
        for _ in range(400):
            targets = await locator.locate("sip:fax@trunk.test", ("udp",))
            assert sorted(t[2] for t in targets[:2]) == [5061, 5062]
            assert targets[2] == ("udp", "127.0.0.23", 5063)
            firsts[targets[0][2]] += 1
        return firsts

    with dnsmasq(records, tmp_path / "dns.log") as server:
        firsts = run(many, server)
    assert 260 < firsts[5061] < 340 and firsts[5061] + firsts[5062] == 400


@needs_dnsmasq
def test_no_srv_falls_back_to_a_at_5060_and_nxdomain_names_the_name(tmp_path: Path) -> None:
    with dnsmasq([host("plain.test", "127.0.0.31")], tmp_path / "dns.log") as server:
        assert locate(server, "sip:fax@plain.test") == [("udp", "127.0.0.31", 5060)]
        assert locate(server, "sip:fax@plain.test;transport=tcp") == [("tcp", "127.0.0.31", 5060)]
        assert locate(server, "sips:fax@plain.test", ("udp", "tcp", "tls")) == [("tls", "127.0.0.31", 5061)]
        with pytest.raises(LocateError, match=r"nosuch\.test.*NXDOMAIN") as err:
            locate(server, "sip:fax@nosuch.test")
        assert err.value.not_found


def test_an_ip_literal_needs_no_dns() -> None:
    dead = ("127.0.0.1", free_port())  # nothing answers DNS there: a query would fail
    assert locate(dead, "sip:fax@127.0.0.1") == [("udp", "127.0.0.1", 5060)]
    assert locate(dead, "sip:fax@[::1]:5070;transport=tcp") == [("tcp", "::1", 5070)]

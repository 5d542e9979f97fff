"""Shared fixtures: real SIP peers (Kamailio, pjsua2) started and stopped per test.

Any fixture value with a ``failure_report() -> list[tuple[str, str]]`` method gets those sections
(logs, recent events) attached to the report of a failing test, so a red CI run shows the peer's side.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers.browser import Browser, find_browser, start_driver
from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.peers.kamailio_dispatcher import DispatcherServer
from tests.peers.netns import TestNetwork, netns_allowed
from tests.peers.pjsua_client import PjsuaPeer
from tests.peers.postgres import PostgresServer, find_bindir


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and report.when in ("call", "setup", "teardown"):
        funcargs: dict[str, Any] = getattr(item, "funcargs", None) or {}
        for value in funcargs.values():
            failure_report = getattr(value, "failure_report", None)
            if callable(failure_report):
                try:
                    sections = failure_report()
                except Exception as exc:  # a broken report must not hide the real failure
                    sections = [("failure_report error", repr(exc))]
                for title, text in sections:
                    report.sections.append((title, text))
    return report


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[KamailioServer]:
    """Kamailio on 127.0.0.1 (free UDP+TCP port): registrar with digest auth, record-routing proxy.

    Users 1001..1004 with passwords ``secret<user>``, realm ``vfax.test``; see kamailio.cfg.tmpl.
    Teardown fails the test if Kamailio crashed or did not stop cleanly.
    """
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    server = KamailioServer(tmp_path / "kamailio").start()
    try:
        yield server
    finally:
        server.stop()


class PeerFactory:
    """``pjsua_peer("a", udp_port=0, ...)`` starts and initialises one pjsua2 process."""

    def __init__(self, root: Path):
        self.root = root
        self.peers: list[PjsuaPeer] = []

    def __call__(self, name: str = "peer", **init_args: Any) -> PjsuaPeer:
        peer = PjsuaPeer.start(self.root / f"pjsua-{name}", name)
        self.peers.append(peer)
        peer.init(**init_args)
        return peer

    def close_all(self) -> None:
        for peer in self.peers:
            peer.close()

    def failure_report(self) -> list[tuple[str, str]]:
        return [section for peer in self.peers for section in peer.failure_report()]


@pytest.fixture
def pjsua_peer(tmp_path: Path) -> Iterator[Callable[..., PjsuaPeer]]:
    """Factory of independent pjsua2 user agents, each in its own process, all killed at teardown."""
    if importlib.util.find_spec("pjsua2") is None:
        pytest.skip("pjsua2 is not installed (pip install pjsua2-python)")
    factory = PeerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()


def _missing(what: str) -> None:
    """CI installs every peer (scripts/setup.sh --test): there a missing one fails; elsewhere it skips."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must have it: scripts/setup.sh --test installs it)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def browser_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless chromium (Selenium + chromium-driver) for the whole session: starting it costs ~1 s."""
    found = find_browser()
    if isinstance(found, str):
        _missing(found)
    assert not isinstance(found, str)
    driver = start_driver(*found, tmp_path_factory.mktemp("chromium") / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(browser_driver: Any, tmp_path: Path) -> Iterator[Browser]:
    """The shared browser with no cookies, writing a screenshot per page visited into <tmp>/screens."""
    page = Browser(browser_driver, tmp_path / "screens")
    page.reset()
    try:
        yield page
    finally:
        page.reset()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server per test process (xdist worker), on 127.0.0.1 and a free port."""
    if find_bindir() is None:
        _missing("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    if importlib.util.find_spec("psycopg") is None:
        _missing("psycopg is not installed (pip install -e .)")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@dataclass
class PostgresDatabase:
    """A fresh database of the shared test server; ``server`` may be stopped, killed and started again."""

    server: PostgresServer
    url: str

    def failure_report(self) -> list[tuple[str, str]]:
        return self.server.failure_report()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresDatabase:
    """An empty database of its own for each test (the server is shared; a test that stops it starts it
    again before it ends, and this fixture restarts it if a test did not)."""
    postgres_server.start()
    return PostgresDatabase(postgres_server, postgres_server.create_database(f"t_{secrets.token_hex(6)}"))


class TestNetworks:
    """``test_network(["kam", "node1", ...])`` makes a private network (tests/peers/netns.py); all closed
    at teardown, also when the test failed."""

    __test__ = False

    def __init__(self) -> None:
        self.networks: list[TestNetwork] = []

    def __call__(self, names: list[str]) -> TestNetwork:
        network = TestNetwork(names, allow_netns=netns_allowed())
        self.networks.append(network)
        return network

    def close_all(self) -> None:
        for network in reversed(self.networks):
            network.close()

    def failure_report(self) -> list[tuple[str, str]]:
        return [section for network in self.networks for section in network.failure_report()]


@pytest.fixture
def test_network() -> Iterator[TestNetworks]:
    """Factory of private networks: one namespace per host (root, iproute2), else 127.0.0.x with the
    reason printed and warned. VFAX_TEST_NETNS=0 forces the fallback."""
    factory = TestNetworks()
    try:
        yield factory
    finally:
        factory.close_all()


class Dispatchers:
    """``kamailio_dispatcher(host=..., udp_port=..., nodes=[...], pbxs=[...], prefix=..., probe_from=...)``
    starts Kamailio on lab/cluster/kamailio.cfg (tests/peers/kamailio_dispatcher.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[DispatcherServer] = []

    def __call__(self, **kwargs: Any) -> DispatcherServer:
        server = DispatcherServer(self.root / f"dispatcher-{len(self.servers) + 1}", **kwargs)
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> None:
        errors = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # stop every one, then fail with what went wrong
                errors.append(exc)
        if errors:
            raise errors[0]

    def failure_report(self) -> list[tuple[str, str]]:
        return [section for server in self.servers for section in server.failure_report()]


@pytest.fixture
def kamailio_dispatcher(tmp_path: Path) -> Iterator[Dispatchers]:
    """Factory of Kamailio dispatchers running the lab's cluster config; teardown fails on a crash."""
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    factory = Dispatchers(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()

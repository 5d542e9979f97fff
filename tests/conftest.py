"""Shared fixtures: real SIP peers (Kamailio, pjsua2) started and stopped per test.

Any fixture value with a ``failure_report() -> list[tuple[str, str]]`` method gets those sections
(logs, recent events) attached to the report of a failing test, so a red CI run shows the peer's side.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.peers.pjsua_client import PjsuaPeer


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

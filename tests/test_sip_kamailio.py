"""Our user agent against a real Kamailio (registrar with digest auth, record-routing proxy) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sip.registration import Registration, RegistrationState
from sip.useragent import CallSession, IncomingInvite, UserAgent
from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.test_sip_core import SDP_A, SDP_B
from vfax.cli.sip import options_command, register_command


def run(fn: Callable[[], Awaitable[Any]], limit: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), limit))


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("register")(register_command)
    app.command("options")(options_command)
    return app


def test_register_with_digest_then_unregister(kamailio: KamailioServer) -> None:
    async def main() -> None:
        ua = await UserAgent.create(contact_user="1001")
        reg = Registration(ua, kamailio.uri, "1001", "secret1001", expires=120, domain=kamailio.realm)
        result = await reg.start()
        assert result.status == 200 and reg.state is RegistrationState.REGISTERED
        assert 0 < reg.expires <= 120
        assert any(str(ua.local_address[1]) in c for c in kamailio.registered_contacts("1001"))
        await reg.stop()
        assert kamailio.registered_contacts("1001") == []
        await ua.close()

    run(main)


async def _until(predicate: Callable[[], bool], limit: float = 30.0) -> bool:
    """Poll ``predicate`` every 50 ms; False if it never held within ``limit`` seconds (a test hang guard)."""
    for _ in range(int(limit / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def test_keepalive_notices_a_dead_registrar_and_registers_again_when_it_returns(
    kamailio: KamailioServer, tmp_path: Path
) -> None:
    """Issue 12.7: a registrar that stops answering the keep-alive OPTIONS ends "registered" long before the
    binding's expiry (3600 s here, so no refresh happens in this test); once it answers again, we register."""
    port = kamailio.udp_port
    states: list[RegistrationState] = []

    async def main() -> None:
        ua = await UserAgent.create(contact_user="1001")
        reg = Registration(ua, kamailio.uri, "1001", "secret1001", expires=3600, domain=kamailio.realm,
                           keepalive_interval=0.2, keepalive="options")  # fmt: skip
        assert (await reg.start()).ok
        assert await _until(lambda: "rx OPTIONS" in kamailio.log_text())  # the keep-alives flow
        assert reg.state is RegistrationState.REGISTERED
        kamailio.stop()
        assert await _until(lambda: reg.state is not RegistrationState.REGISTERED), "still registered"
        states.append(reg.state)
        assert reg.last_result is not None and not reg.last_result.ok
        again = KamailioServer(tmp_path / "kamailio-again", udp_port=port, tcp_port=port).start()
        try:
            assert await _until(lambda: reg.state is RegistrationState.REGISTERED), reg.state
            assert again.registered_contacts("1001")
            await reg.stop()
            await ua.close()
        finally:
            again.stop()

    run(main, 90)
    assert states == [RegistrationState.FAILED]


def test_register_over_tcp(kamailio: KamailioServer) -> None:
    async def main() -> None:
        ua = await UserAgent.create(transports=("tcp",), contact_user="1003")
        reg = Registration(ua, kamailio.tcp_uri, "1003", "secret1003", domain=kamailio.realm)
        assert (await reg.start()).ok
        await reg.stop()
        await ua.close()

    run(main)


def test_wrong_password_reports_the_failure(kamailio: KamailioServer) -> None:
    async def main() -> None:
        ua = await UserAgent.create()
        reg = Registration(ua, kamailio.uri, "1001", "not-the-password", domain=kamailio.realm)
        result = await reg.start()
        assert result.status == 401 and not result.ok
        assert reg.state is RegistrationState.FAILED
        await reg.stop()
        await ua.close()

    run(main)


def test_call_through_the_proxy_keeps_in_dialog_requests_on_the_record_route(
    kamailio: KamailioServer,
) -> None:
    async def main() -> None:
        a = await UserAgent.create(contact_user="1001")
        b = await UserAgent.create(contact_user="1002")
        reg_b = Registration(b, kamailio.uri, "1002", "secret1002", domain=kamailio.realm)
        assert (await reg_b.start()).ok
        sessions: list[CallSession] = []

        async def handler(incoming: IncomingInvite) -> None:
            assert incoming.source[2] == kamailio.udp_port  # it came through the proxy
            await incoming.ringing()
            session = await incoming.accept(SDP_B)

            async def on_reinvite(sdp: bytes) -> tuple[int, bytes]:
                return 200, SDP_B.replace(b"1 1", b"1 2")

            session.on_reinvite = on_reinvite
            sessions.append(session)

        b.on_invite = handler
        result = await a.invite(
            f"sip:1002@{kamailio.realm}", SDP_A, proxy=kamailio.uri, credentials=("1001", "secret1001"),
            from_=f"<sip:1001@{kamailio.realm}>",
        )  # fmt: skip
        assert result.ok, (result.status, result.reason)
        session = result.session
        assert session is not None and session.dialog is not None
        assert session.dialog.route_set, "Kamailio's Record-Route is the route set"
        assert session.dialog.next_hop().port == kamailio.udp_port
        await asyncio.wait_for(sessions[0].confirmed, 5)
        assert sessions[0].dialog is not None and sessions[0].dialog.route_set
        outcome = await session.reinvite(SDP_A.replace(b"1 1", b"1 2"))
        assert outcome.ok
        # and a re-INVITE from the callee, back through the proxy
        back = await sessions[0].reinvite(SDP_B.replace(b"1 1", b"1 3"))
        assert back.status == 488  # the caller has no on_reinvite handler: refused, call kept
        assert (await sessions[0].bye()).status == 200  # type: ignore[union-attr]
        assert await session.wait_terminated(5) == "remote BYE"
        await reg_b.stop()
        await a.close()
        await b.close()

    run(main)
    log = kamailio.log_text()
    assert "rx BYE" in log and "rx INVITE" in log  # in-dialog requests went via the proxy


def test_cli_register_prints_status_and_unregisters(kamailio: KamailioServer) -> None:
    result = CliRunner().invoke(
        cli(),
        ["register", "--server", f"127.0.0.1:{kamailio.udp_port}", "--user", "1004",
         "--password", "secret1004", "--domain", kamailio.realm, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == 200 and data["registered"] and data["unregistered"]
    assert data["expires"] > 0 and data["contact"].startswith("sip:1004@") and data["rtt_ms"] >= 0
    assert kamailio.registered_contacts("1004") == []


def test_cli_register_with_wrong_password_exits_nonzero_with_sip_status(kamailio: KamailioServer) -> None:
    result = CliRunner().invoke(
        cli(),
        ["register", "--server", f"127.0.0.1:{kamailio.udp_port}", "--user", "1004", "--password", "bad",
         "--transport", "tcp"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "SIP 401" in result.output


def test_cli_options_pings_the_proxy(kamailio: KamailioServer) -> None:
    result = CliRunner().invoke(cli(), ["options", kamailio.uri, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == 200


@pytest.fixture
def challenging_registrar(tmp_path: Path) -> Iterator[KamailioServer]:
    """Kamailio that challenges OPTIONS to itself with 401, as Asterisk does by default."""
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    server = KamailioServer(tmp_path / "kamailio", challenge_options=True).start()
    try:
        yield server
    finally:
        server.stop()


def test_cli_options_answers_the_401_with_credentials(challenging_registrar: KamailioServer) -> None:
    kam = challenging_registrar
    args = ["options", kam.uri, "--user", "1001", "--password", "secret1001", "--json"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == 200 and data["reachable"] is True and data["authorized"] is True
    assert data["challenged"] is True  # the 401 was answered with a new request carrying Authorization


def test_cli_options_password_from_the_environment(challenging_registrar: KamailioServer) -> None:
    kam = challenging_registrar
    env = {"VFAX_SIP_PASSWORD": "secret1002"}
    result = CliRunner().invoke(cli(), ["options", kam.uri, "--user", "1002"], env=env)
    assert result.exit_code == 0, result.output
    assert "200 OK" in result.output and "reachable" in result.output


@pytest.mark.parametrize("credentials", [[], ["--user", "1001", "--password", "wrong"]])
def test_cli_options_says_reachable_but_not_authorized(
    challenging_registrar: KamailioServer, credentials: list[str]
) -> None:
    kam = challenging_registrar
    result = CliRunner().invoke(cli(), ["options", kam.uri, *credentials, "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["status"] == 401 and data["reachable"] is True and data["authorized"] is False
    text = CliRunner().invoke(cli(), ["options", kam.uri, *credentials])
    assert text.exit_code == 1
    assert "reachable" in text.output and "not authorized" in text.output and "401" in text.output


def test_cli_options_no_answer_is_not_reachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = CliRunner().invoke(cli(), ["options", f"sip:127.0.0.1:{port}", "--timeout", "1", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["reachable"] is False and data["authorized"] is None


def test_invites_only_from_the_registrar_when_asked(kamailio: KamailioServer) -> None:
    async def main() -> None:
        a = await UserAgent.create("127.0.0.1", contact_user="1001")
        b = await UserAgent.create("127.0.0.1", contact_user="1002")
        reg = Registration(b, kamailio.uri, "1002", "secret1002", domain=kamailio.realm)
        reg.invites_only_from_registrar = True
        assert (await reg.start()).ok
        assert b.core.config.invite_allow_list == frozenset({"127.0.0.1"})  # the registrar's address

        async def accept(incoming: IncomingInvite) -> None:
            await incoming.accept(SDP_B)

        b.on_invite = accept
        direct = await a.invite(f"sip:1002@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert direct.status == 200  # 127.0.0.1 is the registrar's address too: allowed
        assert direct.session is not None
        await direct.session.bye()
        b.core.config.invite_allow_list = frozenset({"192.0.2.1"})  # only a stranger's address
        refused = await a.invite(f"sip:1002@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert refused.status == 403
        await reg.stop()
        await a.close()
        await b.close()

    run(main)


def test_register_through_an_outbound_proxy(kamailio: KamailioServer) -> None:
    async def main() -> None:
        ua = await UserAgent.create(contact_user="1002")
        reg = Registration(ua, f"sip:{kamailio.realm}", "1002", "secret1002", proxy=kamailio.uri)
        result = await reg.start()  # the registrar's name does not resolve: only the proxy makes this work
        assert result.ok, (result.status, result.reason)
        assert kamailio.registered_contacts("1002")
        await reg.stop()
        await ua.close()

    run(main)

"""SIP trunks (issue 14 item 2): outbound proxy, caller identity, dialling telephone numbers.

Unit level: the dial plan, display-name quoting, P-Asserted-Identity and the checks of configured values.
Over sockets: a line's INVITE reaches a user agent standing as its outbound proxy (located by DNS through
dnsmasq) with the destination as Request-URI and a pre-loaded ``Route: <proxy;lr>``. End to end:
`vfax send` through Kamailio as outbound proxy to a `vfax receive` addressed by its own URI, which
registered through the same Kamailio (as proxy and, honestly, also as the registrar behind it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from sip.identity import CallerIdentity, IdentityError
from sip.message import Request
from sip.uri import NameAddr
from sip.useragent import IncomingInvite, UserAgent
from tests import docfactory
from tests.peers import dnsmasq as dm
from tests.peers.dnsmasq import dnsmasq, host, srv
from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.test_cli_fax import finish, free_udp_port, start_receiver, vfax, wait_listening
from vfax.call.dialing import BadDestination, DialPlan, dial_uri
from vfax.call.line import FaxLine, LineConfig
from vfax.documents import Resolution, prepare_fax_tiff

needs_dnsmasq = pytest.mark.skipif(not dm.available(), reason="dnsmasq is not installed (scripts/setup.sh)")
needs_kamailio = pytest.mark.skipif(find_kamailio() is None, reason="kamailio is not installed")


# --- dialling numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "plan", "expected"),
    [
        ("+49 (30) 123-456", DialPlan(), "sip:+4930123456@carrier.example"),
        ("+49 (30) 123-456", DialPlan(prefix="00"), "sip:004930123456@carrier.example"),
        ("+4930123456", DialPlan(prefix="00", user_phone=True),
         "sip:004930123456@carrier.example;user=phone"),
        ("+4930123456", DialPlan(prefix="", user_phone=True), "sip:4930123456@carrier.example;user=phone"),
        ("tel:+49-30-123456", DialPlan(user_phone=True), "sip:+4930123456@carrier.example;user=phone"),
        ("030/123 456", DialPlan(prefix="00"), "sip:030123456@carrier.example"),
        ("*97", DialPlan(user_phone=True), "sip:*97@carrier.example"),
        ("#1", DialPlan(), "sip:%231@carrier.example"),
        ("fax-room", DialPlan(user_phone=True), "sip:fax-room@carrier.example"),
        ("sip:+4930123@elsewhere.example", DialPlan(prefix="00", user_phone=True),
         "sip:+4930123@elsewhere.example"),
    ],
)  # fmt: skip
def test_numbers_are_normalised_and_dialled_by_the_plan(to: str, plan: DialPlan, expected: str) -> None:
    assert dial_uri(to, "carrier.example", "trunk", plan) == expected


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("call me maybe", "neither a SIP URI, a telephone number nor an extension"),
        ("+49 30 abc", "neither"),
        ("++4930", "neither"),
        ("fax@pbx.example", "sip:fax@pbx.example"),
        ("+1234567890123456", "at most 15"),
        ("tel:+4930;phone-context=x", "give the number"),
    ],
)
def test_what_is_not_a_number_uri_or_extension_is_refused(to: str, message: str) -> None:
    with pytest.raises(BadDestination, match=re.escape(message)):
        dial_uri(to, "carrier.example", "trunk", DialPlan(prefix="00"))


def test_a_dial_prefix_must_be_digits_or_plus() -> None:
    with pytest.raises(ValueError, match="dial prefix"):
        DialPlan(prefix="0x")


# --- caller identity ----------------------------------------------------------------------------------


def test_display_names_are_quoted_with_escapes() -> None:
    identity = CallerIdentity(name='Fax "Büro" \\ 1', user="+4930123")
    from_ = identity.from_address("vfax", "carrier.example")
    assert from_ is not None
    assert str(from_) == '"Fax \\"Büro\\" \\\\ 1" <sip:+4930123@carrier.example>'
    parsed = NameAddr.parse(str(from_))  # what the callee's parser makes of it
    assert parsed.display == 'Fax "Büro" \\ 1' and parsed.uri.user == "+4930123"


def test_p_asserted_identity_carries_the_name_and_the_uri() -> None:
    assert CallerIdentity(name="Fax", asserted="sip:+4930123@carrier").headers() == [
        ("P-Asserted-Identity", '"Fax" <sip:+4930123@carrier>')
    ]
    tel = CallerIdentity(asserted="tel:+49-30-123")
    assert tel.headers() == [("P-Asserted-Identity", "<tel:+49-30-123>")]
    assert CallerIdentity(name="Fax").headers() == []
    assert CallerIdentity(asserted="tel:+4930123").from_address("vfax", "h") is None  # From left alone


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Fax\r\nX-Evil: 1", "control characters"),
        ("name", "   ", "empty"),
        ("name", "x" * 101, "at most 100"),
        ("user", "+49 30", "user part"),
        ("user", "a@b", "user part"),
        ("asserted", "mailto:fax@example.com", "sip:, sips: or tel:"),
        ("asserted", '"Fax" <sip:1@h>', "sip:, sips: or tel:"),
        ("asserted", "sip:carrier.example", "names a user"),
        ("asserted", "tel:4930123", "global number"),
        ("asserted", "sip:1@h>evil", "not a valid SIP URI"),
    ],
)
def test_values_that_cannot_be_written_safely_are_refused(field: str, value: str, message: str) -> None:
    with pytest.raises(IdentityError, match=re.escape(message)) as info:
        CallerIdentity(**{field: value})
    assert info.value.field == field


# --- the INVITE on the wire: through an outbound proxy located by DNS --------------------------------


def tiff(tmp: Path) -> Path:
    src = docfactory.text_pdf(tmp / "d.pdf", pages=1)
    return prepare_fax_tiff(src, tmp / "s.tif", resolution=Resolution.STANDARD).path


@needs_dnsmasq
def test_invite_goes_to_the_outbound_proxy_with_a_route_and_the_destination_unchanged(tmp_path: Path) -> None:
    """The line's outbound proxy is a name (SRV in dnsmasq) whose target is a user agent that records
    what reaches it; the destination's domain does not resolve, so only the proxy can have been used."""
    doc = tiff(tmp_path)

    async def main() -> tuple[Request, int | None, Request | None]:
        hop = await UserAgent.create("127.0.0.1", 0, ("udp",), contact_user="proxy")
        seen: list[Request] = []

        async def refuse(incoming: IncomingInvite) -> None:
            seen.append(incoming.request)
            await incoming.reject(486, "Busy Here")

        hop.on_invite = refuse
        sbc = hop.local_address[1]
        records = [srv("_sip._udp.proxy.test", "sbc.proxy.test", sbc), host("sbc.proxy.test")]
        with dnsmasq(records, tmp_path / "dns.log") as (ip, port):
            line = await FaxLine.open(LineConfig(
                name="trunk", server="carrier.invalid", outbound_proxy="proxy.test",
                nameservers=((ip, port),),
                caller=CallerIdentity(name="Fax Büro", user="+4930123", asserted="tel:+4930123"),
                dial=DialPlan(prefix="00", user_phone=True),
            ))  # fmt: skip
            try:
                outcome = await line.send(doc, "+49 (30) 123-456")
                override = CallerIdentity(user="+4930999")
                await line.send(doc, "sip:fax@elsewhere.invalid", caller=override)
            finally:
                await line.close()
                await hop.close()
        return seen[0], outcome.sip_status, seen[1] if len(seen) > 1 else None

    request, status, second = asyncio.run(asyncio.wait_for(main(), 60))
    assert status == 486
    assert str(request.uri) == "sip:004930123456@carrier.invalid;user=phone"  # the Request-URI stays
    assert request.headers.get_all("Route") == ["<sip:proxy.test;lr>"]  # RFC 3261 §8.1.2 pre-loaded route
    assert request.from_.display == "Fax Büro" and request.from_.uri.user == "+4930123"
    assert request.from_.uri.host == "carrier.invalid"
    assert request.headers.get_all("P-Asserted-Identity") == ['"Fax Büro" <tel:+4930123>']
    assert second is not None and str(second.uri) == "sip:fax@elsewhere.invalid"
    assert second.from_.uri.user == "+4930999" and second.from_.display == "Fax Büro"  # the line's name



# --- end to end through Kamailio ---------------------------------------------------------------------


@needs_kamailio
def test_register_through_an_outbound_proxy_from_the_cli(kamailio: KamailioServer) -> None:
    """`vfax register --proxy`: the registrar's name (vfax.test) resolves nowhere; the REGISTER reaches
    it only because it goes to the proxy (Kamailio is both here, the registrar behind itself)."""
    result = vfax("register", "--server", f"sip:{kamailio.realm}", "--user", "1002", "--password",
                  kamailio.users["1002"], "--proxy", f"sip:{kamailio.host}:{kamailio.udp_port};transport=tcp",
                  "--json", timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    assert data["registered"] and data["unregistered"] and data["registrar"] == f"sip:{kamailio.realm}"
    realm = re.escape(kamailio.realm)
    assert re.search(rf"rx REGISTER sip:{realm} from tcp:127\.0\.0\.1:", kamailio.log_text())


@needs_kamailio
def test_fax_through_kamailio_as_outbound_proxy_shows_the_configured_caller(tmp_path: Path) -> None:
    """A SIP trunk end to end: `vfax send --proxy` (UDP; Kamailio trusts its address as a carrier trusts
    a peer, no digest) faxes a `vfax receive` addressed by its own URI; the receiver registered through the
    same Kamailio over TCP (proxy, and registrar behind it) and keeps checking it with OPTIONS."""
    send_port, rx_port = free_udp_port(), free_udp_port()
    kam = KamailioServer(tmp_path / "kamailio", trusted=[f"127.0.0.1:{send_port}"]).start()
    proxy = f"{kam.host}:{kam.udp_port}"
    rx = None
    try:
        rx = start_receiver(
            "--listen", f"127.0.0.1:{rx_port}", "--inbox", str(tmp_path / "inbox"), "--once", "--json",
            "--server", f"sip:{kam.realm}", "--proxy", f"sip:{proxy};transport=tcp", "--user", "1001",
            "--password", kam.users["1001"], "--keepalive", "1",
        )  # fmt: skip
        wait_listening(rx_port, rx)
        for _ in range(50):
            if kam.registered_contacts("1001"):
                break
            time.sleep(0.2)
        assert kam.registered_contacts("1001"), kam.log_tail()
        doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
        sent = vfax("send", str(doc), "--to", f"sip:fax@127.0.0.1:{rx_port}", "--proxy", proxy,
                    "--listen", f"127.0.0.1:{send_port}", "--from-name", 'Fax "Büro"',
                    "--from-user", "+49 30 123",
                    "--asserted-identity", "sip:+4930123@carrier.example", "--resolution", "standard",
                    "--report", str(tmp_path / "call.json"), "--json")  # fmt: skip
        code, out, err = finish(rx)
    finally:
        if rx is not None and rx.poll() is None:
            rx.kill()
        log = kam.log_text()
        kam.stop()
    assert sent.returncode == 0, sent.stderr + sent.stdout
    assert json.loads(sent.stdout)["ok"]
    assert code == 0, err
    received = json.loads(out.strip().splitlines()[-1])
    assert received["ok"] and received["pages"] == 1
    # the proxy got the INVITE with its pre-loaded Route and the receiver's URI as Request-URI
    target = f"sip:fax@127.0.0.1:{rx_port}"
    assert f"preloaded route <sip:{proxy};lr> on INVITE {target}" in log
    assert f"relay INVITE to foreign {target}" in log
    # ...and stayed in the dialog (Record-Route): the BYE went through it too
    call_id = json.loads((tmp_path / "call.json").read_text())["call_id"]
    assert re.search(rf"rx BYE \S+ from udp:127\.0\.0\.1:\d+ call-id {re.escape(call_id)}", log), log[-3000:]
    # the receiver registered and sent its keep-alives through the proxy, over TCP
    assert re.search(rf"rx REGISTER sip:{re.escape(kam.realm)} from tcp:127\.0\.0\.1:", log)
    assert re.search(rf"rx OPTIONS sip:{re.escape(kam.realm)} from tcp:127\.0\.0\.1:", log)
    # what the receiver saw and kept in its report: the caller as configured, the path through Kamailio
    caller = received["caller"]
    assert caller["name"] == 'Fax "Büro"' and caller["user"] == "+4930123"
    assert caller["asserted_identity"] == ['"Fax \\"Büro\\"" <sip:+4930123@carrier.example>']
    assert len(caller["via"]) == 2 and f"127.0.0.1:{kam.udp_port}" in caller["via"][0]
    assert caller["record_route"] and f"127.0.0.1:{kam.udp_port}" in caller["record_route"][0]
    report = json.loads(Path(received["report"]).read_text())
    assert report["caller"] == caller

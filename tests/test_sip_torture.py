"""RFC 4475 torture messages against our UA: the sans-I/O core, then a UserAgent over a real UDP socket.

Every message gets the answer RFC 3261 / RFC 4475 ask of a UAS (``tests/rfc4475.py`` lists them): valid
ones are processed, malformed requests whose request line and top Via can be read get 400 with a reason
that names the fault, responses that match nothing are dropped, and nothing crashes or leaks a call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.core import CoreConfig, IncomingCall, ReinviteResult, UserAgentCore
from sip.message import Response, UnparsedRequest, parse_message, salvage_request
from sip.useragent import IncomingInvite, UserAgent
from tests.rfc4475 import CASES, Case
from tests.test_sip_core import SDP_A, Net, answer_to, answered_call, raw_request

SOURCE = ("udp", "127.0.0.1", 5070)


def _core() -> UserAgentCore:
    core = UserAgentCore(CoreConfig(random_uniform=random.Random(1).uniform))
    core.local_addresses = {"udp": ("127.0.0.1", 5062)}
    return core


def _answers(core: UserAgentCore, raw: bytes) -> tuple[list[Response], list[IncomingCall]]:
    """Feed one datagram; the application answers any new call 486. Returns what went out and the calls."""
    core.receive_datagram(raw, SOURCE, 0.0)
    calls = [e for e in core.events() if isinstance(e, IncomingCall)]
    for event in calls:
        core.reject(event.call, 486, 0.0)
    out = []
    for data, dest in core.transmits():
        assert dest == SOURCE  # answers go back where the request came from
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append(msg)
    return out, calls


def _check_final(case: Case, final: Response) -> None:
    assert final.status == case.status, (case.name, final.status, final.reason)
    if case.reason:
        assert case.reason in final.reason.lower(), final.reason
    if case.header:
        name, fragment = case.header
        assert fragment in (final.headers.get(name) or ""), final.headers
    assert len(final.headers.get_all("Call-ID")) <= 1 and len(final.headers.get_all("CSeq")) <= 1


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rfc4475_message_gets_the_answer_the_rfc_asks(case: Case) -> None:
    core = _core()
    out, calls = _answers(core, case.raw)
    finals = [r for r in out if r.status >= 200]
    if case.status is None:
        assert out == [] and calls == []
        return
    assert len(finals) == 1, [(r.status, r.reason) for r in out]
    _check_final(case, finals[0])
    assert bool(calls) == case.call  # only valid INVITEs reach the application
    if not case.call:
        assert core.calls == {} and core.pending_uac == {}  # a refused request leaves no dialog behind
    core.handle_timers(100.0)
    assert core.transmits() == [] or all(parse_message(d) for d, _ in core.transmits())
    assert core.active_calls == 0


@pytest.mark.parametrize("case", [c for c in CASES if c.valid], ids=str)
def test_valid_rfc4475_message_parses(case: Case) -> None:
    msg = parse_message(case.raw)
    assert parse_message(bytes(msg)).start_line == msg.start_line


def test_quoted_pair_nul_in_display_name_is_kept() -> None:
    """RFC 4475 §3.1.1.2: a quoted-pair may escape any octet but CR and LF, NUL included (§25.1)."""
    intmeth = next(c for c in CASES if c.name == "intmeth")
    req = parse_message(intmeth.raw)
    assert req.to.display is not None and "\x00" in req.to.display
    with pytest.raises(ValueError, match="NUL"):
        parse_message(intmeth.raw.replace(b"NUL:\\\x00", b"NUL:\x00"))  # an unescaped NUL is still refused


def test_unparseable_request_is_answered_statelessly() -> None:
    """A 400 for a request we could not parse opens no transaction (a flood of them holds no memory)."""
    core = _core()
    clerr = next(c for c in CASES if c.name == "clerr")
    for _ in range(3):
        out, _calls = _answers(core, clerr.raw)
        assert [r.status for r in out] == [400]
    assert core.layer.servers == {} and core.calls == {}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([c.raw for c in CASES]), st.integers(0, 2000), st.binary(max_size=8))
def test_salvage_of_a_mangled_message_never_raises(raw: bytes, at: int, junk: bytes) -> None:
    broken = salvage_request(raw[:at] + junk + raw[at + len(junk) :], "mangled")
    assert broken is None or isinstance(broken, UnparsedRequest)


def test_malformed_ack_is_never_answered() -> None:
    core = _core()
    ack = raw_request("ACK").replace(b"Content-Length: 0", b"Content-Length: 99")
    assert _answers(core, ack) == ([], [])


def test_unknown_method_gets_501_and_known_unserved_method_405() -> None:
    net = Net()
    b = net.add(5062)
    resp = answer_to(b, raw_request("FROBNICATE"), net)
    assert resp.status == 501 and "INVITE" in resp.allow
    for method in ("REGISTER", "SUBSCRIBE", "MESSAGE", "INFO", "REFER"):
        assert answer_to(b, raw_request(method, call_id=method), net).status == 405


def test_reinvite_with_unknown_body_type_gets_415_and_the_call_stays_up() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    a_call, b_call = answered_call(net, a, b)
    a.core.reinvite(a_call, b"<audio/>", net.now, content_type="application/x-unknown")  # type: ignore[union-attr]
    net.pump()
    result = a.of(ReinviteResult)[-1]
    assert result.response.status == 415
    assert result.response.headers.get("Accept") == "application/sdp"
    assert not a_call.terminated and not b_call.terminated and b_call.remote_sdp == SDP_A


def test_malformed_datagrams_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A scanner sending garbage gets one log line per interval, with the count of what it sent since."""
    core = _core()
    garbage = b"GARBAGE\r\nnot sip at all\r\n\r\n"
    clerr = next(c for c in CASES if c.name == "clerr").raw
    with caplog.at_level(logging.INFO, logger="sip.core"):
        for i in range(200):
            core.receive_datagram(garbage if i % 2 else clerr, SOURCE, 1.0 + i * 0.001)
        first = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(first) == 1, first
        caplog.clear()
        core.receive_datagram(garbage, SOURCE, 1000.0)
        later = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(later) == 1 and "199 more" in later[0], later
    core.transmits()


# ---------------------------------------------------------------------------------------------- over UDP


def _options_probe(call_id: str) -> bytes:
    return raw_request("OPTIONS", call_id=call_id).replace(b"127.0.0.1:5070", b"127.0.0.1")


async def _exchange(port: int, raw: bytes, case: Case, n: int) -> list[Response]:
    """Send ``raw`` from a fresh socket, then an OPTIONS probe; collect the answers to ``raw``.

    The UA handles datagrams in order, so an answer the core gives at once arrives before the probe's
    200; an answer from the application (486 to a call) is waited for by its status.
    """
    loop = asyncio.get_running_loop()
    probe_id = f"probe-{n}"
    answers: list[Response] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(raw, ("127.0.0.1", port))
        s.sendto(_options_probe(probe_id), ("127.0.0.1", port))
        probe_answered = False
        while not probe_answered or (case.call and not any(r.status >= 200 for r in answers)):
            data = await asyncio.wait_for(loop.sock_recv(s, 65535), 10)
            msg = parse_message(data)
            assert isinstance(msg, Response)
            if msg.headers.get("Call-ID") == probe_id:
                assert msg.status == 200
                probe_answered = True
            else:
                answers.append(msg)
    return answers


def test_rfc4475_messages_over_udp_to_a_running_user_agent(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ua = await UserAgent.create("127.0.0.1", transports=("udp",))
        invites: list[str] = []

        async def busy(incoming: IncomingInvite) -> None:
            invites.append(incoming.call_id)
            await incoming.reject(486)

        ua.on_invite = busy
        port = ua.local_address[1]
        for n, case in enumerate(CASES):
            # several RFC messages share one branch and sent-by (cparam01/cparam02, escnull/regescrt):
            # within 32 s, the second is a retransmission of the first (§17.2.3) and its answer goes to
            # the first's source, so each gets its own branch here
            raw = case.raw.replace(b";branch=z9hG4bKkdjuw", b";branch=z9hG4bKkdjuw-%d" % n)
            answers = await _exchange(port, raw, case, n)
            finals = [r for r in answers if r.status >= 200]
            if case.status is None:
                assert answers == [], (case.name, answers)
                continue
            assert finals, case.name
            _check_final(case, finals[0])
        assert not any(i.startswith("dblreq.0ha0isnda977") for i in invites)  # the noise was not a call
        # a burst: every message 20 times (980 datagrams and more), then the UA must still answer
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for i in range(20):
                for case in CASES:
                    s.sendto(case.raw, ("127.0.0.1", port))
                await asyncio.sleep(0.01 * (i % 2))
        await asyncio.sleep(0.5)
        probe = await UserAgent.create("127.0.0.1", transports=("udp",))
        assert (await probe.options(f"sip:127.0.0.1:{port}")).status == 200
        assert ua.core.active_calls == 0
        await probe.close()
        await ua.close()

    with caplog.at_level(logging.ERROR, logger="sip"):
        asyncio.run(asyncio.wait_for(main(), 120))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors[0].getMessage() if errors else ""

"""A user agent that takes no new calls (a node being drained): the sans-I/O core answers 503."""

from __future__ import annotations

from sip.core import CallState, IncomingCall, ReinviteResult
from tests.test_sip_core import SDP_A, SDP_B, Net, answer_to, answered_call, raw_request


def test_unavailable_core_answers_options_and_new_invites_503_with_retry_after() -> None:
    net = Net()
    b = net.add(5062)
    b.core.set_unavailable(True, retry_after=60)  # type: ignore[union-attr]
    probe = answer_to(b, raw_request("OPTIONS"), net)
    assert (probe.status, probe.headers.get("Retry-After")) == (503, "60")
    stale = answer_to(b, raw_request("OPTIONS", call_id="x2", to_tag="gone"), net)  # no such dialog
    assert stale.status == 503
    invite = answer_to(b, raw_request("INVITE", call_id="x3"), net)
    assert (invite.status, invite.headers.get("Retry-After")) == (503, "60")
    assert invite.to.tag  # a final answer to an INVITE carries a To tag (§8.2.6.2)
    assert b.core.events() == []  # type: ignore[union-attr]  # the application never saw the INVITE


def test_unavailable_without_retry_after_and_back_to_available() -> None:
    net = Net()
    b = net.add(5062)
    b.core.set_unavailable(True)  # type: ignore[union-attr]
    probe = answer_to(b, raw_request("OPTIONS"), net)
    assert probe.status == 503 and probe.headers.get("Retry-After") is None
    b.core.set_unavailable(False)  # type: ignore[union-attr]
    assert answer_to(b, raw_request("OPTIONS", call_id="x2"), net).status == 200
    b.core.receive_datagram(raw_request("INVITE", call_id="x3"), ("udp", "127.0.0.1", 5070), net.now)  # type: ignore[union-attr]
    assert [type(e) for e in b.core.events()] == [IncomingCall]  # type: ignore[union-attr]


def test_calls_in_progress_go_on_while_unavailable() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    a_call, b_call = answered_call(net, a, b)
    b.core.set_unavailable(True, retry_after=60)  # type: ignore[union-attr]
    a.core.reinvite(a_call, SDP_A.replace(b"1 1", b"1 2"), net.now)  # type: ignore[union-attr]  # e.g. T.38
    net.pump()
    assert b_call.reinvite_in is not None  # the dialog's re-INVITE reaches the application
    b.core.answer_reinvite(b_call, 200, net.now, SDP_B)  # type: ignore[union-attr]
    net.pump()
    assert [r.response.status for r in a.of(ReinviteResult)] == [200]
    fresh = a.core.request("OPTIONS", f"sip:127.0.0.1:{b.port}", net.now)  # type: ignore[union-attr]
    net.pump()
    assert fresh.final is not None and fresh.final.status == 503  # while the node is out of rotation
    a.core.bye(a_call, net.now)  # type: ignore[union-attr]
    net.pump()
    assert a_call.state is CallState.TERMINATED and b_call.state is CallState.TERMINATED

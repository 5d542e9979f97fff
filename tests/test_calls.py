"""Fax calls end to end on real sockets: vfax to vfax, directly and through Kamailio, in real time.

Each test runs its calls concurrently in one event loop (a one-page fax takes 10-20 s of real time),
and asserts what a user would see: both ends' T.30 results, the media that carried the fax, the
files in the inbox, the SIP ladder of the call report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import ImageChops

from sip.sdp import MediaDescription, parse_sdp
from t38.engine import PageDone
from t38.impairment import Impairment
from t38.transport import ImpairmentRelay
from tests import docfactory
from vfax.call.fax_call import CallOptions, CallOutcome, FaxCall
from vfax.call.line import FaxLine, LineConfig, Reception
from vfax.call.media import T38Policy
from vfax.documents import Resolution, prepare_fax_tiff, read_tiff_pages
from vfax.status import FaxStatus


def page(tmp: Path, pages: int = 1, resolution: Resolution = Resolution.STANDARD) -> Path:
    src = docfactory.text_pdf(tmp / f"doc-{pages}.pdf", pages=pages)
    return prepare_fax_tiff(src, tmp / f"send-{pages}-{resolution.name}.tif", resolution=resolution).path


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 240))


async def fax_once(
    tmp: Path,
    tiff: Path,
    tx_options: CallOptions,
    rx_options: CallOptions,
    *,
    name: str,
    tx_extra: dict[str, Any] | None = None,
    rx_extra: dict[str, Any] | None = None,
    to: Callable[[FaxLine], str] | None = None,
    setup: Callable[[FaxLine, FaxLine], Awaitable[None]] | None = None,
) -> tuple[CallOutcome, Reception, FaxLine, FaxLine]:
    rx = await FaxLine.open(
        LineConfig(name=f"rx-{name}", inbox=tmp / f"inbox-{name}", call=rx_options, **(rx_extra or {}))
    )
    tx = await FaxLine.open(LineConfig(name=f"tx-{name}", call=tx_options, **(tx_extra or {})))
    try:
        if setup is not None:
            await setup(tx, rx)
        sent = await tx.send(tiff, to(rx) if to else rx.uri)
        reception = await asyncio.wait_for(rx.receptions.get(), 60)
    finally:
        await tx.close()
        await rx.close()
    return sent, reception, tx, rx


def ladder_lines(outcome: CallOutcome) -> list[str]:
    return [step["line"] for step in outcome.report["sip"]["ladder"]]


def test_vfax_to_vfax_directly_for_t38_auto_direct_and_off(tmp_path: Path) -> None:
    tiff = page(tmp_path)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            fax_once(
                tmp_path, tiff, CallOptions(t38=T38Policy.AUTO), CallOptions(t38=T38Policy.AUTO), name="auto"
            ),
            fax_once(
                tmp_path,
                tiff,
                CallOptions(t38=T38Policy.DIRECT),
                CallOptions(t38=T38Policy.AUTO),
                name="direct",
            ),
            fax_once(
                tmp_path, tiff, CallOptions(t38=T38Policy.OFF), CallOptions(t38=T38Policy.OFF), name="off"
            ),
        )

    (auto, direct, off) = run(scenario())
    for (sent, rec, _, _), media in ((auto, "t38"), (direct, "t38"), (off, "g711")):
        assert sent.ok and sent.status is FaxStatus.FS_COMPLETED
        assert rec.outcome.ok and rec.outcome.result is not None and rec.outcome.result.pages == 1
        assert sent.media == media and rec.outcome.media == media
        assert rec.placed is not None and rec.placed.tiff and rec.placed.pdf and rec.placed.complete
        assert len(read_tiff_pages(rec.placed.tiff)) == 1
        lines = ladder_lines(sent)
        assert lines[0].startswith("INVITE ") and any(x.startswith("BYE ") for x in lines)
        assert any(x.startswith("SIP/2.0 200") for x in lines)
    # auto: G.711 first, then the receiver's re-INVITE moves the call to T.38
    rx_auto_events = [e["event"] for e in auto[1].outcome.report["media"]["events"]]
    assert rx_auto_events[:3] == ["media g711", "re-INVITE to T.38 sent", "media t38"]
    # the receiver's fax engine waited for the switch: T.30 ran once, on T.38, from its first message
    assert auto[1].outcome.report["media"]["events"][0]["fax_engine"] == "waits for the T.38 re-INVITE"
    assert "fax engine started on G.711" not in rx_auto_events
    first = auto[1].outcome.report["t30"][0]
    assert (first["direction"], first["name"]) == ("tx", "DIS")
    assert sum(1 for x in ladder_lines(auto[0]) if x.startswith("INVITE ")) == 2  # the call and the re-INVITE
    # direct: T.38 from the first INVITE, no audio at all
    assert [e["event"] for e in direct[0].report["media"]["events"]] == ["media t38"]
    assert direct[0].report["media"]["t38"]["negotiated"]["udp_ec"] == "t38UDPRedundancy"
    # off: G.711 throughout, the audio codec in the report
    assert off[0].report["media"]["audio_codec"] == "PCMU"
    assert off[0].report["rtp"]["received"]["packets_received"] > 100


def test_t38_direct_to_a_t38_off_receiver_falls_back_to_audio(tmp_path: Path) -> None:
    sent, rec, _, _ = run(
        fax_once(
            tmp_path,
            page(tmp_path),
            CallOptions(t38=T38Policy.DIRECT),
            CallOptions(t38=T38Policy.OFF),
            name="fallback",
        )
    )
    assert sent.ok and sent.media == "g711"
    events = [e["event"] for e in sent.report["media"]["events"]]
    assert events[0].startswith("T.38 refused in the INVITE") and "media g711" in events
    assert rec.outcome.result is None and rec.outcome.end_reason.startswith("no acceptable media")
    # both INVITEs (two Call-IDs) are in the report: the refused T.38 one first, in time order
    sip = sent.report["sip"]
    assert [a["status"] for a in sip["attempts"]] == [488, 200]
    assert sip["attempts"][0]["call_id"] != sip["attempts"][1]["call_id"] == sent.report["call_id"]
    steps = [(step["attempt"], step["line"].split(" ")[0]) for step in sip["ladder"]]
    assert steps[:3] == [(1, "INVITE"), (1, "SIP/2.0"), (1, "ACK")] or steps[:4] == [
        (1, "INVITE"), (1, "SIP/2.0"), (1, "SIP/2.0"), (1, "ACK")  # 100 Trying, 488, ACK
    ], steps
    assert any(step["attempt"] == 1 and step["line"].startswith("SIP/2.0 488") for step in sip["ladder"])
    assert (2, "INVITE") in steps and (2, "BYE") in steps
    assert [step["t"] for step in sip["ladder"]] == sorted(step["t"] for step in sip["ladder"])


def test_t38_removed_by_the_peer_at_the_end_of_the_fax_is_answered_200(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Asterisk 22, after a fax that vfax switched to T.38, sends a re-INVITE whose only line is
    `m=image 0 udptl t38` before its BYE. RFC 3264 allows an offer that removes every stream: 200 with
    the line mirrored at port 0, the dialog kept, the fax a success on both ends."""
    removals: list[tuple[int, bytes]] = []
    real_hangup = FaxCall._hangup

    async def hangup_like_asterisk(self: FaxCall) -> None:
        live = self.sip is not None and not self.sip.terminated.done()
        if self.sending and self.udptl is not None and live:
            assert self.sip is not None
            offer = self.sdp_session.describe([MediaDescription("image", 0, "udptl", ["t38"])])
            got = await self.sip.reinvite(bytes(offer))
            removals.append((got.status, got.remote_sdp))
        await real_hangup(self)

    monkeypatch.setattr(FaxCall, "_hangup", hangup_like_asterisk)
    opts = CallOptions(t38=T38Policy.AUTO)
    sent, rec, _, _ = run(fax_once(tmp_path, page(tmp_path), opts, opts, name="removed"))
    assert len(removals) == 1 and removals[0][0] == 200, removals
    answer = parse_sdp(removals[0][1])
    assert [(m.media, m.port, m.proto) for m in answer.media] == [("image", 0, "udptl")]
    assert sent.ok and rec.outcome.ok, (sent.end_reason, rec.outcome.end_reason)
    assert rec.outcome.media == "t38"
    assert rec.outcome.end_reason.startswith("T.30 phase E")  # not a refusal, not a media timeout
    events = [e["event"] for e in rec.outcome.report["media"]["events"]]
    assert "media removed by the peer" in events and "re-INVITE refused" not in events
    assert not any(x.startswith("SIP/2.0 488") for x in ladder_lines(rec.outcome))


def test_t38_only_receiver_fails_instead_of_falling_back(tmp_path: Path) -> None:
    """An `only` receiver facing a G.711-only sender must not pretend: the call fails, no fax."""
    sent, rec, _, _ = run(
        fax_once(
            tmp_path,
            page(tmp_path),
            CallOptions(t38=T38Policy.OFF),
            CallOptions(t38=T38Policy.ONLY),
            name="only",
        )
    )
    assert not sent.ok and not rec.outcome.ok
    assert rec.outcome.end_reason.startswith("t38=only")
    assert sent.status is not FaxStatus.FS_COMPLETED


def test_through_record_routing_kamailio_with_digest_auth(tmp_path: Path, kamailio: Any) -> None:
    tiff = page(tmp_path)
    server = f"{kamailio.host}:{kamailio.udp_port}"

    def creds(user: str) -> dict[str, Any]:
        return {"server": server, "user": user, "password": kamailio.users[user]}

    async def register_receiver(tx: FaxLine, rx: FaxLine) -> None:
        result = await rx.register()
        assert result.ok, result

    def to(rx: FaxLine) -> str:
        return f"sip:{rx.config.user}@{server}"

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(
                fax_once(
                    tmp_path,
                    tiff,
                    CallOptions(t38=pol),
                    CallOptions(t38=T38Policy.AUTO),
                    name=f"kam-{pol}",
                    tx_extra=creds("1004"),
                    rx_extra=creds(user),
                    to=to,
                    setup=register_receiver,
                )
                for pol, user in (
                    (T38Policy.AUTO, "1001"),
                    (T38Policy.DIRECT, "1002"),
                    (T38Policy.OFF, "1003"),
                )
            )
        )

    results = run(scenario())
    for (sent, rec, tx, _rx), media in zip(results, ("t38", "t38", "g711"), strict=True):
        assert sent.ok and rec.outcome.ok and sent.media == media, (sent.end_reason, rec.outcome.end_reason)
        lines = ladder_lines(sent)
        assert any(x.startswith("SIP/2.0 407") for x in lines)  # the proxy challenged the INVITE
        # Record-Route: in-dialog requests (re-INVITE, BYE) went through the proxy
        assert (
            tx.last_call is not None and tx.last_call.sip is not None and tx.last_call.sip.dialog is not None
        )
        route = [str(r.uri) for r in tx.last_call.sip.dialog.route_set]
        assert any(f":{kamailio.udp_port}" in r for r in route), route
        # a line with a server has symmetric media by default; the peer's media came from its SDP's
        # address, which locked at once
        for report in (sent.report, rec.outcome.report):
            latch = report["udptl" if media == "t38" else "rtp"]["latch"]
            assert latch["learned_by"] == "sdp" and latch["learned_addr"] == latch["sdp_addr"], latch


def test_pjsua2_refuses_our_t38_reinvite_and_the_call_stays_on_g711(tmp_path: Path, pjsua_peer: Any) -> None:
    """pjsua2 has no fax engine: assert the SIP and RTP behaviour, not a fax."""
    peer = pjsua_peer("pj")
    peer.command_sync("answer_policy", code=200, delay_ms=0)

    async def scenario() -> tuple[CallOutcome, dict[str, Any]]:
        opts = CallOptions(t38=T38Policy.AUTO, t38_request=True, t38_wait=0.5, max_call_seconds=8)
        line = await FaxLine.open(LineConfig(name="to-pjsua", call=opts))
        try:
            outcome = await line.send(page(tmp_path), peer.contact)
        finally:
            await line.close()
        return outcome, peer.status()

    outcome, _status = run(scenario())
    events = [e["event"] for e in outcome.report["media"]["events"]]
    refused = [e for e in outcome.report["media"]["events"] if e["event"] == "T.38 re-INVITE refused"]
    assert refused and refused[0]["status"] == 488
    assert outcome.media == "g711" and "media t38" not in events
    # the call stayed up on G.711 until our maximum duration, with RTP flowing both ways
    assert outcome.end_reason.startswith("maximum call duration")
    assert outcome.report["rtp"]["received"]["packets_received"] > 200
    assert outcome.report["rtp"]["sent"]["packets_sent"] > 200
    assert not outcome.ok and outcome.status is not FaxStatus.FS_COMPLETED  # no fax: never a success


def test_pjsua2_calls_vfax_which_stays_on_g711_after_the_488(tmp_path: Path, pjsua_peer: Any) -> None:
    peer = pjsua_peer("caller")

    async def scenario() -> Reception:
        line = await FaxLine.open(
            LineConfig(
                name="rx-pj", inbox=tmp_path / "in", call=CallOptions(t38=T38Policy.AUTO, max_call_seconds=6)
            )
        )
        try:
            await peer.command("call", uri=line.uri)
            return await asyncio.wait_for(line.receptions.get(), 30)
        finally:
            await line.close()

    rec = run(scenario())
    events = {e["event"]: e for e in rec.outcome.report["media"]["events"]}
    assert events["T.38 re-INVITE refused"]["status"] == 488
    # the fax engine waited for the refusal, then T.30 started on G.711
    assert events["fax engine started on G.711"]["at"] >= events["T.38 re-INVITE refused"]["at"]
    assert rec.outcome.media == "g711" and rec.outcome.report["rtp"]["received"]["packets_received"] > 100
    assert not rec.outcome.ok and rec.placed is not None and rec.placed.tiff is None  # a report, no fax


def test_glare_both_ends_ask_for_t38_at_once(tmp_path: Path) -> None:
    """Both ends send a T.38 re-INVITE in the same instant: 491, a retry after the RFC 3261 §14.1
    delay, and the fax goes through in T.38."""
    tiff = page(tmp_path)

    async def scenario() -> tuple[CallOutcome, Reception]:
        rx = await FaxLine.open(
            LineConfig(name="rx-glare", inbox=tmp_path / "in", call=CallOptions(t38_reinvite_delay=60))
        )
        tx = await FaxLine.open(LineConfig(name="tx-glare", call=CallOptions()))
        try:
            sending = asyncio.ensure_future(tx.send(tiff, rx.uri))
            while not (tx.last_call and tx.last_call.rtp and rx.last_call and rx.last_call.rtp):
                await asyncio.sleep(0.01)
            assert tx.last_call.sip is not None and rx.last_call.sip is not None
            await asyncio.wait_for(asyncio.shield(rx.last_call.sip.confirmed), 5)
            # the same loop tick: both requests leave before either arrives
            await asyncio.gather(tx.last_call.request_t38(), rx.last_call.request_t38())
            sent = await sending
            return sent, await asyncio.wait_for(rx.receptions.get(), 60)
        finally:
            await tx.close()
            await rx.close()

    sent, rec = run(scenario())
    assert sent.ok and rec.outcome.ok and sent.media == "t38" and rec.outcome.media == "t38"
    all_lines = ladder_lines(sent) + ladder_lines(rec.outcome)
    assert sum(1 for x in all_lines if x.startswith("SIP/2.0 491")) >= 2, all_lines  # each side saw it


def test_remote_hangup_mid_page_fails_the_job_and_keeps_pages(tmp_path: Path) -> None:
    tiff = page(tmp_path, pages=2)

    async def setup(tx: FaxLine, rx: FaxLine) -> None:
        def on_event(call: FaxCall, event: Any) -> None:
            if isinstance(event, PageDone) and event.page == 1:
                asyncio.get_running_loop().call_later(
                    3.0, lambda: asyncio.ensure_future(call.abort("test hangup"))
                )

        rx.on_event = on_event

    sent, rec, _, _ = run(fax_once(tmp_path, tiff, CallOptions(), CallOptions(), name="hangup", setup=setup))
    assert not sent.ok and sent.result is not None and sent.result.pages == 1
    assert sent.end_reason.startswith("remote hangup")
    assert sent.status in (FaxStatus.FS_DISCONNECTED, FaxStatus.FS_FATAL_ERROR)
    assert not rec.outcome.ok and rec.placed is not None and not rec.placed.complete
    assert rec.placed.tiff is not None and len(read_tiff_pages(rec.placed.tiff)) == 1  # the page is kept
    assert "partial" in rec.placed.tiff.name


@pytest.mark.parametrize("policy", [T38Policy.OFF, T38Policy.AUTO])
def test_peer_that_stops_sending_media_ends_the_call_in_bounded_time(
    tmp_path: Path, policy: T38Policy
) -> None:
    async def setup(tx: FaxLine, rx: FaxLine) -> None:
        def on_event(call: FaxCall, event: Any) -> None:
            if isinstance(event, PageDone) or getattr(event, "name", "") == "DCS":
                # the receiver vanishes: its media stops, no BYE
                for ep in (call.rtp, call.udptl):
                    if ep is not None:
                        ep.close()

        rx.on_event = on_event

    opts = CallOptions(t38=policy, media_timeout=3.0)
    sent, rec, _, _ = run(
        fax_once(tmp_path, page(tmp_path), opts, CallOptions(t38=policy), name=str(policy), setup=setup)
    )
    assert not sent.ok and not rec.outcome.ok
    # RTP flows all the time, so its silence is the signal; T.38 is quiet by design while a page
    # streams, so there T.30's own response timers say the peer is gone.
    if policy is T38Policy.OFF:
        assert "no RTP" in sent.end_reason, sent.end_reason
    else:
        assert sent.end_reason.startswith("T.30 phase E: ") or "no UDPTL" in sent.end_reason, sent.end_reason
    assert sent.duration_seconds < 60


def _relayed(tmp: Path, name: str, impair: Impairment, policy: T38Policy, resolution: Resolution) -> Any:
    """One call whose media (RTP or UDPTL) crosses an impairment relay in both directions."""
    relays: dict[str, ImpairmentRelay] = {}

    async def setup(tx: FaxLine, rx: FaxLine) -> None:
        for kind in ("audio", "image"):
            relay = ImpairmentRelay(impair, replace(impair, seed=(impair.seed or 0) + 1))
            await relay.start()
            relays[kind] = relay
        tx.route_media = lambda kind, addr: relays[kind].addr_for_a
        rx.route_media = lambda kind, addr: relays[kind].addr_for_b

    async def go() -> Any:
        try:
            return await fax_once(
                tmp,
                page(tmp, resolution=resolution),
                CallOptions(t38=policy),
                CallOptions(t38=policy),
                name=name,
                setup=setup,
            )
        finally:
            for r in relays.values():
                r.close()

    return go(), relays


def test_media_through_the_impairment_relay(tmp_path: Path) -> None:
    jitter, jr = _relayed(
        tmp_path, "jitter", Impairment(jitter_ms=40, seed=3), T38Policy.OFF, Resolution.STANDARD
    )
    lossy, lr = _relayed(
        tmp_path, "g711loss", Impairment(loss=0.01, seed=5), T38Policy.OFF, Resolution.STANDARD
    )
    t38, tr = _relayed(tmp_path, "t38loss", Impairment(loss=0.10, seed=7), T38Policy.AUTO, Resolution.FINE)

    async def scenario() -> list[Any]:
        return await asyncio.gather(jitter, lossy, t38)

    (j_sent, j_rec, _, _), (l_sent, l_rec, _, _), (t_sent, t_rec, _, _) = run(scenario())
    # G.711 with 40 ms of jitter and reordering but no loss: the playout buffer absorbs it
    assert j_sent.ok and j_rec.outcome.ok and j_sent.media == "g711", (
        j_sent.end_reason,
        j_rec.outcome.end_reason,
        j_rec.outcome.report["rtp"],
    )
    assert j_rec.outcome.report["rtp"]["received"]["reordered"] > 0
    assert jr["audio"].stats["a"].dropped == 0 and jr["audio"].stats["b"].dropped == 0
    # G.711 with 1 % loss: whatever happened, the result is the truth and the pages are kept
    assert lr["audio"].stats["a"].dropped + lr["audio"].stats["b"].dropped > 0
    # The sender may fail where the receiver succeeded (its MCF was lost: the sender cannot know), but
    # a sender never claims a success the receiver did not confirm, and the receiver keeps its pages.
    if l_sent.ok:
        assert l_rec.outcome.ok
    rx_pages = l_rec.outcome.result.pages if l_rec.outcome.result else 0
    assert l_rec.placed is not None
    assert l_rec.placed.complete == l_rec.outcome.ok
    if rx_pages:
        assert l_rec.placed.tiff is not None and len(read_tiff_pages(l_rec.placed.tiff)) == rx_pages
    if not l_sent.ok:
        assert l_sent.status is not FaxStatus.FS_COMPLETED
    # T.38 at 10 % loss: UDPTL redundancy recovers, and with ECM the page is pixel-identical
    assert t_sent.ok and t_rec.outcome.ok and t_sent.media == "t38"
    assert tr["image"].stats["a"].dropped > 0 and t_rec.outcome.report["udptl"]["recovered_redundancy"] > 0
    sent_pages = read_tiff_pages(page(tmp_path, resolution=Resolution.FINE))
    assert t_rec.placed is not None and t_rec.placed.tiff is not None
    got = read_tiff_pages(t_rec.placed.tiff)
    assert len(got) == len(sent_pages) == 1
    assert ImageChops.difference(got[0].convert("L"), sent_pages[0].convert("L")).getbbox() is None


def test_t38_page_longer_than_the_media_timeout_is_not_cut(tmp_path: Path) -> None:
    """A T.38 receiver is silent while a page streams in: that silence is not a dead peer."""
    opts = CallOptions(t38=T38Policy.AUTO, media_timeout=3.0)
    sent, rec, _, _ = run(
        fax_once(tmp_path, page(tmp_path, resolution=Resolution.FINE), opts, opts, name="longpage")
    )
    assert sent.ok and rec.outcome.ok and sent.media == "t38", (sent.end_reason, rec.outcome.end_reason)
    assert sent.duration_seconds > 3 * opts.media_timeout


def test_a_slow_switch_to_t38_is_not_mistaken_for_silence(tmp_path: Path, monkeypatch: Any) -> None:
    """Under load the UDPTL endpoint can take a while to start; the silence watch must not count it."""
    from t38.transport import UdptlEndpoint

    real_start = UdptlEndpoint.start

    async def slow_start(self: UdptlEndpoint, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)  # a busy loop; the old code hung up here whatever the timeout
        return await real_start(self, *args, **kwargs)

    monkeypatch.setattr(UdptlEndpoint, "start", slow_start)
    opts = CallOptions(t38=T38Policy.AUTO, media_timeout=4.0)
    sent, rec, _, _ = run(fax_once(tmp_path, page(tmp_path), opts, opts, name="slowswitch"))
    assert sent.ok and rec.outcome.ok and sent.media == "t38", (sent.end_reason, rec.outcome.end_reason)


def test_unanswered_t38_reinvite_starts_the_fax_on_g711_after_the_timeout(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The receiver's fax engine waits for its T.38 re-INVITE; a peer that sits on the re-INVITE
    (here: answers 488 only after 7 s) must not stall the fax: after ``reinvite_timeout`` the engine
    starts on G.711 and the fax goes through; the late 488 changes nothing."""
    real = FaxCall._on_reinvite

    async def slow_refusal(self: FaxCall, remote_sdp: bytes) -> tuple[int, bytes]:
        if self.sending:
            await asyncio.sleep(7.0)
            return 488, b""
        return await real(self, remote_sdp)

    monkeypatch.setattr(FaxCall, "_on_reinvite", slow_refusal)
    opts = CallOptions(t38=T38Policy.AUTO, reinvite_timeout=3.0)
    sent, rec, _, _ = run(fax_once(tmp_path, page(tmp_path), opts, opts, name="sitting"))
    assert sent.ok and rec.outcome.ok, (sent.end_reason, rec.outcome.end_reason)
    assert sent.media == "g711" and rec.outcome.media == "g711"
    events = [e["event"] for e in rec.outcome.report["media"]["events"]]
    assert events.index("T.38 re-INVITE unanswered") < events.index("fax engine started on G.711")
    assert rec.placed is not None and rec.placed.tiff is not None

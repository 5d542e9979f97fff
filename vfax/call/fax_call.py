"""One fax call: a SIP session, its media (G.711 RTP or T.38 UDPTL) and the T.30 engine, end to end.

``FaxCall`` wires the three layers that must not know each other: ``sip/`` (offer/answer, dialog),
``t38/`` (engine, RTP, UDPTL) and the media policy of ``vfax.call.media``. It decides when to leave G.711
for T.38, restarts the engine on the new media, ends the call when T.30 phase E is reached (BYE), and
ends it with a clear reason when the peer hangs up, stops sending media, or the call runs too long.
Its report (``report()``) is the per-call record users read: SIP ladder, negotiated media, T.30
timeline, pages, RTP/UDPTL counters and the result; the result is the T.30 phase E verdict, never a
guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sip.identity import caller_of
from sip.sdp import LocalSession, SdpError, SessionDescription, build_offer, parse_sdp, process_answer
from sip.sdp import answer_offer as sdp_answer_offer
from sip.transaction import Address
from sip.useragent import CallSession, IncomingInvite, UserAgent
from t38.audio_transport import RtpEndpoint, SilentSession
from t38.engine import FaxConfig, FaxEvent, FaxResult, FaxSession, Media
from t38.media_config import t38_media
from t38.rtp import PT_PCMA, PT_PCMU
from t38.transport import UdptlEndpoint
from vfax.call.media import (
    T38_REFUSALS,
    ImageDeal,
    T38Policy,
    accept_image_answer,
    answer_image,
    our_image_attributes,
)
from vfax.status import FaxStatus, status_for_sip, status_for_t30

log = logging.getLogger("vfax.call")

WATCH_SECONDS = 0.25  # how often a call checks its end conditions (hundreds of calls share the loop)
BYE_GRACE_SECONDS = 2.0  # after phase E the receiver lets the sender hang up first
ACK_WAIT_SECONDS = 32.0  # RFC 3261 timer H (64*T1): after that the dialog is dead anyway


@dataclass
class CallOptions:
    """Per-call settings; a device supplies its defaults, a job may override them."""

    t38: T38Policy = T38Policy.AUTO
    ecm: bool = True
    max_bit_rate: int = 14400
    ident: str = ""  # our TSI (sending) or CSI (receiving)
    page_header: str | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    reinvite_timeout: float = 5.0  # no answer to our T.38 re-INVITE in this time: stay on G.711
    t38_wait: float = 3.0  # sender: how long to wait for the peer's T.38 re-INVITE before asking itself
    # sender under auto: ask for T.38 itself if the peer did not (always under only)
    t38_request: bool = False
    # receiver: wait this long after the ACK before asking for T.38
    t38_reinvite_delay: float = 0.0
    media_timeout: float = 20.0  # no RTP/UDPTL from the peer for this long ends the call
    max_call_seconds: float = 1800.0
    ring_timeout: float = 60.0
    playout_ms: int = 100  # fixed delay: fax modems tolerate constant delay, not gaps (jitter + load)
    #: Symmetric RTP/UDPTL (t38.latch): our media goes to where the peer's really comes from, learned
    #: with strict-RTP probation, and other sources are dropped. None: decided by the line (FaxLine):
    #: on when it has a server (a registrar/PBX), whose far ends may be behind a NAT that sends their
    #: media from another address than their SDP names; off for direct calls (a LAN, loopback tests),
    #: where the SDP's address is the truth and nothing changes.
    symmetric_media: bool | None = None

    def fax_config(self) -> FaxConfig:
        return FaxConfig(
            ident=self.ident, page_header=self.page_header, ecm=self.ecm, max_bit_rate=self.max_bit_rate
        )


@dataclass
class CallOutcome:
    """What the controller needs from a finished call (the full story is in ``report``)."""

    ok: bool
    sip_status: int | None  # final response to our INVITE (outgoing), None when we answered
    sip_reason: str
    result: FaxResult | None  # T.30 phase E, None when no fax session ever ran
    media: str  # "t38" or "g711" (what carried the fax at the end)
    end_reason: str
    duration_seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    aborted: bool = False
    answered: bool = False  # the call was set up (200 OK), whether or not a fax engine ever ran

    @property
    def status(self) -> FaxStatus:
        """How the call ended, as FAX_DEV_STATUS (tables in vfax.status): the T.30 result when a fax
        session ran, the SIP final response when the call never got that far."""
        if self.ok:
            return FaxStatus.FS_COMPLETED
        if self.aborted:
            return FaxStatus.FS_USER_ABORT
        if self.sip_status in (408, 487) and self.result is None:
            return FaxStatus.FS_NO_ANSWER  # our ring timeout cancelled the INVITE (or it timed out)
        if self.result is not None:
            return status_for_t30(self.result.code, self.result.pages)
        if self.sip_status is not None and 300 <= self.sip_status <= 699:
            return status_for_sip(self.sip_status)
        return FaxStatus.FS_FATAL_ERROR


@dataclass
class SipAttempt:
    """One INVITE of an outgoing call (a new Call-ID each) and how it ended."""

    call_id: str
    status: int | None = None
    reason: str = ""


class _UdpReservation:
    """A UDP port bound before it is announced in SDP, handed to the media endpoint later."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]

    def take(self) -> socket.socket:
        sock, self.sock = self.sock, None  # type: ignore[assignment]
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]


class FaxCall:
    """One fax call in either direction. Use ``place()`` to send, ``answer()`` to receive."""

    def __init__(
        self,
        ua: UserAgent,
        options: CallOptions,
        *,
        send_file: Path | None = None,
        receive_file: Path | None = None,
        name: str = "call",
    ) -> None:
        if (send_file is None) == (receive_file is None):
            raise ValueError("a fax call either sends a file or receives into one")
        self.ua = ua
        self.options = options
        self.name = name
        self.sending = send_file is not None
        self.send_file = send_file
        self.receive_file = receive_file
        self.host = ua.local_address[0]  # media sockets bind here
        #: the address our SDP names: the advertised (public) one when the line has one (ua.media_host)
        self.sdp_host = ua.media_host
        self.sdp_session = LocalSession(self.sdp_host)
        self.session: FaxSession | None = None
        self.sip: CallSession | None = None
        self.rtp: RtpEndpoint | None = None
        self.udptl: UdptlEndpoint | None = None
        self.audio_port: _UdpReservation | None = None
        self.image_port: _UdpReservation | None = None
        self.audio_codec: str | None = None
        self.t38: ImageDeal | None = None
        self.media_log: list[dict[str, Any]] = []
        self.end_reason = ""
        self.sip_status: int | None = None
        self.sip_reason = ""
        self.call_id = ""
        #: every INVITE of this call, in order: (Call-ID, final status, reason); a ``direct`` call whose
        #: T.38 offer got 488 has two, and the report's ladder shows both
        self.attempts: list[SipAttempt] = []
        self.remote_party = ""
        #: What the INVITE said about its caller (From, P-Asserted-Identity, Via, Record-Route): receiving.
        self.caller: dict[str, Any] | None = None
        self._invite_headers: list[tuple[str, str]] | None = None
        self.answered = False
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ended: float | None = None
        #: Call seconds when the first fax engine started: T.30 times (line seconds of the engine) plus
        #: this put the T.30 timeline on the SIP ladder's clock (the report's ``t30_started_at``).
        self.engine_started_at: float | None = None
        self._media_dead: str | None = None
        self._udptl_seen = (0, 0.0)
        self._closed = False
        self._pending: Any = None
        self.aborted = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: CallOptions.symmetric_media, resolved (the line sets it when the option is None).
        self.symmetric_media = bool(options.symmetric_media)
        #: Where our media goes for a given (kind, peer address): the peer itself unless a test or a
        #: benchmark routes the stream through an impairment relay.
        self.route_media: Callable[[str, tuple[str, int]], tuple[str, int]] = lambda kind, addr: addr
        #: Called with "dialing" (the INVITE is out, ``call_id`` is known) and "answered".
        self.on_progress: Callable[[FaxCall, str], None] | None = None
        #: Called with each engine event (T.30 message, page, result) while the call runs.
        self.on_event: Callable[[FaxCall, FaxEvent], None] | None = None

    # --- outgoing -------------------------------------------------------------------------------------
    async def place(
        self,
        target: str,
        *,
        proxy: str | None = None,
        credentials: tuple[str, str] | None = None,
        from_uri: str | None = None,
        targets: list[Address] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> CallOutcome:
        """Call ``target`` and send the document; returns when the call is over. ``targets`` are where
        the next hop resolved to (``UserAgent.locate``), tried in turn on a timeout or a 503; ``headers``
        go into the INVITE (P-Asserted-Identity)."""
        self.remote_party = target
        self._invite_headers = headers
        try:
            direct = self.options.t38 is T38Policy.DIRECT
            offer = self._offer(image=direct, audio=not direct)
            result = await self._invite(target, offer, proxy, credentials, from_uri, targets)
            if not result.ok and direct and result.status in T38_REFUSALS:
                self._note("T.38 refused in the INVITE: calling again with audio", status=result.status)
                self._release_ports()
                self.sdp_session = LocalSession(self.sdp_host)  # a new INVITE is a new dialog
                offer = self._offer(image=False, audio=True)
                result = await self._invite(target, offer, proxy, credentials, from_uri, targets)
            self.sip_status, self.sip_reason = result.status, result.reason
            if not result.ok or result.session is None:
                self.end_reason = f"SIP {result.status} {result.reason}".strip()
                return self._outcome()
            self.sip = result.session
            self.sip.on_reinvite = self._on_reinvite
            self.answered = True
            self._progress("answered")
            try:
                negotiation = process_answer(offer, parse_sdp(result.remote_sdp))
            except SdpError as exc:
                self.end_reason = f"unusable SDP answer: {exc}"
                await self._hangup()
                return self._outcome()
            if negotiation.chosen_image is not None:
                deal = accept_image_answer(our_image_attributes(), negotiation.chosen_image.attributes)
                await self._start_t38(deal, (negotiation.chosen_image.address, negotiation.chosen_image.port))
            elif negotiation.chosen_audio is not None:
                a = negotiation.chosen_audio
                await self._start_audio(a.codec, a.payload_type, (a.address, a.port))
            else:
                self.end_reason = "no usable media in the answer"
                await self._hangup()
                return self._outcome()
            wants_t38 = self.options.t38 is T38Policy.ONLY or (
                self.options.t38 is T38Policy.AUTO and self.options.t38_request
            )
            if wants_t38 and self.session and self.session.media is Media.AUDIO:
                self._spawn(self._insist_on_t38())
            await self._run_until_done()
            return self._outcome()
        finally:
            await self._cleanup()

    async def _invite(
        self,
        target: str,
        offer: SessionDescription,
        proxy: str | None,
        credentials: Any,
        from_uri: str | None,
        targets: list[Address] | None = None,
    ) -> Any:
        pending = self.ua.invite(
            target, bytes(offer), proxy=proxy, credentials=credentials, from_=from_uri,
            timeout=self.options.ring_timeout, targets=targets, headers=self._invite_headers,
        )  # fmt: skip
        self.call_id = pending.call_id
        attempt = SipAttempt(pending.call_id)
        self.attempts.append(attempt)
        self._pending = pending
        self._progress("dialing")
        try:
            result = await pending
            attempt.status, attempt.reason = result.status, result.reason
            return result
        finally:
            self._pending = None

    # --- incoming -------------------------------------------------------------------------------------
    async def answer(self, incoming: IncomingInvite) -> CallOutcome:
        """Answer an offered call and receive the fax; returns when the call is over."""
        self.call_id = incoming.call_id
        self.remote_party = str(incoming.from_.uri)
        self.caller = caller_of(incoming.request)
        log.info("%s: call %s from %s", self.name, self.call_id, self.caller)
        self.sip = incoming.session
        self.sip.on_reinvite = self._on_reinvite
        try:
            try:
                offer = parse_sdp(incoming.remote_sdp)
            except SdpError as exc:
                await incoming.reject(400, "Bad SDP")
                self.end_reason = f"unusable SDP offer: {exc}"
                return self._outcome()
            answer, deal = self._answer(offer)
            if answer is None:
                await incoming.reject(488, "Not Acceptable Here")
                self.end_reason = "no acceptable media in the offer (488)"
                return self._outcome()
            await incoming.accept(bytes(answer.sdp))
            self.answered = True
            self._progress("answered")
            if answer.chosen_image is not None and deal is not None:
                await self._start_t38(deal, (answer.chosen_image.address, answer.chosen_image.port))
            elif answer.chosen_audio is not None:
                a = answer.chosen_audio
                # Under auto/only the fax engine waits for our T.38 re-INVITE's outcome (RTP carries
                # silence meanwhile): T.30 then starts once, on the media it will keep, and a burst of
                # calls being switched costs no modem time. The caller waits for DIS (T.30 T1, 35 s).
                wait = self.options.t38 is not T38Policy.OFF and self.options.t38_reinvite_delay <= 0
                await self._start_audio(a.codec, a.payload_type, (a.address, a.port), engine=not wait)
                if self.options.t38 is not T38Policy.OFF:
                    self._spawn(self._reinvite_to_t38())
            await self._run_until_done()
            return self._outcome()
        finally:
            await self._cleanup()

    # --- SDP ------------------------------------------------------------------------------------------
    def _offer(self, *, image: bool, audio: bool) -> SessionDescription:
        if audio and self.audio_port is None:
            self.audio_port = _UdpReservation(self.host)
        if image and self.image_port is None:
            self.image_port = _UdpReservation(self.host)
        return build_offer(
            self.sdp_host,
            audio_port=self.audio_port.port if audio and self.audio_port else None,
            image_port=self.image_port.port if image and self.image_port else None,
            codecs=self.options.codecs,
            image_attributes=our_image_attributes() if image else (),
            session=self.sdp_session,
        )

    def _answer(self, offer: SessionDescription) -> tuple[Any, ImageDeal | None]:
        """Our answer to an offer (initial or re-INVITE), under the policy; None when nothing fits."""
        accept_image = self.options.t38 is not T38Policy.OFF and self._may_switch_to_t38()
        deal: list[ImageDeal] = []

        def image_attrs(line: Any) -> list[str] | None:
            got = answer_image(line)
            if got is None:
                return None
            deal.append(got[1])
            return got[0]

        if self.audio_port is None and self.rtp is None:
            self.audio_port = _UdpReservation(self.host)
        if accept_image and self.image_port is None and self.udptl is None:
            self.image_port = _UdpReservation(self.host)
        audio_port = (
            self.rtp.local_addr[1]
            if self.rtp and self.rtp.local_addr
            else (self.audio_port.port if self.audio_port else None)
        )
        image_port = (
            self.udptl.local_address[1] if self.udptl else (self.image_port.port if self.image_port else None)
        )
        try:
            answer = sdp_answer_offer(
                offer,
                local_addr=self.sdp_host,
                accept_audio=True,
                audio_port=audio_port,
                codecs=self.options.codecs,
                accept_image=accept_image,
                image_port=image_port,
                image_attributes=image_attrs,
                prefer="image",
                session=self.sdp_session,
            )
        except Exception as exc:  # OfferRejected and friends: nothing we can take
            log.info("%s: offer refused: %s", self.name, exc)
            return None, None
        return answer, (deal[-1] if deal and answer.chosen_image is not None else None)

    def _may_switch_to_t38(self) -> bool:
        """Before T.30 phase C (no CFR yet) a switch is seamless; after it we keep the media we have."""
        if self.session is None or self.session.media is Media.T38:
            return True
        return not self.session.trained

    async def _on_reinvite(self, remote_sdp: bytes) -> tuple[int, bytes]:
        """A new offer inside the call: a T.38 switch, a hold, a refresh, or an address change."""
        try:
            offer = parse_sdp(remote_sdp)
        except SdpError as exc:
            self._note("bad re-INVITE SDP", error=str(exc))
            return 488, b""
        wants_image = any(m.media.lower() == "image" and m.port for m in offer.media)
        answer, deal = self._answer(offer)
        if answer is None:
            self._note("re-INVITE refused", t38=wants_image)
            return 488, b""
        if answer.chosen_image is not None and deal is not None:
            if self.session is None or self.session.media is not Media.T38:
                await self._start_t38(deal, (answer.chosen_image.address, answer.chosen_image.port))
            elif self.udptl is not None:
                self.udptl.set_peer(
                    self.route_media("image", (answer.chosen_image.address, answer.chosen_image.port))
                )
        elif answer.chosen_audio is not None:
            if wants_image:
                self._note("T.38 re-INVITE answered with audio only", policy=str(self.options.t38))
            a = answer.chosen_audio
            if self.rtp is not None:
                self.rtp.set_remote(self.route_media("audio", (a.address, a.port)), a.payload_type)
        else:
            # Every stream at port 0 (Asterisk's last re-INVITE after a T.38 fax): the dialog stays and
            # so do our sockets, so a DCN still in flight reaches T.30; the call ends by BYE or phase E.
            self._note("media removed by the peer", lines=[m.media for m in offer.media])
        return 200, bytes(answer.sdp)

    async def _reinvite_to_t38(self) -> None:
        """Receiving side under ``auto``/``only``: ask for T.38 right after the answer. Whatever the
        outcome, a call still on G.711 afterwards gets its audio fax engine (unless ``only`` ended it)."""
        assert self.sip is not None
        try:
            try:  # a re-INVITE needs a confirmed dialog (the ACK); under load it can take a while
                await asyncio.wait_for(asyncio.shield(self.sip.confirmed), ACK_WAIT_SECONDS)
            except TimeoutError:
                self._note("no ACK: T.38 not requested", seconds=ACK_WAIT_SECONDS)
                await self._t38_refused("the call was never confirmed (no ACK)")
                return
            if self.options.t38_reinvite_delay > 0:
                await asyncio.sleep(self.options.t38_reinvite_delay)
            await self.request_t38()
        finally:
            self._start_waiting_engine()

    def _start_waiting_engine(self) -> None:
        """The T.38 attempt is over and the call is still on G.711: start T.30 in audio."""
        if (
            self.session is not None
            or self.rtp is None
            or self.rtp.closed
            or self._closed
            or self.options.t38 is T38Policy.ONLY
            or (self.sip is not None and self.sip.terminated.done())
        ):
            return
        self.session = self._new_session(Media.AUDIO)
        self.rtp.session = self.session
        self._note("fax engine started on G.711")

    async def request_t38(self) -> None:
        """Ask the peer to move this call to T.38 now (a re-INVITE with an image line in the audio
        line's place). Refused or unanswered within ``reinvite_timeout``: the call stays on G.711
        (under ``only`` it ends). Both ends asking at once is glare: the SIP layer answers 491 and
        retries after the RFC 3261 §14.1 delay."""
        if self.sip is None:
            return
        if (
            self._closed
            or (self.session is None and self.rtp is None)
            or (self.session is not None and self.session.media is Media.T38)
            or self.sip.call.terminated
        ):
            return
        offer = self._offer(image=True, audio=False)
        self._note("re-INVITE to T.38 sent")
        try:
            outcome = await asyncio.wait_for(self.sip.reinvite(bytes(offer)), self.options.reinvite_timeout)
        except TimeoutError:
            self._note("T.38 re-INVITE unanswered", seconds=self.options.reinvite_timeout)
            await self._t38_refused("no answer to the T.38 re-INVITE")
            return
        if not outcome.ok:
            self._note("T.38 re-INVITE refused", status=outcome.status, reason=outcome.reason)
            await self._t38_refused(f"T.38 refused ({outcome.status} {outcome.reason})")
            return
        if self.session is not None and self.session.media is Media.T38 and self.udptl is not None:
            return  # the peer's own T.38 offer won meanwhile (glare): we are there already
        try:
            negotiation = process_answer(offer, parse_sdp(outcome.remote_sdp))
            image = negotiation.chosen_image
            if image is None:
                raise SdpError("the answer rejected the image line")
            deal = accept_image_answer(our_image_attributes(), image.attributes)
        except Exception as exc:
            self._note("T.38 answer unusable", error=str(exc))
            await self._t38_refused(f"T.38 answer unusable: {exc}")
            return
        await self._start_t38(deal, (image.address, image.port))

    async def _insist_on_t38(self) -> None:
        """Sending side under ``only`` (or ``auto`` with ``t38_request``): the peer should move us to
        T.38; if it has not after ``t38_wait`` seconds, we ask ourselves."""
        await asyncio.sleep(self.options.t38_wait)
        await self.request_t38()

    async def _t38_refused(self, why: str) -> None:
        if self.image_port is not None:
            self.image_port.close()
            self.image_port = None
        if self.options.t38 is T38Policy.ONLY:
            self.end_reason = f"t38=only: {why}"
            if self.session is not None:
                self.session.close()
            await self._hangup()
        else:
            log.info("%s: %s; the fax goes on in G.711", self.name, why)

    # --- media ----------------------------------------------------------------------------------------
    def _new_session(self, media: Media, t38_options: Any = None) -> FaxSession:
        cfg = self.options.fax_config()
        if self.engine_started_at is None:
            self.engine_started_at = round(time.monotonic() - self.started, 3)
        if t38_options is not None:
            cfg = replace(cfg, t38=t38_options)
        return FaxSession(
            calling=self.sending,
            send_file=self.send_file,
            receive_file=self.receive_file,
            config=cfg,
            media=media,
            name=self.name,
        )

    async def _start_audio(
        self, codec: str, payload_type: int, remote: tuple[str, int], *, engine: bool = True
    ) -> None:
        """G.711 media; ``engine=False`` sends silence until :meth:`_start_waiting_engine`."""
        pt = PT_PCMA if codec.upper() == "PCMA" else PT_PCMU
        self.audio_codec = codec.upper()
        if engine:
            self.session = self._new_session(Media.AUDIO)
        assert self.audio_port is not None
        self.rtp = RtpEndpoint(
            self.session if self.session is not None else SilentSession(),
            (self.host, self.audio_port.port),
            self.route_media("audio", remote),
            pt,
            playout_ms=self.options.playout_ms,
            media_timeout=self.options.media_timeout,
            on_media_timeout=self._on_media_timeout,
            symmetric=self.symmetric_media,
        )
        await self.rtp.start(sock=self.audio_port.take())
        self.audio_port = None
        self._note(
            "media g711",
            codec=self.audio_codec,
            payload_type=payload_type,
            remote=f"{remote[0]}:{remote[1]}",
            fax_engine="started" if engine else "waits for the T.38 re-INVITE",
            symmetric=self.symmetric_media,
        )

    async def _start_t38(self, deal: ImageDeal, remote: tuple[str, int]) -> None:
        media = t38_media(deal.session)
        if self.session is None:
            self.session = self._new_session(Media.T38, media.engine)
        else:
            self.session.switch_to_t38(media.engine)
        self.t38 = deal
        if self.udptl is None:
            assert self.image_port is not None
            endpoint = UdptlEndpoint(
                self.session, media.udptl, name=self.name, symmetric=self.symmetric_media
            )
            await endpoint.start(sock=self.image_port.take())
            self.image_port = None
            self.udptl = endpoint
        # No await from here on: the watch loop must never see the endpoint with a stale silence
        # clock (that race hung up calls right after the switch when the loop was busy).
        self._udptl_seen = (0, time.monotonic())
        self.udptl.set_peer(self.route_media("image", remote))
        if self.rtp is not None:  # the audio stream ends with the switch
            self.rtp.close()
        self._note(
            "media t38",
            remote=f"{remote[0]}:{remote[1]}",
            version=deal.session.version,
            ec=deal.session.udp_ec.value,
            peer_max_datagram=deal.session.send_max_datagram,
            symmetric=self.symmetric_media,
        )

    def _on_media_timeout(self, reason: str) -> None:
        if self.session is None or self.session.media is Media.AUDIO:
            self._media_dead = reason

    def _udptl_silent(self) -> bool:
        """Nothing moved in either direction for ``media_timeout`` seconds. Unlike RTP, T.38 is quiet
        by design (a receiver sends nothing while a page streams to it), so only total silence counts;
        a peer that vanishes mid-page is caught by T.30's own response timers (T.30 §5.4.3)."""
        if self.udptl is None:
            return False
        st = self.udptl.stats()
        moved = st.received + st.sent
        count, since = self._udptl_seen
        now = time.monotonic()
        if moved != count:
            self._udptl_seen = (moved, now)
            return False
        return now - since > self.options.media_timeout

    # --- the life of the call -------------------------------------------------------------------------
    async def _run_until_done(self) -> None:
        assert self.sip is not None
        deadline = self.started + self.options.max_call_seconds
        phase_e_at: float | None = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            session = self.session
            self._dispatch_events()
            if self.sip.terminated.done():
                if session is not None and not session.done:
                    session.close()  # phase E with what really arrived: the job fails, pages kept
                    self.end_reason = self.end_reason or f"remote hangup ({self.sip.terminated.result()})"
                self.end_reason = self.end_reason or f"call ended ({self.sip.terminated.result()})"
                return
            if session is not None and session.done:
                if phase_e_at is None:
                    phase_e_at = time.monotonic()
                    r = session.result
                    verdict = "T.30 phase E" if r is None or r.ok else f"T.30 phase E: {r.text}"
                    self.end_reason = self.end_reason or verdict
                if self.sending or time.monotonic() - phase_e_at > BYE_GRACE_SECONDS:
                    await self._hangup()
                    return
                continue
            reason = self._media_dead or (f"no UDPTL from the peer for {self.options.media_timeout:.0f} s"
                                          if self._udptl_silent() else None)  # fmt: skip
            if reason is None and time.monotonic() > deadline:
                reason = f"maximum call duration ({self.options.max_call_seconds:.0f} s) reached"
            if reason is not None:
                self.end_reason = reason
                if session is not None:
                    session.close()
                await self._hangup()
                return

    def _progress(self, what: str) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self, what)
            except Exception:
                log.exception("%s: progress callback failed", self.name)

    def _dispatch_events(self) -> None:
        if self.session is None or not self.session.events:
            return
        events = self.session.take_events()
        if self.on_event is not None:
            for e in events:
                try:
                    self.on_event(self, e)
                except Exception:
                    log.exception("%s: event callback failed", self.name)

    async def _hangup(self) -> None:
        if self.sip is not None and not self.sip.terminated.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sip.bye(), 10.0)

    async def abort(self, reason: str = "aborted") -> None:
        """End the call now (user abort): T.30 is terminated, the pages so far are kept."""
        self.end_reason = reason
        self.aborted = True
        if self._pending is not None:  # still ringing: CANCEL (RFC 3261 §9)
            with contextlib.suppress(Exception):
                await self._pending.cancel()
        if self.session is not None and not self.session.done:
            self.session.close()
        await self._hangup()

    def _release_ports(self) -> None:
        for r in (self.audio_port, self.image_port):
            if r is not None:
                r.close()
        self.audio_port = self.image_port = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.name, exc_info=task.exception())
            self._note("internal error", error=repr(task.exception()))

    async def _cleanup(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self.ended = time.monotonic()
        for ep in (self.rtp, self.udptl):
            if ep is not None:
                ep.close()
        self._release_ports()
        if self.session is not None:
            self.session.close()  # before phase E it terminates T.30 with what arrived; idempotent
            self._dispatch_events()

    # --- report ---------------------------------------------------------------------------------------
    def _note(self, what: str, **detail: Any) -> None:
        entry = {"at": round(time.monotonic() - self.started, 3), "event": what, **detail}
        self.media_log.append(entry)
        log.info("%s: %s %s", self.name, what, detail or "")

    def _outcome(self) -> CallOutcome:
        result = self.session.result if self.session is not None else None
        ok = bool(result and result.ok and (self.sending or result.pages > 0))
        media = self._final_media() or "none"
        return CallOutcome(
            ok=ok,
            sip_status=self.sip_status,
            sip_reason=self.sip_reason,
            result=result,
            media=media,
            end_reason=self.end_reason,
            duration_seconds=round((self.ended or time.monotonic()) - self.started, 2),
            report=self.report(),
            aborted=self.aborted,
            answered=self.answered,
        )

    def _final_media(self) -> str | None:
        """What carried the fax at the end; when no fax engine ever ran (``only`` refused, a peer gone
        early), what carried the call: G.711 that was up is not "none"."""
        if self.session is not None:
            return self.session.media.value
        if self.udptl is not None:
            return Media.T38.value
        return Media.AUDIO.value if self.rtp is not None else None

    def _ladder(self) -> list[dict[str, Any]]:
        """Every SIP message of every attempt of this call, in time order; each step names its attempt
        when there was more than one (they are different Call-IDs, so different dialogs)."""
        started_loop = self.ua.now() - (time.monotonic() - self.started)
        call_ids = [a.call_id for a in self.attempts] or ([self.call_id] if self.call_id else [])
        steps = []
        for number, call_id in enumerate(call_ids, 1):
            for t, d, line in self.ua.ladder(call_id):
                step = {"t": round(t - started_loop, 3), "dir": d, "line": line}
                if len(call_ids) > 1:
                    step["attempt"] = number
                steps.append(step)
        return sorted(steps, key=lambda step: step["t"])

    def report(self) -> dict[str, Any]:
        """The call report: what happened on each layer of this call, as plain JSON."""
        s = self.session
        return {
            "call_id": self.call_id,
            "direction": "send" if self.sending else "receive",
            "remote": self.remote_party,
            "caller": self.caller,
            "started_at": self.started_wall,
            "duration_seconds": round((self.ended or time.monotonic()) - self.started, 2),
            "policy": str(self.options.t38),
            "local_ident": self.options.ident,
            "end_reason": self.end_reason,
            "sip": {
                "final_status": self.sip_status,
                "reason": self.sip_reason,
                "attempts": [asdict(a) for a in self.attempts],
                "ladder": self._ladder(),
            },
            "media": {
                "final": self._final_media(),
                "audio_codec": self.audio_codec,
                "t38": None
                if self.t38 is None
                else {
                    "local": list(self.t38.ours),
                    "remote": list(self.t38.theirs),
                    "negotiated": {
                        k: (v.value if hasattr(v, "value") else v)
                        for k, v in asdict(self.t38.session).items()
                    },
                },
                "events": self.media_log,
            },
            "t30_started_at": self.engine_started_at,
            "t30": [asdict(m) for m in s.timeline] if s else [],
            "pages": [asdict(p) for p in s.pages] if s else [],
            "rtp": self.rtp.stats().as_dict() if self.rtp else None,
            "udptl": asdict(self.udptl.stats()) if self.udptl else None,
            "result": s.result.as_dict() if s and s.result else None,
        }

"""An independent SIP user agent for tests: pjsua2 in its own process, driven by JSON lines.

Why a separate process: the pjsua2 2.15.1 wheel aborts the whole process on some paths (a Call object
alive after ``libDestroy()``, a T.38 re-INVITE it sent being accepted), and a crash must not take pytest
with it. ``tests/peers/pjsua_client.py`` starts this script and talks to it.

Protocol (one JSON object per line):
  stdin   ``{"id": 1, "cmd": "init", ...}``; every command gets exactly one response.
  stdout  ``{"type": "response", "id": 1, "ok": true, "result": {...}}`` or ``"ok": false, "error": "..."``
          ``{"type": "event", "event": "call_state", ...}`` whenever pjsua2 reports something.
Commands: init, register, unregister, answer_policy, call, answer, reinvite, hold, hangup, status, quit.
Events: started, reg_state, incoming_call (with the whole INVITE and its SDP), call_state, media_state,
tsx_state (every transaction change of a call; ``rx`` holds a received message), rx_offer (an in-dialog
offer, with its SDP), sdp_created, error (a Python error inside a callback), stopped.
Call handles are ``"c1"``, ``"c2"``, ... in the order calls appear (outgoing or incoming). Calls may
follow each other without limit; at most ``max_calls`` (4 in this wheel) exist at the same time.

All pjsua2 work happens on the main thread (``threadCnt = 0``, ``mainThreadOnly``), which polls
``libHandleEvents``; a reader thread only queues stdin lines. C-level output of the library goes to
stderr (file descriptor 1 is redirected), so stdout carries nothing but the JSON protocol.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

import pjsua2 as pj

INV_STATES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}
MEDIA_STATES = {
    pj.PJSUA_CALL_MEDIA_NONE: "NONE",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
    pj.PJSUA_CALL_MEDIA_ERROR: "ERROR",
}
TSX_STATES = {
    pj.PJSIP_TSX_STATE_NULL: "NULL",
    pj.PJSIP_TSX_STATE_CALLING: "CALLING",
    pj.PJSIP_TSX_STATE_TRYING: "TRYING",
    pj.PJSIP_TSX_STATE_PROCEEDING: "PROCEEDING",
    pj.PJSIP_TSX_STATE_COMPLETED: "COMPLETED",
    pj.PJSIP_TSX_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_TSX_STATE_TERMINATED: "TERMINATED",
    pj.PJSIP_TSX_STATE_DESTROYED: "DESTROYED",
}
HOST = "127.0.0.1"
#: ``init(prack=...)``: pjsua's use of RFC 3262 100rel for every account (AccountCallConfig.prackUse).
PRACK_USE = {
    "not_used": pj.PJSUA_100REL_NOT_USED,  # pjsua's default: Supported as UAC, never reliable as UAS
    "optional": pj.PJSUA_100REL_OPTIONAL,  # reliable 18x as UAS when the INVITE supports it
    "mandatory": pj.PJSUA_100REL_MANDATORY,  # Require: 100rel as UAC; as UAS refuses INVITEs without it
}
PJ_EINVALIDOP = 70013
STATS_REFRESH_S = 0.2


class CommandError(Exception):
    """A command that cannot be carried out (unknown call handle, bad arguments)."""


def sip_body(message: str) -> str:
    """The body of a SIP message as text (RFC 3261 §7.4: after the first empty line)."""
    for separator in ("\r\n\r\n", "\n\n"):
        _head, found, body = message.partition(separator)
        if found:
            return body
    return ""


def parse_dump_stream(dump: str, index: int) -> dict[str, Any] | None:
    """RTP counters of media ``index`` from pjsua's call dump ("#0 audio PCMU ... RX ... total 26pkt")."""
    block = re.search(rf"#{index} audio (.*?)(?=\n\s*#\d+ |\Z)", dump, re.DOTALL)
    if block is None:
        return None
    text = block.group(1)
    rx = re.search(r"RX pt=.*?total (\d+)pkt", text, re.DOTALL)
    tx = re.search(r"TX pt=.*?total (\d+)pkt", text, re.DOTALL)
    loss = re.search(r"RX pt=.*?pkt loss=(\d+)", text, re.DOTALL)
    if rx is None or tx is None:
        return None
    return {
        "index": index,
        "rx_packets": int(rx.group(1)),
        "tx_packets": int(tx.group(1)),
        "rx_lost": int(loss.group(1)) if loss else 0,
    }


def first_line(message: str) -> str:
    return message.split("\n", 1)[0].strip()


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """Report a Python error in a pjsua2 callback as an event: letting it unwind into C++ aborts."""

    @functools.wraps(callback)
    def wrapper(self: Any, prm: Any) -> None:
        try:
            callback(self, prm)
        except Exception:
            agent = getattr(self, "agent", None)
            if agent is not None:
                agent.emit("error", where=callback.__name__, error=traceback.format_exc())

    return wrapper


class PeerCall(pj.Call):
    """One call; forwards pjsua2 callbacks to the agent as events."""

    def __init__(self, agent: Agent, account: pj.Account, handle: str, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.agent = agent
        self.handle = handle
        self.finished = False
        self.summary: dict[str, Any] = {"call": handle}
        self.media_stats: dict[int, dict[str, Any]] = {}
        self.tone: pj.ToneGenerator | None = None
        self.recorder: pj.AudioMediaRecorder | None = None

    # -- callbacks (main thread, inside libHandleEvents) --

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        state = INV_STATES.get(info.state, str(info.state))
        self.summary.update(
            state=state,
            last_status_code=int(info.lastStatusCode),
            last_reason=info.lastReason,
            call_id=info.callIdString,
            role="uac" if info.role == pj.PJSIP_ROLE_UAC else "uas",
        )
        self.agent.emit(
            "call_state",
            call=self.handle,
            state=state,
            last_status_code=int(info.lastStatusCode),
            last_reason=info.lastReason,
            call_id=info.callIdString,
        )
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.finished = True
            self.agent.retire(self)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        media = []
        for mi in info.media:
            entry: dict[str, Any] = {
                "index": mi.index,
                "type": "audio" if mi.type == pj.PJMEDIA_TYPE_AUDIO else str(mi.type),
                "status": MEDIA_STATES.get(mi.status, str(mi.status)),
            }
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                self._connect_audio(mi.index)
                with contextlib.suppress(pj.Error):
                    entry["codec"] = self.getStreamInfo(mi.index).codecName
            media.append(entry)
        self.summary["media"] = media
        self.agent.emit("media_state", call=self.handle, media=media)

    @guarded
    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx_event = event.body.tsxState
        tsx = tsx_event.tsx
        fields: dict[str, Any] = {
            "call": self.handle,
            "method": tsx.method,
            "role": "uac" if tsx.role == pj.PJSIP_ROLE_UAC else "uas",
            "state": TSX_STATES.get(tsx.state, str(tsx.state)),
            "status_code": int(tsx.statusCode),
            "status_text": tsx.statusText,
        }
        if tsx_event.type == pj.PJSIP_EVENT_RX_MSG:
            message = tsx_event.src.rdata.wholeMsg
            fields["rx"] = message
            fields["rx_first_line"] = first_line(message)
        self.agent.emit("tsx_state", **fields)

    @guarded
    def onCallRxOffer(self, prm: pj.OnCallRxOfferParam) -> None:
        """A new offer inside the dialog (re-INVITE/UPDATE); the policy may reject it (RFC 3264 §8)."""
        self.agent.emit("rx_offer", call=self.handle, sdp=prm.offer.wholeSdp)
        code = self.agent.policy.get("reoffer_code", 200)
        if code != 200:
            prm.statusCode = code

    @guarded
    def onCallSdpCreated(self, prm: pj.OnCallSdpCreatedParam) -> None:
        self.agent.emit("sdp_created", call=self.handle, sdp=prm.sdp.wholeSdp, remote_sdp=prm.remSdp.wholeSdp)

    @guarded
    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        self.refresh_stats()

    # -- helpers --

    def _connect_audio(self, index: int) -> None:
        """Send something and listen: RTP flows both ways only if the bridge feeds the stream."""
        audio = self.getAudioMedia(index)
        manager = self.agent.endpoint.audDevManager()
        if self.agent.tone_hz:
            if self.tone is None:
                self.tone = pj.ToneGenerator()
                self.tone.createToneGenerator(8000, 1)
                tone = pj.ToneDesc()
                tone.freq1 = self.agent.tone_hz
                tone.freq2 = 0
                tone.on_msec = 1000
                tone.off_msec = 0
                tones = pj.ToneDescVector()
                tones.append(tone)
                self.tone.play(tones, True)
            self.tone.startTransmit(audio)
        else:
            manager.getCaptureDevMedia().startTransmit(audio)
        audio.startTransmit(manager.getPlaybackDevMedia())
        if self.agent.record_dir and self.recorder is None:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(os.path.join(self.agent.record_dir, f"{self.handle}.wav"))
            audio.startTransmit(self.recorder)

    def refresh_stats(self) -> None:
        """Remember RTP counters, so they survive the stream (pjsua2 drops them at hangup).

        ``getStreamStat`` of this wheel fails with PJ_EINVAL, so the counters come from the call dump
        (the text pjsua prints for ``dump``), which carries the same RTCP statistics.
        """
        if self.finished:
            return
        try:
            info = self.getInfo()
            dump = self.dump(True, "")
        except pj.Error:
            return
        for mi in info.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            stats = parse_dump_stream(dump, mi.index)
            if stats is None:
                continue
            with contextlib.suppress(pj.Error):
                stream = self.getStreamInfo(mi.index)
                stats.update(
                    codec=stream.codecName, tx_pt=int(stream.txPt), remote_rtp=stream.remoteRtpAddress
                )
            self.media_stats[mi.index] = stats

    def status(self) -> dict[str, Any]:
        if not self.finished:
            self.refresh_stats()
            with contextlib.suppress(pj.Error):
                info = self.getInfo()
                self.summary.update(
                    state=INV_STATES.get(info.state, str(info.state)),
                    last_status_code=int(info.lastStatusCode),
                    last_reason=info.lastReason,
                    call_id=info.callIdString,
                )
        result = dict(self.summary)
        result["finished"] = self.finished
        result["streams"] = [self.media_stats[idx] for idx in sorted(self.media_stats)]
        return result

    def release_media(self) -> None:
        self.tone = None
        self.recorder = None


class PeerAccount(pj.Account):
    def __init__(self, agent: Agent, name: str):
        super().__init__()
        self.agent = agent
        self.name = name

    @guarded
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        info = self.getInfo()
        self.agent.emit(
            "reg_state",
            account=self.name,
            code=int(prm.code),
            reason=prm.reason,
            expiration=int(prm.expiration),
            active=bool(info.regIsActive),
        )

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = self.agent.new_call(self, prm.callId)
        message = prm.rdata.wholeMsg
        info = call.getInfo()
        call.summary.update(role="uas", call_id=info.callIdString, state="INCOMING")
        self.agent.emit(
            "incoming_call",
            call=call.handle,
            account=self.name,
            remote_uri=info.remoteUri,
            local_uri=info.localUri,
            call_id=info.callIdString,
            source=prm.rdata.srcAddress,
            invite=message,
            sdp=sip_body(message),
        )
        self.agent.apply_answer_policy(call)


class Agent:
    """Owns the endpoint, accounts and calls; runs commands and timers on the main thread."""

    def __init__(self, out: TextIO):
        self.out = out
        self.endpoint: pj.Endpoint | None = None
        self.accounts: dict[str, PeerAccount] = {}
        self.calls: dict[str, PeerCall] = {}
        self.finished_calls: dict[str, dict[str, Any]] = {}
        self.retired: list[PeerCall] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.next_call = 1
        self.policy: dict[str, Any] = {"mode": "auto", "code": 200, "delay": 0.0, "ring": True}
        self.tone_hz = 0
        self.record_dir: str | None = None
        self.transports: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.running = True
        self.last_stats = 0.0
        self.prack = "not_used"

    # -- output --

    def emit(self, event: str, **fields: Any) -> None:
        self.send({"type": "event", "event": event, "time": time.time(), **fields})

    def send(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, default=str) + "\n")
        self.out.flush()

    # -- calls --

    def new_call(self, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> PeerCall:
        handle = f"c{self.next_call}"
        self.next_call += 1
        call = PeerCall(self, account, handle, call_id)
        self.calls[handle] = call
        return call

    def retire(self, call: PeerCall) -> None:
        """Called from onCallState(DISCONNECTED); the object is dropped later, outside the callback."""
        self.retired.append(call)

    def drop_retired(self) -> None:
        while self.retired:
            call = self.retired.pop()
            self.finished_calls[call.handle] = call.status()
            self.calls.pop(call.handle, None)
            call.release_media()
            del call

    def call_by_handle(self, handle: str) -> PeerCall:
        call = self.calls.get(handle)
        if call is None or call.finished:
            raise CommandError(f"no active call {handle!r}")
        return call

    def apply_answer_policy(self, call: PeerCall) -> None:
        mode = self.policy.get("mode", "auto")
        if mode == "reject":
            self.answer_call(call, int(self.policy.get("code", 486)))
            return
        if self.policy.get("ring", True):
            self.answer_call(call, 180)
        if mode == "auto":
            delay = float(self.policy.get("delay", 0.0))
            code = int(self.policy.get("code", 200))
            self.at(time.monotonic() + delay, lambda: self.answer_call(call, code))

    def answer_call(self, call: PeerCall, code: int, reason: str = "") -> None:
        if call.finished:
            return
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if reason:
            prm.reason = reason
        call.answer(prm)

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.timers.append((when, action))

    def run_timers(self) -> None:
        now = time.monotonic()
        due = [timer for timer in self.timers if timer[0] <= now]
        self.timers = [timer for timer in self.timers if timer[0] > now]
        for _, action in due:
            try:
                action()
            except Exception as exc:
                self.emit("error", where="timer", error=repr(exc))

    def refresh_stats(self) -> None:
        now = time.monotonic()
        if now - self.last_stats < STATS_REFRESH_S:
            return
        self.last_stats = now
        for call in list(self.calls.values()):
            call.refresh_stats()

    # -- commands --

    def handle(self, line: str) -> None:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            self.send({"type": "response", "id": None, "ok": False, "error": f"bad JSON: {exc}"})
            return
        request_id = request.pop("id", None)
        name = request.pop("cmd", None)
        method = getattr(self, f"cmd_{name}", None) if isinstance(name, str) else None
        if method is None:
            self.send({"type": "response", "id": request_id, "ok": False, "error": f"unknown cmd {name!r}"})
            return
        if name != "init" and self.endpoint is None and name != "quit":
            self.send({"type": "response", "id": request_id, "ok": False, "error": "init first"})
            return
        try:
            result = method(**request)
        except (CommandError, TypeError, ValueError, KeyError) as exc:
            self.send({"type": "response", "id": request_id, "ok": False, "error": f"{exc}"})
        except pj.Error as exc:
            self.send({"type": "response", "id": request_id, "ok": False, "error": exc.info()})
        except Exception:
            self.send({"type": "response", "id": request_id, "ok": False, "error": traceback.format_exc()})
        else:
            self.send({"type": "response", "id": request_id, "ok": True, "result": result or {}})

    def cmd_init(
        self,
        udp_port: int = 0,
        tcp: bool = True,
        tcp_port: int = 0,
        null_audio: bool = True,
        log_file: str | None = None,
        log_level: int = 5,
        user_agent: str = "vfax-test-pjsua2",
        max_calls: int = 4,
        tone_hz: int = 0,
        record_dir: str | None = None,
        codecs: list[str] | None = None,
        prack: str = "not_used",
    ) -> dict[str, Any]:
        """Create the endpoint: SIP and RTP on 127.0.0.1 only, G.711 only, no VAD, no echo canceller."""
        if self.endpoint is not None:
            raise CommandError("already initialised")
        if prack not in PRACK_USE:
            raise CommandError(f"bad prack {prack!r}: one of {', '.join(PRACK_USE)}")
        self.prack = prack
        endpoint = pj.Endpoint()
        endpoint.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.maxCalls = max_calls
        config.uaConfig.userAgent = user_agent
        config.logConfig.level = log_level
        config.logConfig.consoleLevel = 0
        config.logConfig.msgLogging = True
        if log_file:
            config.logConfig.filename = log_file
        config.medConfig.noVad = True
        config.medConfig.ecTailLen = 0
        config.medConfig.clockRate = 8000
        config.medConfig.sndClockRate = 8000
        config.medConfig.channelCount = 1
        endpoint.libInit(config)
        self.endpoint = endpoint

        udp = pj.TransportConfig()
        udp.port = udp_port
        udp.boundAddress = HOST
        udp.publicAddress = HOST
        self.transports["udp"] = endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, udp)
        if tcp:
            tcp_config = pj.TransportConfig()
            tcp_config.port = tcp_port
            tcp_config.boundAddress = HOST
            tcp_config.publicAddress = HOST
            self.transports["tcp"] = endpoint.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcp_config)
        endpoint.libStart()
        if null_audio:
            endpoint.audDevManager().setNullDev()

        wanted = codecs or ["PCMU/8000/1", "PCMA/8000/1"]
        for codec in endpoint.codecEnum2():
            priority = 0
            if codec.codecId in wanted:
                priority = 255 - wanted.index(codec.codecId)
            endpoint.codecSetPriority(codec.codecId, priority)

        self.tone_hz = tone_hz
        self.record_dir = record_dir
        for name, transport_id in self.transports.items():
            local = endpoint.transportGetInfo(transport_id).localName
            self.ports[name] = int(local.rsplit(":", 1)[1])
        # An account without registration, so calls work before (or without) `register`.
        self.accounts["local"] = self._make_account("local", f"sip:peer@{HOST}:{self.ports['udp']}")
        return {"udp_port": self.ports["udp"], "tcp_port": self.ports.get("tcp"), "version": pj_version()}

    def _account_config(self, id_uri: str, transport: str = "udp") -> pj.AccountConfig:
        config = pj.AccountConfig()
        config.idUri = id_uri
        config.sipConfig.transportId = self.transports[transport]
        config.natConfig.sipOutboundUse = 0
        config.natConfig.contactRewriteUse = 0
        config.natConfig.viaRewriteUse = 0
        config.natConfig.sdpNatRewriteUse = 0
        config.natConfig.iceEnabled = False
        config.callConfig.prackUse = PRACK_USE[self.prack]
        config.mediaConfig.transportConfig.boundAddress = HOST
        config.mediaConfig.transportConfig.publicAddress = HOST
        return config

    def _make_account(self, name: str, id_uri: str, config: pj.AccountConfig | None = None) -> PeerAccount:
        account = PeerAccount(self, name)
        account.create(config or self._account_config(id_uri))
        return account

    def cmd_register(
        self,
        registrar: str,
        user: str,
        password: str,
        realm: str = "*",
        domain: str | None = None,
        proxy: str | None = None,
        transport: str = "udp",
        expires: int = 300,
        name: str = "main",
    ) -> dict[str, Any]:
        """Add an account that registers (RFC 3261 §10) and routes its calls via ``proxy``.

        ``proxy`` defaults to the registrar with ``;lr`` so INVITEs traverse the same proxy.
        """
        if name in self.accounts:
            raise CommandError(f"account {name!r} exists")
        host = domain or registrar.split(":", 1)[1].split(";", 1)[0]
        config = self._account_config(f"sip:{user}@{host}", transport)
        config.regConfig.registrarUri = registrar
        config.regConfig.timeoutSec = expires
        config.regConfig.retryIntervalSec = 0
        route = proxy if proxy is not None else registrar + ";lr"
        if transport == "tcp" and "transport=" not in route:
            route += ";transport=tcp"
        if route:
            config.sipConfig.proxies.append(route)
        config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", realm, user, 0, password))
        self.accounts[name] = self._make_account(name, config.idUri, config)
        self.accounts[name].setDefault()
        return {"account": name, "id_uri": config.idUri}

    def cmd_unregister(self, name: str = "main") -> dict[str, Any]:
        account = self.accounts.get(name)
        if account is None:
            raise CommandError(f"no account {name!r}")
        account.setRegistration(False)
        return {}

    def cmd_answer_policy(self, **policy: Any) -> dict[str, Any]:
        """mode: "auto" (``code`` after ``delay`` s), "reject" (``code``), "manual" (use `answer`);
        ring: send 180 first; reoffer_code: status for in-dialog offers (200 accepts)."""
        if policy.get("mode", self.policy["mode"]) not in ("auto", "reject", "manual"):
            raise CommandError(f"bad mode {policy.get('mode')!r}")
        self.policy.update(policy)
        return dict(self.policy)

    def cmd_call(self, uri: str, account: str | None = None, headers: dict[str, str] | None = None) -> dict:
        acc = self.accounts[account] if account else self.accounts.get("main", self.accounts["local"])
        call = self.new_call(acc)
        prm = pj.CallOpParam(True)
        for name, value in (headers or {}).items():
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            prm.txOption.headers.append(header)
        try:
            call.makeCall(uri, prm)
        except pj.Error:
            self.calls.pop(call.handle, None)
            raise
        info = call.getInfo()
        call.summary.update(role="uac", call_id=info.callIdString, state="CALLING")
        return {"call": call.handle, "call_id": info.callIdString}

    def cmd_answer(self, call: str, code: int = 200, reason: str = "") -> dict[str, Any]:
        self.answer_call(self.call_by_handle(call), code, reason)
        return {}

    def cmd_reinvite(self, call: str, wait: float = 2.0) -> dict[str, Any]:
        """Re-offer the current media (RFC 3261 §14.1, RFC 3264 §8), resuming it if it was held.

        pjsua refuses (PJ_EINVALIDOP) while another INVITE transaction of the call is still open, e.g.
        the ACK to the peer's re-INVITE has not arrived yet (§14.2); retry for up to ``wait`` seconds.
        """
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        deadline = time.monotonic() + wait
        while True:
            target = self.call_by_handle(call)
            try:
                target.reinvite(prm)
                return {}
            except pj.Error as exc:
                if exc.status != PJ_EINVALIDOP or time.monotonic() >= deadline:
                    raise
            assert self.endpoint is not None
            self.endpoint.libHandleEvents(20)

    def cmd_hold(self, call: str) -> dict[str, Any]:
        self.call_by_handle(call).setHold(pj.CallOpParam(True))
        return {}

    def cmd_hangup(self, call: str, code: int = 0) -> dict[str, Any]:
        """BYE once confirmed, CANCEL or a final ``code`` before (pjsua picks, RFC 3261 §15)."""
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        self.call_by_handle(call).hangup(prm)
        return {}

    def cmd_status(self) -> dict[str, Any]:
        calls = {handle: call.status() for handle, call in self.calls.items()}
        calls.update({h: s for h, s in self.finished_calls.items() if h not in calls})
        accounts = {}
        for name, account in self.accounts.items():
            info = account.getInfo()
            accounts[name] = {
                "uri": info.uri,
                "registered": bool(info.regIsActive),
                "status": int(info.regStatus),
                "expires": int(info.regExpiresSec),
            }
        return {"calls": calls, "accounts": accounts, "ports": self.ports}

    def cmd_quit(self) -> dict[str, Any]:
        self.running = False
        return {}

    # -- lifecycle --

    def shutdown(self) -> None:
        """Hang up, drop every Call before libDestroy (a live Call then aborts the process)."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        with contextlib.suppress(pj.Error):
            endpoint.hangupAllCalls()
        # Let the BYEs complete, so the other side sees a clean hangup.
        deadline = time.monotonic() + 2.0
        while any(not c.finished for c in self.calls.values()) and time.monotonic() < deadline:
            endpoint.libHandleEvents(20)
            self.drop_retired()
        self.drop_retired()
        for call in self.calls.values():
            call.release_media()
        self.calls.clear()
        for account in self.accounts.values():
            with contextlib.suppress(pj.Error):
                account.shutdown()
        self.accounts.clear()
        gc.collect()
        # No un-REGISTER here (pjsua would wait about a second for it); `unregister` does that on demand.
        endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        self.endpoint = None


def pj_version() -> str:
    with contextlib.suppress(Exception):
        return pj.Endpoint.instance().libVersion().full
    return "unknown"


def main() -> int:
    # Keep stdout for the protocol: the library's own printing goes to stderr instead.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(protocol_fd, "w", buffering=1)
    sys.stdout = sys.stderr
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    agent = Agent(out)
    agent.emit("started", pid=os.getpid())
    try:
        while agent.running:
            if agent.endpoint is not None:
                agent.endpoint.libHandleEvents(10)
                agent.drop_retired()
                agent.run_timers()
                agent.refresh_stats()
                timeout = 0.0
            else:
                timeout = 0.05
            try:
                line = lines.get(timeout=timeout) if timeout else lines.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                break
            if line.strip():
                agent.handle(line)
    except Exception:
        agent.emit("error", where="main", error=traceback.format_exc())
        raise
    finally:
        agent.shutdown()
        agent.emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

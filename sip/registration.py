"""Registration of one address-of-record (RFC 3261 §10) with digest auth, refresh, back-off and keep-alive.

``Registration`` keeps one Call-ID and an increasing CSeq across its REGISTERs (§10.2.4), answers 401/407
through the core (MD5 or SHA-256, qop=auth with nc counting, stale=true: ``sip.auth``), takes the expiry
the registrar granted from our Contact's ``expires`` or the Expires header (§10.2.4), refreshes before it
runs out, backs off after failures (RFC 5626 §4.5 formula), retries with Min-Expires after a 423
(§10.3 step 7) and unregisters with ``Expires: 0`` on ``stop()``.

Keep-alives every ``keepalive_interval`` seconds: ``keepalive="crlf"`` sends RFC 5626 §4.4.1 CRLF (keeps a
NAT binding or TCP connection open, proves nothing: nobody answers a CRLF on UDP); ``keepalive="options"``
sends OPTIONS to the registrar and proves it is alive, which "registered" must mean: a registrar that does
not answer within ``keepalive_timeout`` (any answer counts, a 401 too) makes the state ``FAILED`` at once,
instead of "registered" until the next refresh fails (half the expiry plus 32 s of Timer F later), and
the refresh loop retries with back-off; when it answers again we register at once.

NAT (RFC 3581, as pjsip's contact rewriting): every request asks for ``rport``; when the registrar's
answer says it saw us at another address (``received``/``rport`` in our Via), that address becomes our
UDP Contact and Via sent-by, and we register it at once, removing the stale Contact in the same REGISTER.
Each answer (refreshes, OPTIONS keep-alives) is checked again, so a binding the NAT moved is registered
anew within one keep-alive interval. Behind a NAT with no keep-alive configured, CRLF keep-alives every
``nat_keepalive_interval`` seconds hold the binding open. Not done with ``rewrite_contact=False`` or when
the user agent was given an advertised address (the user said what is public).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from dataclasses import dataclass

from sip.auth import DigestClient
from sip.core import destination_for
from sip.errors import SipParseError
from sip.locate import LocateError, is_ip
from sip.message import Headers, Response
from sip.uri import NameAddr, SipUri, new_call_id, new_tag
from sip.useragent import UserAgent, answered_by_peer

__all__ = [
    "Registration",
    "RegistrationResult",
    "RegistrationState",
    "backoff_delay",
    "normalize_registrar",
    "refresh_delay",
]

log = logging.getLogger(__name__)


class RegistrationState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERED = "unregistered"


@dataclass(slots=True)
class RegistrationResult:
    """What one REGISTER round (auth retries included) gave."""

    status: int
    reason: str
    expires: int
    contact: str
    rtt_ms: float
    response: Response | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def refresh_delay(expires: float) -> float:
    """Seconds until the refresh: half the interval, at least 32 s (64*T1) before the end if possible."""
    return max(1.0, min(expires * 0.5, expires - 32.0))


def backoff_delay(
    failures: int, *, base: float = 30.0, cap: float = 1800.0, rnd: float | None = None
) -> float:
    """RFC 5626 §4.5: ``min(cap, base * 2**failures)``, scaled by a random 50-100 % to spread retries."""
    upper = min(cap, base * (2 ** max(0, failures - 1)))
    r = random.uniform(0.5, 1.0) if rnd is None else rnd
    return upper * r


def normalize_registrar(server: str, transport: str | None = None) -> SipUri:
    """``HOST[:PORT]`` or a SIP URI → a registrar URI, with ``;transport=`` when not UDP."""
    text = server if server.lower().startswith(("sip:", "sips:")) else f"sip:{server}"
    uri = SipUri.parse(text)
    uri.user = None
    if transport and transport != "udp":
        uri.params["transport"] = transport
    return uri


class Registration:
    """Keeps ``user`` registered at ``registrar`` through ``ua`` until ``stop()``."""

    def __init__(
        self,
        ua: UserAgent,
        registrar: str | SipUri,
        user: str,
        password: str,
        *,
        expires: int = 3600,
        domain: str | None = None,
        auth_user: str | None = None,
        proxy: str | SipUri | None = None,
        transport: str | None = None,
        keepalive_interval: float | None = None,
        keepalive: str = "crlf",
        keepalive_timeout: float = 8.0,
        retry_base: float = 30.0,
        retry_cap: float = 1800.0,
        invites_only_from_registrar: bool = False,
        rewrite_contact: bool = True,
        nat_keepalive_interval: float = 15.0,
    ) -> None:
        self.ua = ua
        self.registrar = (
            registrar if isinstance(registrar, SipUri) else normalize_registrar(registrar, transport)
        )
        if transport and isinstance(registrar, SipUri) and transport != "udp":
            self.registrar.params["transport"] = transport
        self.transport = self.registrar.transport or ("tls" if self.registrar.scheme == "sips" else "udp")
        self.user = user
        self.domain = domain or self.registrar.host
        self.aor = NameAddr(SipUri(user=user, host=self.domain))
        self.auth = DigestClient(auth_user or user, password)
        self.proxy = proxy
        self.requested_expires = expires
        if keepalive not in ("crlf", "options"):
            raise ValueError(f"keepalive must be crlf or options, not {keepalive!r}")
        self.keepalive_interval = keepalive_interval
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.invites_only_from_registrar = invites_only_from_registrar
        self.call_id = new_call_id()
        self.from_tag = new_tag()
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.expires = 0
        self.contact = ""
        self.last_rtt_ms: float | None = None
        self.last_result: RegistrationResult | None = None
        self.failures = 0
        #: The registrar did not answer at all (timeout, transport error): a keep-alive answered again
        #: means it is back, so register at once instead of waiting out the back-off.
        self.unreachable = False
        self._task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._register_now = False
        self.rewrite_contact = rewrite_contact and self.transport == "udp" and not ua.advertised
        self.nat_keepalive_interval = nat_keepalive_interval
        #: The address the registrar reported for us (``received``/``rport``), once it differed from ours.
        self.public_address: tuple[str, int] | None = None
        #: Contacts registered before a NAT rewrite, removed (``expires=0``) by the next REGISTER.
        self._stale_contacts: list[NameAddr] = []

    @property
    def _contact(self) -> NameAddr:
        return self.ua.core.contact(self.transport, self.user)

    async def register_once(self, expires: int | None = None) -> RegistrationResult:
        """One REGISTER (with its auth and 423 retries); updates ``state``, ``expires``, ``last_rtt_ms``."""
        want = self.requested_expires if expires is None else expires
        try:  # RFC 3263: the registrar's (or proxy's) name; its targets are tried in turn
            targets = await self.ua.locate(self.registrar, proxy=self.proxy, transport=self.transport)
        except LocateError as exc:
            result = RegistrationResult(503, str(exc), 0, str(self._contact.uri), 0.0)
            self.last_result = result
            return result
        if targets and self.invites_only_from_registrar:
            config = self.ua.core.config
            config.invite_allow_list = frozenset(config.invite_allow_list or ()) | {t[1] for t in targets}
        for _ in range(5):
            self.cseq += 1
            contact = self._contact
            stale = [c for c in self._stale_contacts if c.uri != contact.uri]
            h = Headers([("Contact", f"{contact};expires={want}")])
            for old in stale:
                h.add("Contact", f"{old};expires=0")
            h.add("Expires", str(want))
            from_ = self.aor.copy()
            from_.tag = self.from_tag
            started = time.perf_counter()
            oreq = self.ua.start_request(
                "REGISTER", self.registrar, proxy=self.proxy, credentials=self.auth, headers=h,
                from_=from_, to=self.aor, call_id=self.call_id, cseq=self.cseq, transport=self.transport,
                targets=targets,
            )  # fmt: skip
            resp: Response = await oreq.user_data
            rtt = (time.perf_counter() - started) * 1000.0
            self.cseq = max(self.cseq, oreq.request.cseq[0])
            if resp.status == 423 and want:
                min_expires = resp.headers.get("Min-Expires")
                if min_expires and min_expires.strip().isdigit() and int(min_expires) > want:
                    want = int(min_expires)
                    continue
            if 200 <= resp.status < 300:
                self._stale_contacts = [c for c in self._stale_contacts if c not in stale]
                if want and self._mapping_changed(resp):
                    continue  # registered the address the NAT showed (the stale one removed)
            granted = self._granted(resp, contact, want) if 200 <= resp.status < 300 else 0
            result = RegistrationResult(resp.status, resp.reason, granted, str(contact.uri), rtt, resp)
            self.last_rtt_ms = rtt
            self.last_result = result
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _mapping_changed(self, resp: Response) -> bool:
        """Whether the answer shows us at another address than our Contact (a NAT between us): then that
        address becomes our Via/Contact and the old Contact is queued for removal."""
        if not self.rewrite_contact:
            return False
        try:
            via = resp.via
        except SipParseError:
            return False
        if via.transport != "UDP":
            return False  # a connection (TCP/TLS, perhaps to an outbound proxy) is not a UDP NAT binding
        if via.received is None and via.rport is None:
            return False  # the registrar did not say (no RFC 3581): nothing to learn
        seen = via.response_address()
        if not is_ip(seen[0]):
            return False
        contact = self._contact
        if (contact.uri.host_ip, contact.uri.port or 5060) == seen:
            return False
        log.info(
            "%s: registrar %s sees us at %s:%d, not %s:%s (NAT): registering that address",
            self.user, self.registrar, seen[0], seen[1], contact.uri.host_ip, contact.uri.port,
        )  # fmt: skip
        if contact not in self._stale_contacts:
            self._stale_contacts.append(contact)
        self.public_address = seen
        self.ua.set_public_address(self.transport, *seen)
        if not self.keepalive_interval and self.nat_keepalive_interval:
            self.keepalive, self.keepalive_interval = "crlf", self.nat_keepalive_interval
        return True

    def _ensure_keepalive(self) -> None:
        """Keep-alives run while we keep the registration (configured, or begun because of a NAT)."""
        if self.keepalive_interval and self._keepalive is None:
            self._keepalive = asyncio.ensure_future(self._keepalives())

    @staticmethod
    def _granted(resp: Response, contact: NameAddr, asked: int) -> int:
        """§10.2.4: the expiry of our binding: its Contact ``expires``, else Expires, else what we asked."""
        try:
            contacts = resp.contacts
        except SipParseError:
            contacts = []
        ours = contact.uri
        for c in contacts:
            u = c.uri
            if u.user == ours.user and u.host_ip == ours.host_ip and (u.port or 5060) == (ours.port or 5060):
                value = c.params.get("expires")
                if value and value.isdigit():
                    return int(value)
        header = resp.headers.get("Expires")
        if header and header.strip().isdigit():
            return int(header.strip())
        return asked

    async def start(self) -> RegistrationResult:
        """Register now and keep the binding refreshed in the background (retrying with back-off)."""
        self.state = RegistrationState.REGISTERING
        if self.invites_only_from_registrar:
            await self._restrict_invites()
        result = await self.register_once()
        self._apply(result)
        self._task = asyncio.ensure_future(self._run())
        self._ensure_keepalive()
        return result

    async def _restrict_invites(self) -> None:
        """Let initial INVITEs in only from the registrar (or outbound proxy) addresses; others get 403."""
        hop = SipUri.parse(str(self.proxy)) if self.proxy else self.registrar
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(hop.host_ip, hop.port or 5060)
            ips = {str(info[4][0]) for info in infos}
        except OSError:
            ips = {hop.host_ip}
        config = self.ua.core.config
        config.invite_allow_list = frozenset(config.invite_allow_list or ()) | ips

    def _apply(self, result: RegistrationResult) -> None:
        """The outcome of a REGISTER: a failed refresh ends "registered" now, not when the binding expires."""
        if result.ok:
            self.state = RegistrationState.REGISTERED
            self.expires = result.expires
            self.contact = result.contact
            self.failures = 0
            self.unreachable = False
        else:
            self.state = RegistrationState.FAILED
            self.expires = 0
            self.failures += 1
            self.unreachable = result.response is None or not answered_by_peer(result.response)
            log.warning(
                "REGISTER %s at %s failed: %s %s", self.user, self.registrar, result.status, result.reason
            )

    async def _run(self) -> None:
        while True:
            if self.state is RegistrationState.REGISTERED:
                delay = refresh_delay(self.expires)
            else:
                delay = backoff_delay(self.failures, base=self.retry_base, cap=self.retry_cap)
            if not self._register_now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._wake.is_set() and not self._register_now:
                    continue  # the state changed under us (keep-alive lost): a new delay
            self._register_now = False
            try:
                result = await self.register_once()
            except Exception:
                log.exception("REGISTER refresh failed")
                result = RegistrationResult(500, "Internal Error", 0, self.contact, 0.0)
            self._apply(result)
            self._ensure_keepalive()

    def _lost(self, why: str) -> None:
        """The registrar stopped answering: we cannot claim to be registered (calls to us go nowhere)."""
        log.warning("%s: registrar %s %s: not registered any more", self.user, self.registrar, why)
        self.state = RegistrationState.FAILED
        self.expires = 0
        self.failures += 1
        self.unreachable = True
        self.last_result = RegistrationResult(408, f"Registrar {why}", 0, self.contact, 0.0)
        self._wake.set()  # the refresh loop backs off from now

    async def ping(self, timeout: float | None = None) -> Response | None:
        """OPTIONS to the registrar (through the proxy); its answer, or None when none came in ``timeout``."""
        from_ = self.aor.copy()
        from_.tag = new_tag()
        try:  # RFC 3263 for a name (the outbound proxy's or the registrar's), as the REGISTER does
            targets = await self.ua.locate(self.registrar, proxy=self.proxy, transport=self.transport)
        except LocateError:
            return None
        oreq = self.ua.start_request(
            "OPTIONS", self.registrar, proxy=self.proxy, credentials=self.auth, from_=from_,
            to=NameAddr(SipUri.parse(str(self.registrar))), transport=self.transport, targets=targets,
        )  # fmt: skip
        future: asyncio.Future[Response] = oreq.user_data
        try:
            resp = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None  # the transaction runs on to its Timer F; its late answer is ignored
        return resp if answered_by_peer(resp) else None

    async def _keepalives(self) -> None:
        assert self.keepalive_interval
        hop = SipUri.parse(str(self.proxy)) if self.proxy else self.registrar
        dest = destination_for(hop, self.transport)
        while True:
            await asyncio.sleep(self.keepalive_interval)
            if self.keepalive == "crlf":
                self.ua.send_keepalive(dest)
                continue
            limit = min(self.keepalive_interval, self.keepalive_timeout)
            try:
                answer = await self.ping(limit)
            except Exception:
                log.exception("keep-alive OPTIONS failed")
                continue
            registered = self.state is RegistrationState.REGISTERED
            if answer is not None and registered and self._mapping_changed(answer):
                self._register_now = True  # the NAT moved our binding: register the new address now
                self._wake.set()
                continue
            if answer is None:
                if self.state is RegistrationState.REGISTERED:
                    self._lost(f"did not answer the keep-alive OPTIONS within {limit:g} s")
            elif self.state is RegistrationState.FAILED and self.unreachable and not self._register_now:
                log.info("%s: registrar %s answers again: registering", self.user, self.registrar)
                self._register_now = True
                self._wake.set()

    async def stop(self, unregister: bool = True) -> RegistrationResult | None:
        """Stop refreshing and remove the binding (``Expires: 0``, §10.2.2)."""
        for task in (self._task, self._keepalive):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._keepalive = None
        if not unregister or self.state is not RegistrationState.REGISTERED:
            self.state = RegistrationState.UNREGISTERED
            return None
        return await self.unregister()

    async def unregister(self) -> RegistrationResult:
        """Remove our binding now (REGISTER with ``Expires: 0``, §10.2.2), whatever the state says."""
        result = await self.register_once(expires=0)
        self.state = RegistrationState.UNREGISTERED
        self.expires = 0
        return result

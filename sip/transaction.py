"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted states), sans-I/O.

Four state machines: INVITE client (§17.1.1), non-INVITE client (§17.1.2), INVITE server (§17.2.1) and
non-INVITE server (§17.2.2). They do no I/O and read no clock: messages go out through the ``send``
callable of their ``TransactionLayer``, timers go into its ``TimerQueue`` and the events for the
transaction user (the UA core) go to a ``TransactionUser``. Timers A-K follow ``TimerValues``; the ones that
only absorb UDP retransmissions are zero on TCP/TLS.

RFC 6026 changes what RFC 3261 said about 2xx to INVITE: the client transaction stays ``ACCEPTED`` for
Timer M and passes retransmitted 2xx up (the core re-sends its ACK), the server transaction stays
``ACCEPTED`` for Timer L and absorbs retransmitted INVITEs while the core retransmits the 2xx itself.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Protocol

from sip.errors import SipParseError
from sip.message import Headers, Request, Response
from sip.timers import TimerHandle, TimerQueue, TimerValues
from sip.uri import Via

__all__ = [
    "Address",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "State",
    "TransactionLayer",
    "TransactionUser",
    "is_reliable",
]

log = logging.getLogger(__name__)

#: Where a message goes or came from: (transport, host, port); transport is ``udp``, ``tcp`` or ``tls``,
#: host an IP literal without brackets (or a name the edge resolves).
Address = tuple[str, str, int]


def is_reliable(address: Address) -> bool:
    """True for stream transports, where the transport layer itself retransmits (§17.1.1.2)."""
    return address[0] in ("tcp", "tls")


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TransactionUser(Protocol):
    """What a transaction reports to the layer above it (§17: "the TU")."""

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None: ...

    def on_timeout(self, txn: ClientTransaction | ServerTransaction, now: float) -> None: ...

    def on_terminated(self, txn: ClientTransaction | ServerTransaction) -> None: ...


SendFn = Callable[[Request | Response, Address, bool], None]  # message, destination, is_retransmission


class _Transaction:
    __slots__ = ("_timers", "dest", "key", "layer", "reliable", "request", "state", "tu")

    def __init__(self, layer: TransactionLayer, request: Request, dest: Address, tu: TransactionUser) -> None:
        self.layer = layer
        self.request = request
        self.dest = dest
        self.tu = tu
        self.reliable = is_reliable(dest)
        self.state = State.TERMINATED
        self._timers: dict[str, TimerHandle] = {}
        self.key: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def _start(self, name: str, delay: float, callback: Callable[[float], None], now: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self.layer.timers.schedule(now + delay, callback, f"{name}:{self.key}")

    def _stop(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _terminate(self) -> None:
        if self.state is State.TERMINATED and not self._timers:
            return
        self.state = State.TERMINATED
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.layer._remove(self)
        self.tu.on_terminated(self)  # type: ignore[arg-type]

    def transport_error(self, now: float) -> None:
        """§17.1.1.2/§17.1.4: the transport failed; the TU hears a timeout and the transaction ends."""
        if self.state is State.TERMINATED:
            return
        self.tu.on_timeout(self, now)  # type: ignore[arg-type]
        self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.value} {self.key}>"


# ---------------------------------------------------------------------------------------------- client


class ClientTransaction(_Transaction):
    """Base of the two client transactions; keyed by top Via branch and CSeq method (§17.1.3)."""

    __slots__ = ("interval", "last_response")

    def __init__(self, layer: TransactionLayer, request: Request, dest: Address, tu: TransactionUser) -> None:
        super().__init__(layer, request, dest, tu)
        branch = request.via.branch
        if not branch:
            raise ValueError("a client transaction needs a branch in its top Via")
        self.key = (branch, request.method)
        self.interval = 0.0
        self.last_response: Response | None = None

    @property
    def branch(self) -> str:
        return self.key[0]

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive(self, response: Response, now: float) -> None:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 with RFC 6026 §8.4: Calling → Proceeding → Completed (ACKed here) / Accepted → Terminated."""

    __slots__ = ("ack",)

    def __init__(self, layer: TransactionLayer, request: Request, dest: Address, tu: TransactionUser) -> None:
        super().__init__(layer, request, dest, tu)
        self.ack: Request | None = None

    def start(self, now: float) -> None:
        self.state = State.CALLING
        self.layer.send(self.request, self.dest, False)
        values = self.layer.values
        if not self.reliable:
            self.interval = values.timer_a
            self._start("A", self.interval, self._timer_a, now)
        self._start("B", values.timer_b, self._timer_b, now)

    def _timer_a(self, now: float) -> None:
        if self.state is State.CALLING:
            self.layer.send(self.request, self.dest, True)
            self.interval *= 2
            self._start("A", self.interval, self._timer_a, now)

    def _timer_b(self, now: float) -> None:
        if self.state is State.CALLING:
            self.tu.on_timeout(self, now)
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self._stop("A")
                self.last_response = response
                self.tu.on_response(self, response, now)
            elif status < 300:
                self.state = State.ACCEPTED
                self._stop("A")
                self._stop("B")
                self.last_response = response
                self._start("M", self.layer.values.timer_m, self._timer_end, now)
                self.tu.on_response(self, response, now)
            else:
                self.state = State.COMPLETED
                self._stop("A")
                self._stop("B")
                self.last_response = response
                self.ack = self._build_ack(response)
                self.layer.send(self.ack, self.dest, False)
                self._start("D", self.layer.values.timer_d(self.reliable), self._timer_end, now)
                self.tu.on_response(self, response, now)
        elif state is State.COMPLETED:
            if status >= 300 and self.ack is not None:
                self.layer.send(self.ack, self.dest, True)  # §17.1.1.2: retransmitted final, ACK again
        elif state is State.ACCEPTED and 200 <= status < 300:
            self.tu.on_response(self, response, now)  # RFC 6026: the TU ACKs each 2xx retransmission

    def _timer_end(self, now: float) -> None:
        self._terminate()

    def _build_ack(self, response: Response) -> Request:
        """§17.1.1.3: the ACK for a non-2xx final response, part of this transaction."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.values("Via")[0])
        for name in ("Route",):
            for value in req.headers.get_all(name):
                h.add(name, value)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("From") or "")
        h.add("To", response.headers.get("To") or req.headers.get("To") or "")
        h.add("Call-ID", req.headers.get("Call-ID") or "")
        h.add("CSeq", f"{req.cseq[0]} ACK")
        return Request(method="ACK", uri=req.uri, headers=h)

    def cancel_request(self) -> Request:
        """§9.1: the CANCEL of this INVITE: same Request-URI, top Via, Call-ID, From, To, CSeq number."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.values("Via")[0])
        for value in req.headers.get_all("Route"):
            h.add("Route", value)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("From") or "")
        h.add("To", req.headers.get("To") or "")
        h.add("Call-ID", req.headers.get("Call-ID") or "")
        h.add("CSeq", f"{req.cseq[0]} CANCEL")
        return Request(method="CANCEL", uri=req.uri, headers=h)


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying → Proceeding → Completed → Terminated; Timer E retransmits, F times out, K absorbs."""

    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = State.TRYING
        self.layer.send(self.request, self.dest, False)
        values = self.layer.values
        if not self.reliable:
            self.interval = values.timer_e
            self._start("E", self.interval, self._timer_e, now)
        self._start("F", values.timer_f, self._timer_f, now)

    def _timer_e(self, now: float) -> None:
        if self.state in (State.TRYING, State.PROCEEDING):
            self.layer.send(self.request, self.dest, True)
            t2 = self.layer.values.t2
            self.interval = min(2 * self.interval, t2) if self.state is State.TRYING else t2
            self._start("E", self.interval, self._timer_e, now)

    def _timer_f(self, now: float) -> None:
        if self.state in (State.TRYING, State.PROCEEDING):
            self.tu.on_timeout(self, now)
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # Completed: absorb retransmitted finals (§17.1.2.2)
        self.last_response = response
        if response.status < 200:
            self.state = State.PROCEEDING
            self.tu.on_response(self, response, now)
            return
        self.state = State.COMPLETED
        self._stop("E")
        self._stop("F")
        delay = self.layer.values.timer_k(self.reliable)
        self._start("K", delay, lambda t: self._terminate(), now)
        self.tu.on_response(self, response, now)


# ---------------------------------------------------------------------------------------------- server


class ServerTransaction(_Transaction):
    """Base of the two server transactions; responses go back to ``dest``, the request's source."""

    __slots__ = ("interval", "last_response")

    def __init__(
        self, layer: TransactionLayer, request: Request, source: Address, tu: TransactionUser
    ) -> None:
        super().__init__(layer, request, source, tu)
        self.key = server_key(request)
        self.interval = 0.0
        self.last_response: Response | None = None

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def respond(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def receive_retransmission(self, request: Request, now: float) -> bool:
        """Handle a request that matched this transaction; True when the TU must see it (ACK for 2xx)."""
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 with RFC 6026 §8.7: Proceeding → Completed → Confirmed / Accepted → Terminated."""

    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = State.PROCEEDING

    def respond(self, response: Response, now: float) -> None:
        state = self.state
        values = self.layer.values
        status = response.status
        if state is State.ACCEPTED and 200 <= status < 300:
            self.layer.send(response, self.dest, True)  # the TU retransmitting its 2xx (§13.3.1.4)
            return
        if state is not State.PROCEEDING:
            raise ValueError(f"cannot send {status} in state {state.value}")
        self.last_response = response
        self.layer.send(response, self.dest, False)
        if status < 200:
            return
        if status < 300:
            self.state = State.ACCEPTED
            self._start("L", values.timer_l, lambda t: self._terminate(), now)
            return
        self.state = State.COMPLETED
        if not self.reliable:
            self.interval = values.timer_g
            self._start("G", self.interval, self._timer_g, now)
        self._start("H", values.timer_h, self._timer_h, now)

    def _timer_g(self, now: float) -> None:
        if self.state is State.COMPLETED and self.last_response is not None:
            self.layer.send(self.last_response, self.dest, True)
            self.interval = min(2 * self.interval, self.layer.values.t2)
            self._start("G", self.interval, self._timer_g, now)

    def _timer_h(self, now: float) -> None:
        if self.state is State.COMPLETED:
            self.tu.on_timeout(self, now)  # no ACK ever came
            self._terminate()

    def receive_retransmission(self, request: Request, now: float) -> bool:
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop("G")
                self._stop("H")
                self._start("I", self.layer.values.timer_i(self.reliable), lambda t: self._terminate(), now)
                return False
            return self.state is State.ACCEPTED
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            self.layer.send(self.last_response, self.dest, True)
        return False


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying → Proceeding → Completed → Terminated (Timer J absorbs retransmitted requests)."""

    __slots__ = ()

    def start(self, now: float) -> None:
        self.state = State.TRYING

    def respond(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise ValueError(f"cannot send {response.status} in state {self.state.value}")
        self.last_response = response
        self.layer.send(response, self.dest, False)
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        self._start("J", self.layer.values.timer_j(self.reliable), lambda t: self._terminate(), now)

    def receive_retransmission(self, request: Request, now: float) -> bool:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            self.layer.send(self.last_response, self.dest, True)
        return False


def server_key(request: Request, method: str | None = None, via: Via | None = None) -> tuple[str, ...]:
    """The key that matches a request to a server transaction (§17.2.3).

    With an RFC 3261 branch: branch, sent-by and method (ACK matches the INVITE). Otherwise the RFC 2543
    fallback: Call-ID, From tag, CSeq number, top Via and method.
    """
    via = via or request.via
    m = method or request.method
    if m == "ACK":
        m = "INVITE"
    if via.rfc3261_branch:
        return (via.branch or "", via.host.lower(), str(via.port or ""), m)
    return ("2543", request.call_id, request.from_.tag or "", str(request.cseq[0]), str(via), m)


# ---------------------------------------------------------------------------------------------- layer


class TransactionLayer:
    """Holds the live transactions, matches incoming messages to them and owns their timers.

    ``send(message, destination, retransmission)`` is provided by the owner (the UA core), which
    serializes, logs and queues the bytes for the edge.
    """

    def __init__(self, send: SendFn, timers: TimerQueue, values: TimerValues | None = None) -> None:
        self.send = send
        self.timers = timers
        self.values = values or TimerValues()
        self.clients: dict[tuple[str, ...], ClientTransaction] = {}
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    def start_client(
        self, request: Request, dest: Address, tu: TransactionUser, now: float
    ) -> ClientTransaction:
        """Create and start the client transaction for ``request`` (not ACK, which has none, §17)."""
        if request.method == "ACK":
            raise ValueError("ACK is not sent through a client transaction")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        txn = cls(self, request, dest, tu)
        if txn.key in self.clients:
            raise ValueError(f"duplicate client transaction {txn.key}")
        self.clients[txn.key] = txn
        txn.start(now)
        return txn

    def start_server(
        self, request: Request, source: Address, tu: TransactionUser, now: float
    ) -> ServerTransaction:
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        txn = cls(self, request, source, tu)
        self.servers[txn.key] = txn
        txn.start(now)
        return txn

    def match_response(self, response: Response) -> ClientTransaction | None:
        """§17.1.3: top Via branch and CSeq method; None for a stray response (to be dropped)."""
        try:
            branch = response.via.branch
            method = response.cseq[1]
        except SipParseError:
            return None
        if not branch:
            return None
        return self.clients.get((branch, method))

    def match_request(self, request: Request, via: Via | None = None) -> ServerTransaction | None:
        """§17.2.3; ``via`` is the request's top Via when the caller has parsed it already."""
        return self.servers.get(server_key(request, via=via))

    def find_invite_server(self, request: Request, via: Via | None = None) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2: same key, method INVITE)."""
        return self.servers.get(server_key(request, "INVITE", via))

    def transport_error(self, dest: Address, now: float) -> int:
        """Fail every live transaction bound to ``dest`` (a TCP connection that broke); count them."""
        failed = [t for t in (*self.clients.values(), *self.servers.values()) if t.dest == dest]
        for txn in failed:
            txn.transport_error(now)
        return len(failed)

    def _remove(self, txn: _Transaction) -> None:
        table: dict[tuple[str, ...], ClientTransaction] | dict[tuple[str, ...], ServerTransaction]
        table = self.clients if isinstance(txn, ClientTransaction) else self.servers
        if table.get(txn.key) is txn:
            del table[txn.key]

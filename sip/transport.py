"""The asyncio edge of the SIP stack: UDP, TCP and TLS sockets on IPv4 or IPv6 (RFC 3261 §18).

One ``TransportSet`` per device: a UDP socket, a TCP listener and (when an ``ssl.SSLContext`` is given) a
TLS listener, all on the same host; outgoing stream connections are opened on demand and reused, and
responses to a request that came over a stream go back over that connection (§18.2.2). Streams are cut
into messages with ``StreamFramer``; a framing error closes the connection; RFC 5626 keep-alive pings get
their pong. Nothing here knows about transactions: parsed messages and raw datagrams go to the callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable

from sip.errors import SipParseError
from sip.message import PING, PONG, KeepAlivePing, KeepAlivePong, Request, Response, StreamFramer
from sip.transaction import Address

__all__ = ["TransportSet"]

log = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes, Address], None]
MessageHandler = Callable[[Request | Response, Address], None]
ErrorHandler = Callable[[Address], None]


@functools.lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


UDP_BATCH = 64
"""SIP datagrams handled per event-loop iteration (asyncio itself reads one per socket per iteration)."""
UDP_MAX = 65535


class _UdpProtocol(asyncio.DatagramProtocol):
    """The SIP UDP socket. After each datagram asyncio hands over, it reads what else is queued (up to
    :data:`UDP_BATCH`): on a loop that also carries hundreds of media streams an iteration can take a
    whole 20 ms media tick, and one SIP message per tick is too few for a burst of calls (INVITEs and
    ACKs waited seconds, re-INVITEs timed out with 408 in ``bench/calls.py`` at 600 calls)."""

    def __init__(self, owner: TransportSet, sock: socket.socket) -> None:
        self.owner = owner
        self._recvfrom = sock.recvfrom

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        on_datagram = self.owner.on_datagram
        on_datagram(data, ("udp", addr[0], addr[1]))
        for _ in range(UDP_BATCH - 1):
            try:
                data, addr = self._recvfrom(UDP_MAX)
            except BlockingIOError:
                return
            except OSError as exc:  # an ICMP error queued on the socket, or the socket closed meanwhile
                self.error_received(exc)
                return
            on_datagram(data, ("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP port unreachable and the like; the transaction times out


async def _bound_udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (an IP literal or a name) and ``port``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _StreamProtocol(asyncio.Protocol):
    """One TCP/TLS connection, in either direction."""

    def __init__(self, owner: TransportSet, transport_name: str, key: Address | None = None) -> None:
        self.owner = owner
        self.name = transport_name
        self.key = key
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.last_used = 0.0
        self.outgoing = key is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_used = asyncio.get_running_loop().time()
        if self.key is None:
            peer = transport.get_extra_info("peername")
            if len(self.owner._conns) >= self.owner.max_connections:
                log.info(
                    "refusing %s connection from %s: %d open", self.name, peer[0], len(self.owner._conns)
                )
                transport.close()
                return
            self.key = (self.name, peer[0], peer[1])
            self.owner._conns[self.key] = self
        for data in self.pending:
            self.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.key is None:
            return
        self.last_used = asyncio.get_running_loop().time()
        try:
            items = self.framer.feed(data)
        except SipParseError as exc:
            log.debug("closing %s connection %s:%s: %s", self.name, self.key[1], self.key[2], exc)
            self.close()
            return
        for item in items:
            if isinstance(item, KeepAlivePing):
                self.write(PONG)
            elif isinstance(item, KeepAlivePong):
                continue
            else:
                self.owner.on_message(item, self.key)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.last_used = asyncio.get_running_loop().time()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.key is not None and self.owner._conns.get(self.key) is self:
            del self.owner._conns[self.key]
        # TLS 1.3: a server refusing our (missing) client certificate says so after our handshake ended;
        # fail what waits on this connection with that reason instead of letting it time out.
        if self.outgoing and self.key is not None and isinstance(exc, ssl.SSLError):
            reason = tls_error_reason(exc)
            log.warning("tls connection to %s:%s closed: %s", self.key[1], self.key[2], reason)
            if reason is not None:
                self.owner.error_reasons[self.key] = reason
            self.owner.on_error(self.key)


def tls_error_reason(exc: BaseException) -> str | None:
    """A short reason naming a TLS handshake failure (``TLS: certificate verify failed: ...``), or None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"TLS: certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):  # a server that wants a client certificate may just hang up
        return f"TLS: connection reset during the handshake ({exc})"
    return None


class TransportSet:
    """UDP + TCP (+ TLS) sockets of one user agent, bound to one host.

    ``on_datagram(data, source)`` gets raw UDP payloads, ``on_message(msg, source)`` messages framed from
    streams, ``on_error(dest)`` destinations that could not be reached over a stream.
    """

    def __init__(
        self, on_datagram: DatagramHandler, on_message: MessageHandler, on_error: ErrorHandler
    ) -> None:
        self.on_datagram = on_datagram
        self.on_message = on_message
        self.on_error = on_error
        self.local_addresses: dict[str, tuple[str, int]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[Address, _StreamProtocol] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls_client: ssl.SSLContext | None = None
        #: Why the last connection to a destination failed (``TLS: certificate verify failed: ...``), for
        #: the 503 the core makes up: a refused certificate must be named, not reported as a timeout.
        self.error_reasons: dict[Address, str] = {}
        #: (ip, port) of a TLS target located from a domain -> that domain, the name its certificate must
        #: carry (RFC 5922 §4); a target given by address is checked against the address.
        self.tls_names: dict[tuple[str, int], str] = {}
        self._resolved: dict[tuple[str, int], str] = {}
        #: Stream connections kept at most (inbound beyond it are closed at once) and closed when idle.
        self.max_connections = 2048
        self.idle_timeout = 900.0
        self._sweeper: asyncio.TimerHandle | None = None

    async def bind(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        transports: tuple[str, ...] = ("udp", "tcp"),
        *,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        tls_port: int = 0,
        udp_buffer: int = 4 << 20,
    ) -> None:
        """Open the sockets; with ``port=0`` UDP and TCP share one free port (retrying on a race).

        ``udp_buffer`` is the SO_RCVBUF asked for: a burst of hundreds of INVITEs must not overflow it.
        """
        loop = asyncio.get_running_loop()
        self._tls_client = tls_client
        for attempt in range(20):
            try:
                if "udp" in transports:
                    sock = await _bound_udp_socket(host, port)
                    if udp_buffer:
                        with contextlib.suppress(OSError):  # best effort: the kernel caps it at rmem_max
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, udp_buffer)
                    try:
                        udp, _ = await loop.create_datagram_endpoint(
                            lambda s=sock: _UdpProtocol(self, s), sock=sock
                        )
                    except BaseException:
                        sock.close()
                        raise
                    self._udp = udp  # type: ignore[assignment]
                    bound = udp.get_extra_info("sockname")
                    self.local_addresses["udp"] = (host, bound[1])
                    port_tcp = bound[1]
                else:
                    port_tcp = port
                if "tcp" in transports:
                    server = await loop.create_server(
                        lambda: _StreamProtocol(self, "tcp"), host, port_tcp, reuse_address=True
                    )
                    self._servers.append(server)
                    self.local_addresses["tcp"] = (host, server.sockets[0].getsockname()[1])
                break
            except OSError:
                await self._close_sockets()
                if port or attempt == 19:
                    raise
        self._sweeper = loop.call_later(min(60.0, self.idle_timeout), self._sweep)
        if "tls" in transports or tls_server is not None:
            if tls_server is None:
                raise ValueError("TLS needs an ssl.SSLContext with a certificate (tls_server)")
            server = await loop.create_server(
                lambda: _StreamProtocol(self, "tls"), host, tls_port, ssl=tls_server, reuse_address=True
            )
            self._servers.append(server)
            self.local_addresses["tls"] = (host, server.sockets[0].getsockname()[1])

    def send(self, data: bytes, dest: Address) -> None:
        """Send without waiting: UDP at once, streams over an existing or a new connection."""
        transport, host, port = dest
        if not _is_ip(host):
            ip = self._resolved.get((host, port))
            if ip is None:
                self._spawn(self._resolve_and_send(data, dest))
                return
            host = ip
        if transport == "udp":
            if self._udp is None:
                self.on_error(dest)
                return
            try:
                self._udp.sendto(data, (host, port))
            except OSError as exc:
                log.debug("UDP send to %s:%s failed: %s", host, port, exc)
            return
        conn = self._conns.get((transport, host, port))
        if conn is None or conn.closed:
            conn = _StreamProtocol(self, transport, (transport, host, port))
            self._conns[(transport, host, port)] = conn
            self._spawn(self._connect(conn, dest, host))
        conn.write(data)

    async def _resolve_and_send(self, data: bytes, dest: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(dest[1], dest[2], type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.info("cannot resolve %s: %s", dest[1], exc)
            self.on_error(dest)
            return
        local_v6 = any(":" in h for h, _ in self.local_addresses.values())
        ips = [str(i[4][0]) for i in infos if (i[0] == socket.AF_INET6) == local_v6] or [str(infos[0][4][0])]
        self._resolved[(dest[1], dest[2])] = ips[0]
        self.send(data, dest)

    async def _connect(self, conn: _StreamProtocol, dest: Address, host: str) -> None:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        kwargs: dict[str, str] = {}
        if dest[0] == "tls":
            ctx = self._tls_client or ssl.create_default_context()
            # The name checked (and sent as SNI) is the target's host, not the address it resolved to.
            kwargs["server_hostname"] = self.tls_names.get((dest[1], dest[2]), dest[1]).strip("[]")
        local = self.local_addresses.get(dest[0]) or self.local_addresses.get("udp")
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn, host, dest[2], ssl=ctx, local_addr=(local[0], 0) if local else None,
                    **kwargs,  # type: ignore[arg-type]
                ),
                timeout=10.0,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = tls_error_reason(exc) if ctx is not None else None
            if reason is not None:
                name = kwargs.get("server_hostname", dest[1])
                log.warning("cannot connect to tls %s:%s (%s): %s", dest[1], dest[2], name, reason)
                self.error_reasons[dest] = reason
            else:
                log.info("cannot connect to %s %s:%s: %s", dest[0], host, dest[2], exc)
            conn.closed = True
            if self._conns.get(conn.key) is conn:  # type: ignore[arg-type]
                del self._conns[conn.key]  # type: ignore[arg-type]
            self.on_error(dest)

    def _sweep(self) -> None:
        """Close stream connections idle for ``idle_timeout`` (a scanner's open sockets must not pile up)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._conns.values()):
            if conn.transport is not None and now - conn.last_used > self.idle_timeout:
                log.debug("closing idle %s connection %s", conn.name, conn.key)
                conn.close()
        self._sweeper = loop.call_later(min(60.0, self.idle_timeout), self._sweep)

    def send_keepalive(self, dest: Address) -> None:
        """RFC 5626 §4.4.1: a double-CRLF ping (over UDP too, which many registrars accept)."""
        self.send(PING, dest)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def _close_sockets(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        for server in self._servers:
            server.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._servers.clear()
        await asyncio.sleep(0)

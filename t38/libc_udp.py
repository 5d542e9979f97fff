"""``send``/``recv`` on a connected UDP socket straight from libc (cffi, ABI mode), for the RTP hot path.

Python's socket methods parse the destination tuple on every ``sendto`` and raise (and build) a
``BlockingIOError`` for every empty ``recvfrom``; at 50 packets a second per direction of hundreds of
calls both show up in the profile (``/tmp``-free measurement: ``bench/rtp_clock.py``). Here a send is
one C call on a packet buffer that never leaves C memory, and an empty socket is a return value.

The socket stays owned by Python (``socket.socket``); only its file descriptor is used here.
"""

from __future__ import annotations

import errno
from typing import Any, Final

from cffi import FFI

__all__ = ["EMPTY", "MSG_DONTWAIT", "disconnect", "ffi", "recv_into", "send"]

ffi: Final = FFI()
ffi.cdef(
    """
    typedef long ssize_t;
    ssize_t send(int sockfd, const void *buf, size_t len, int flags);
    ssize_t recv(int sockfd, void *buf, size_t len, int flags);
    int connect(int sockfd, const void *addr, unsigned int addrlen);
    """
)
_libc = ffi.dlopen(None)
_send = _libc.send
_recv = _libc.recv
_UNSPEC = ffi.new("uint8_t[]", 16)  # a sockaddr whose family is AF_UNSPEC (0)

MSG_DONTWAIT: Final = 0x40  # Linux <bits/socket.h>
EMPTY: Final = -errno.EAGAIN
"""What :func:`recv_into` returns when no datagram is queued."""


def send(fd: int, buf: Any, length: int) -> int:
    """Send ``length`` octets of the cdata ``buf``; returns 0 or the errno of a failure."""
    if _send(fd, buf, length, MSG_DONTWAIT) < 0:
        return ffi.errno  # type: ignore[no-any-return]
    return 0


def recv_into(fd: int, buf: Any, size: int) -> int:
    """Read one datagram into the cdata ``buf``: its length, :data:`EMPTY` when none is queued, or
    ``-errno`` for an error queued on the socket (an ICMP port unreachable, say)."""
    n: int = _recv(fd, buf, size, MSG_DONTWAIT)
    if n >= 0:
        return n
    err: int = ffi.errno
    return EMPTY if err == errno.EWOULDBLOCK else -err


def disconnect(fd: int) -> int:
    """Dissolve a UDP socket's association (connect to AF_UNSPEC, connect(2)), which Python's socket
    module cannot do: it reads from anyone again. Returns 0 or the errno of a failure."""
    if _libc.connect(fd, _UNSPEC, 16) < 0:
        return ffi.errno  # type: ignore[no-any-return]
    return 0

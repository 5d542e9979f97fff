"""t38.libc_udp: send and recv on connected UDP sockets without Python's per-packet costs."""

from __future__ import annotations

import errno
import socket
import time

from t38 import libc_udp


def _pair() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return a, b


def _recv(fd: int, buf: object, wait: float = 1.0) -> int:
    deadline = time.monotonic() + wait
    while True:
        n = libc_udp.recv_into(fd, buf, 2048)
        if n != libc_udp.EMPTY or time.monotonic() > deadline:
            return n
        time.sleep(0.001)


def test_datagrams_go_out_and_come_in_whole_and_an_empty_socket_is_a_value() -> None:
    a, b = _pair()
    try:
        buf = libc_udp.ffi.new("uint8_t[]", 2048)
        assert libc_udp.recv_into(b.fileno(), buf, 2048) == libc_udp.EMPTY
        payload = bytes(range(172))
        out = libc_udp.ffi.from_buffer(bytearray(payload))
        assert libc_udp.send(a.fileno(), out, len(payload)) == 0
        n = _recv(b.fileno(), buf)
        assert n == 172 and libc_udp.ffi.buffer(buf)[:n] == payload
        assert libc_udp.recv_into(b.fileno(), buf, 2048) == libc_udp.EMPTY
    finally:
        a.close()
        b.close()


def test_an_icmp_error_is_a_negative_errno_not_an_exception() -> None:
    a, b = _pair()
    b.close()  # nobody listens on a's peer port any more: the kernel answers port unreachable
    try:
        buf = libc_udp.ffi.new("uint8_t[]", 64)
        assert libc_udp.send(a.fileno(), buf, 10) == 0
        results = {_recv(a.fileno(), buf, 0.5), libc_udp.send(a.fileno(), buf, 10)}
        assert -errno.ECONNREFUSED in results or errno.ECONNREFUSED in results
    finally:
        a.close()


def test_a_closed_descriptor_is_reported_as_an_error() -> None:
    a, b = _pair()
    fd = a.fileno()
    a.close()
    b.close()
    buf = libc_udp.ffi.new("uint8_t[]", 64)
    assert libc_udp.recv_into(fd, buf, 64) == -errno.EBADF
    assert libc_udp.send(fd, buf, 10) == errno.EBADF

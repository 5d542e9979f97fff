"""The G.711 hot path in C (``t38/native/rtp_native.c``): build, load, and the per-clock group of streams.

Why: with hundreds of G.711 calls the Python tick of :class:`t38.audio_transport.RtpEndpoint` costs
more CPU than spandsp's modems and the kernel together (perf over ``bench/rtp_clock.py``: libpython
and cffi 55 % of the process). The C file does one stream's tick with the same rules (its playout
buffer is a port of :class:`t38.rtp.PlayoutBuffer`, checked against it by tests/test_rtp_native.py)
and one call of :func:`NativeGroup.on_media_tick` runs every stream of a media clock.

It is optional. ``scripts/setup.sh`` builds it with the system C compiler (``python -m t38.native_rtp``
does the same); without a compiler, or with ``VFAX_NATIVE_RTP=0`` in the environment, every endpoint
runs the Python tick, which stays the reference. Loaded in cffi's ABI mode like spandsp, and it calls
spandsp through function pointers taken from :mod:`t38.spandsp`, so it links against nothing but libc.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final, Protocol

from t38.rtp import FRAME_SAMPLES, PlayoutBuffer, ReceiverStats, RtpSender
from t38.spandsp import ffi, lib

__all__ = [
    "ATT_ENGINE_STOPPED",
    "ATT_LEARNING",
    "ATT_MALFORMED",
    "ATT_SEND_ERROR",
    "ATT_SOCKET_ERROR",
    "ATT_TIMEOUT",
    "BAD_REASONS",
    "LIBRARY",
    "NativeGroup",
    "available",
    "build",
    "native",
    "new_stream",
    "receiver_stats",
]

log = logging.getLogger(__name__)

_DIR: Final = Path(__file__).resolve().parent / "native"
SOURCE: Final = _DIR / "rtp_native.c"
HEADER: Final = _DIR / "rtp_native.h"
LIBRARY: Final = _DIR / "libvfaxrtp.so"

# Attention bits and malformed reasons, as rtp_native.c defines them.
ATT_TIMEOUT: Final = 1
ATT_MALFORMED: Final = 2
ATT_SEND_ERROR: Final = 4
ATT_SOCKET_ERROR: Final = 8
ATT_ENGINE_STOPPED: Final = 16
ATT_LEARNING: Final = 32
BAD_REASONS: Final = {
    1: "header: shorter than the 12 octets RTP needs (RFC 3550 §5.1)",
    2: "version: not RTP version 2 (RFC 3550 §5.1)",
    3: "CSRC count: more identifiers announced than octets sent",
    4: "extension: header extension flag set but no extension header (§5.3.1)",
    5: "extension length: more words announced than octets sent",
    6: "padding: the count octet does not fit the packet",
}

ffi.cdef(HEADER.read_text())

_lib: Any = None
_tried = False


def build(output: Path = LIBRARY, cc: str | None = None) -> Path:
    """Compile the shared library with the system C compiler (``$CC`` or ``cc``). Raises on failure."""
    compiler = cc or os.environ.get("CC", "cc")
    tmp = output.with_suffix(".so.tmp")
    cmd = [compiler, "-O2", "-fPIC", "-shared", "-Wall", "-Werror", "-o", str(tmp), str(SOURCE)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.replace(tmp, output)
    return output


def native() -> Any:
    """The loaded library, or ``None`` (not built, or ``VFAX_NATIVE_RTP=0``). Decided once per process."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("VFAX_NATIVE_RTP", "1") == "0":
        log.info("native RTP path disabled by VFAX_NATIVE_RTP=0: G.711 runs the Python tick")
        return None
    newest_source = max(SOURCE.stat().st_mtime, HEADER.stat().st_mtime)
    if not LIBRARY.exists() or LIBRARY.stat().st_mtime < newest_source:
        log.info("native RTP path not built (%s): G.711 runs the Python tick", LIBRARY)
        return None
    try:
        loaded = ffi.dlopen(str(LIBRARY))
    except OSError as exc:  # truncated, another architecture...: the Python tick still works
        log.warning("native RTP path %s does not load (%s): G.711 runs the Python tick", LIBRARY, exc)
        return None
    ops = ffi.new("vfax_ops_t *")
    for name in ("fax_rx", "fax_tx", "fax_rx_fillin", "g711_encode", "g711_decode"):
        setattr(ops, name, ffi.cast(ffi.typeof(getattr(ops, name)), getattr(lib, name)))
    loaded.vfax_rtp_set_ops(ops)  # copied into C: ``ops`` may go
    _lib = loaded
    return _lib


def available() -> bool:
    return native() is not None


def new_stream(
    sender: RtpSender, payload_type: int, delay_ms: int = 60, late_resync: int = 5
) -> tuple[Any, tuple[Any, ...]]:
    """A ``vfax_rtp_t`` whose playout buffer is a fresh ``PlayoutBuffer(payload_type, delay_ms=...)``
    and whose sender goes on from ``sender``; with the buffers it points to (keep them alive with it).
    Wiring (fd, engine, G.711 law, timeout) is the caller's."""
    c = ffi.new("vfax_rtp_t *")
    delay, cap = PlayoutBuffer.geometry(delay_ms)
    ring, mask = ffi.new("uint8_t[]", cap), ffi.new("uint8_t[]", cap)
    c.ring, c.mask = ring, mask
    c.capacity, c.delay, c.frame, c.late_resync = cap, delay, FRAME_SAMPLES, late_resync
    c.payload_type = payload_type
    c.tx_pt = sender.payload_type
    c.tx_ssrc, c.tx_seq, c.tx_ts = sender.ssrc, sender.sequence_number, sender.timestamp
    c.tx_marker = sender._marker
    c.fd = -1
    c.media_timeout = -1.0
    return c, (ring, mask)


def receiver_stats(c: Any) -> ReceiverStats:
    """:meth:`PlayoutBuffer.stats` of a ``vfax_rtp_t``."""
    lost = c.lost_before + (max(0, c.max_ext_seq - c.base_ext_seq + 1 - c.received) if c.has_ssrc else 0)
    ssrc = c.ssrc if c.has_ssrc else None
    return ReceiverStats.of(
        c, lost=lost, jitter=c.jitter, max_late=c.max_late, max_depth=c.max_depth, ssrc=ssrc
    )


class NativeMember(Protocol):
    """What the group needs of an endpoint: its C struct and a way to hear about flagged ticks."""

    _c: Any

    def _attend(self, now: float) -> None: ...

    def _native_failed(self, exc: Exception) -> None: ...


class NativeGroup:
    """Every native RTP stream of one media clock, ticked by one C call (a :class:`MediaClient`).

    Streams join and leave at any time; while a tick runs (spandsp calls back into Python from it,
    and a callback may end a call) leaving only blanks the stream (``fd = -1``, no engine) and the
    array is compacted after the tick, so C never sees a pointer move or go away under it."""

    def __init__(self, on_empty: Any) -> None:
        self._members: list[NativeMember] = []
        self._size = 64
        self._array = ffi.new("vfax_rtp_t *[]", self._size)
        self._flags = ffi.new("int[]", self._size)
        self._ticking = False
        self._leaving: list[NativeMember] = []
        self._on_empty = on_empty

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: NativeMember) -> None:
        if len(self._members) == self._size:
            self._size *= 2
            array = ffi.new("vfax_rtp_t *[]", self._size)
            ffi.memmove(array, self._array, ffi.sizeof("vfax_rtp_t *") * len(self._members))
            self._array, self._flags = array, ffi.new("int[]", self._size)
        self._array[len(self._members)] = member._c
        self._members.append(member)

    def remove(self, member: NativeMember) -> None:
        if self._ticking:
            member._c.fd = -1
            member._c.fax = ffi.NULL
            member._c.cell = ffi.NULL
            self._leaving.append(member)
            return
        try:
            i = self._members.index(member)
        except ValueError:
            return
        last = self._members.pop()
        if last is not member:
            self._members[i] = last
            self._array[i] = last._c
        self._array[len(self._members)] = ffi.NULL
        if not self._members:
            self._on_empty(self)

    def on_media_tick(self, now: float) -> None:
        members = self._members
        self._ticking = True
        try:
            flagged = _lib.vfax_rtp_tick(self._array, len(members), now, self._flags)
            todo = [members[self._flags[k]] for k in range(flagged)]
        finally:
            self._ticking = False
        for member in todo:
            try:
                member._attend(now)
            except Exception as exc:  # one call's bug must not stop the clock for every other call
                log.exception("native RTP stream %r failed", member)
                self.remove(member)
                member._native_failed(exc)
        while self._leaving:
            self.remove(self._leaving.pop())

    def on_media_error(self, exc: Exception) -> None:
        log.error("native RTP group stopped: %r", exc)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        print(build())
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot build the native RTP path: {getattr(exc, 'stderr', '') or exc}", file=sys.stderr)
        sys.exit(1)

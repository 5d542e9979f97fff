"""One T.30 fax session (spandsp) over audio or over T.38, with events and one final result.

A FaxSession knows nothing about sockets or clocks: the caller moves time forward, in audio mode by
feeding and pulling 20 ms of 8 kHz PCM, in T.38 mode by ``advance(samples)``, and carries IFP packets
in and out. That keeps it usable both from a virtual-time simulator and from a real-time RTP/UDPTL
edge.

The usual SIP moment to switch from audio to T.38 is a re-INVITE right after answer, before T.30 has
started; ``switch_to_t38`` handles that, and also a later switch (a restart of T.30 in T.38): a sender
then resumes from the first page not yet confirmed, a receiver writes the rest into a new part file.
"""

from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from t38 import spandsp
from t38.spandsp import ffi

log = logging.getLogger("t38.engine")

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms, the RTP packetisation and spandsp tick we use everywhere
ECM_IMAGE_FRAMES = frozenset({"FCD", "RCP"})  # T.4 Annex A image frames, not control messages

MODEM_BITS = {
    "v27ter": spandsp.T30_SUPPORT_V27TER,
    "v29": spandsp.T30_SUPPORT_V29,
    "v17": spandsp.T30_SUPPORT_V17,
}
# Fastest bit rate each modem set can reach (T.30 Table 2): the modem list is how rate is limited.
MODEMS_FOR_RATE = {
    14400: ("v27ter", "v29", "v17"),
    12000: ("v27ter", "v29", "v17"),
    9600: ("v27ter", "v29"),
    7200: ("v27ter", "v29"),
    4800: ("v27ter",),
    2400: ("v27ter",),
}


class Media(enum.StrEnum):
    AUDIO = "g711"  # fax modem audio; G.711 (PCMU/PCMA) passthrough on the wire
    T38 = "t38"


@dataclass(frozen=True, slots=True)
class T38Options:
    """What spandsp's T.38 terminal needs from the negotiated SDP (T.38 Annex D attributes)."""

    version: int = 0
    max_bit_rate: int = 14400
    transferred_tcf: bool = True
    max_datagram: int = 400  # the PEER's T38FaxMaxDatagram: never send larger
    packet_repeats: int = 0  # 0 keeps spandsp's defaults; 1 when UDPTL redundancy does the job
    paced: bool = True  # send image data at modem speed, as a real gateway would


@dataclass(frozen=True, slots=True)
class FaxConfig:
    """T.30 settings of one session. Defaults are what a modern fax server offers."""

    ident: str = ""  # TSI when sending, CSI when receiving (T.30 §5.3.6.2.4, 20 chars)
    page_header: str | None = None  # header line printed on each sent page
    ecm: bool = True
    max_bit_rate: int = 14400
    t38: T38Options = field(default_factory=T38Options)

    def __post_init__(self) -> None:
        if self.max_bit_rate not in MODEMS_FOR_RATE:
            raise ValueError(
                f"max_bit_rate must be one of {sorted(MODEMS_FOR_RATE)}, not {self.max_bit_rate}"
            )
        if len(self.ident) > 20 or not self.ident.isascii():
            raise ValueError("ident must be at most 20 ASCII characters (T.30 §5.3.6.2.4)")


# --- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class T30Message:
    """A T.30 control message seen on the line (the call report's T.30 timeline)."""

    at: float  # line seconds since the session started
    direction: str  # "rx" or "tx"
    name: str  # DIS, DCS, CFR, MCF, EOP, ... as spandsp (after the ITU-T text) names them


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Phase B is done: the two ends agreed on speed, ECM and resolution (DCS)."""

    at: float
    remote_ident: str
    bit_rate: int
    ecm: bool
    x_resolution: int
    y_resolution: int


@dataclass(frozen=True, slots=True)
class PageDone:
    """Phase D: one more page was confirmed (sender) or received (receiver)."""

    at: float
    page: int  # 1-based count of pages done so far
    bit_rate: int
    ecm: bool
    bad_rows: int
    width: int
    length: int
    x_resolution: int
    y_resolution: int


@dataclass(frozen=True, slots=True)
class FaxResult:
    """Phase E: the truth about this session. ``ok`` only when T.30 completed with no error."""

    ok: bool
    code: int
    text: str
    pages: int
    pages_in_file: int
    bit_rate: int  # as trained (DCS accepted by CFR); 0 when no training succeeded
    ecm: bool
    x_resolution: int
    y_resolution: int
    remote_ident: str
    line_seconds: float
    media: str
    bad_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FaxEvent = T30Message | Negotiated | PageDone | FaxResult

_session_ids = itertools.count(1)


class FaxSession(spandsp.T30Listener):
    """One T.30 session, calling or answering, sending or receiving, over audio or T.38."""

    def __init__(
        self,
        *,
        calling: bool,
        send_file: Path | None = None,
        receive_file: Path | None = None,
        config: FaxConfig | None = None,
        media: Media = Media.AUDIO,
        name: str | None = None,
    ) -> None:
        if (send_file is None) == (receive_file is None):
            raise ValueError("a session either sends a file or receives into one")
        self.calling = calling
        self.config = config or FaxConfig()
        self.name = name or f"fax{next(_session_ids)}"
        self.send_file = send_file
        self.receive_file = receive_file
        self.receive_parts: list[Path] = []
        self.samples = 0  # line time in 8 kHz samples fed from Python
        # [audio engine live, samples fed by the native RTP path]: shared with C (t38.native_rtp)
        self._native_cell = ffi.new("int64_t[2]")
        self.events: list[FaxEvent] = []
        self.timeline: list[T30Message] = []
        self.pages: list[PageDone] = []
        self.ecm_frames = 0
        self.result: FaxResult | None = None
        self.negotiated: Negotiated | None = None
        self._pages_before_restart = 0
        self._part_first_page = 0
        self._t38_out: list[bytes] = []
        self._rx_buf = ffi.new("int16_t[]", FRAME_SAMPLES)
        self._tx_buf = ffi.new("int16_t[]", FRAME_SAMPLES)
        self._tx_bytes = ffi.buffer(self._tx_buf)
        self._audio: spandsp.FaxAudio | None = None
        self._t38: spandsp.FaxT38 | None = None
        self.media = media
        self._start_engine(media)

    # --- engine lifetime -----------------------------------------------------------------------------
    def _start_engine(self, media: Media) -> None:
        engine: spandsp.FaxAudio | spandsp.FaxT38
        if media is Media.AUDIO:
            engine = self._audio = spandsp.FaxAudio(self.calling, self, self.name)
            self._native_cell[0] = 1
        else:
            engine = self._t38 = spandsp.FaxT38(self.calling, self, self.name)
            o = self.config.t38
            self._t38.configure(
                version=o.version,
                max_datagram=o.max_datagram,
                max_bit_rate=min(o.max_bit_rate, self.config.max_bit_rate),
                transferred_tcf=o.transferred_tcf,
                packet_repeats=o.packet_repeats,
                paced=o.paced,
            )
        self._configure_t30(engine.t30)

    def _configure_t30(self, t30: Any) -> None:
        c = self.config
        lib = spandsp.lib
        if c.ident:
            lib.t30_set_tx_ident(t30, c.ident.encode("ascii"))
        if c.page_header:
            lib.t30_set_tx_page_header_info(t30, c.page_header.encode("ascii", "replace")[:50])
        lib.t30_set_ecm_capability(t30, int(c.ecm))
        modems = 0
        for m in MODEMS_FOR_RATE[c.max_bit_rate]:
            modems |= MODEM_BITS[m]
        lib.t30_set_supported_modems(t30, modems)
        lib.t30_set_supported_compressions(
            t30,
            spandsp.T30_SUPPORT_T4_1D_COMPRESSION
            | spandsp.T30_SUPPORT_T4_2D_COMPRESSION
            | spandsp.T30_SUPPORT_T6_COMPRESSION,
        )
        lib.t30_set_supported_resolutions(
            t30,
            spandsp.T30_SUPPORT_STANDARD_RESOLUTION
            | spandsp.T30_SUPPORT_FINE_RESOLUTION
            | spandsp.T30_SUPPORT_SUPERFINE_RESOLUTION
            | spandsp.T30_SUPPORT_R8_RESOLUTION
            | spandsp.T30_SUPPORT_R16_RESOLUTION,
        )
        lib.t30_set_supported_image_sizes(
            t30,
            spandsp.T30_SUPPORT_215MM_WIDTH
            | spandsp.T30_SUPPORT_UNLIMITED_LENGTH
            | spandsp.T30_SUPPORT_A4_LENGTH
            | spandsp.T30_SUPPORT_B4_LENGTH
            | spandsp.T30_SUPPORT_US_LETTER_LENGTH
            | spandsp.T30_SUPPORT_US_LEGAL_LENGTH,
        )
        if self.send_file is not None:
            start = self._pages_before_restart
            lib.t30_set_tx_file(t30, str(self.send_file).encode(), start, -1)
        else:
            assert self.receive_file is not None
            if not self.receive_parts:
                self.receive_parts.append(self.receive_file)
            elif self._pages_before_restart > self._part_first_page:
                # a restart after pages arrived: never overwrite them, write the rest to a new part
                f = self.receive_file
                self.receive_parts.append(
                    f.with_name(f"{f.stem}.part{len(self.receive_parts) + 1}{f.suffix}")
                )
            self._part_first_page = self._pages_before_restart
            part = self.receive_parts[-1]
            # T.6 (MMR) storage lets img2pdf wrap received pages into PDF without re-encoding.
            lib.t30_set_rx_encoding(t30, spandsp.T4_COMPRESSION_ITU_T6)
            lib.t30_set_rx_file(t30, str(part).encode(), -1)

    def _engine(self) -> spandsp.FaxAudio | spandsp.FaxT38 | None:
        return self._audio if self.media is Media.AUDIO else self._t38

    def switch_to_t38(self, options: T38Options | None = None) -> None:
        """Leave audio for T.38 (after a re-INVITE). Before T.30 starts this is seamless; later it
        restarts T.30 in T.38, resuming after the pages already done."""
        if self.media is Media.T38:
            return
        if options is not None:
            self.config = replace(self.config, t38=options)
        self._pages_before_restart = len(self.pages)
        if self._audio is not None:
            self._native_cell[0] = 0
            self._audio.close()
            self._audio = None
        self.media = Media.T38
        self._start_engine(Media.T38)
        log.info(
            "%s: switched to T.38 at %.2f s (pages done so far: %d)",
            self.name,
            self.line_seconds,
            self._pages_before_restart,
        )

    def close(self) -> None:
        """Free the spandsp objects. A session closed before phase E gets a 'call dropped' result."""
        engine = self._engine()
        if self.result is None and engine is not None and not engine.closed:
            spandsp.lib.t30_terminate(engine.t30)  # runs phase E with the real state of the transfer
        if self.result is None:
            self._finish(spandsp.T30_ERR_CALLDROPPED, None)
        self._native_cell[0] = 0
        for e in (self._audio, self._t38):
            if e is not None:
                e.close()
        self._audio = self._t38 = None

    def __enter__(self) -> FaxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- time and media -----------------------------------------------------------------------------
    @property
    def line_seconds(self) -> float:
        return (self.samples + self._native_cell[1]) / SAMPLE_RATE

    def native_audio(self) -> tuple[Any, Any] | None:
        """For the native RTP path: the ``fax_state_t *`` and the cell C keeps in step (its [0] says
        whether the audio engine still runs, [1] counts the samples C fed). ``None`` if not in audio."""
        if self._audio is None or self.done:
            return None
        return self._audio.state, self._native_cell

    @property
    def done(self) -> bool:
        return self.result is not None

    def audio_tx(self, count: int = FRAME_SAMPLES) -> Any:
        """Next ``count`` samples to send, as a cdata ``int16_t[]`` (valid until the next call).
        After a switch to T.38 (or when done) this is silence."""
        if self._audio is None or self.done:
            ffi.memmove(self._tx_buf, b"\0" * (2 * count), 2 * count)
            return self._tx_buf
        n = self._audio.tx(self._tx_buf, count)
        if n < count:
            ffi.memmove(self._tx_buf + n, b"\0" * (2 * (count - n)), 2 * (count - n))
        return self._tx_buf

    def audio_tx_bytes(self, count: int = FRAME_SAMPLES) -> bytes:
        """``audio_tx`` as little-endian PCM bytes, for callers outside cffi."""
        self.audio_tx(count)
        return self._tx_bytes[: 2 * count]

    def audio_rx(self, samples: Any, count: int = FRAME_SAMPLES) -> None:
        """Feed received samples: a cdata ``int16_t[]`` or PCM bytes. Moves line time."""
        self.samples += count
        if self._audio is None or self.done:
            return
        if isinstance(samples, bytes | bytearray | memoryview):
            samples = ffi.from_buffer("int16_t[]", samples)
        self._audio.rx(samples, count)

    def audio_missing(self, count: int = FRAME_SAMPLES) -> None:
        """Samples that never arrived (lost RTP): the modems keep their timing (``fax_rx_fillin``)."""
        self.samples += count
        if self._audio is not None and not self.done:
            self._audio.rx_fillin(count)

    def advance(self, samples: int = FRAME_SAMPLES) -> None:
        """T.38 mode: move spandsp's clock (timers, pacing); IFP output collects in take_t38_tx()."""
        self.samples += samples
        if self._t38 is not None and self.result is None:
            self._t38.advance(samples)

    def t38_rx(self, ifp: bytes, seq: int) -> None:
        """One received IFP packet with its UDPTL sequence number (gaps are spandsp's to judge)."""
        if self._t38 is not None and not self.done:
            self._t38.rx_ifp(ifp, seq)

    def take_t38_tx(self) -> list[bytes]:
        """IFP packets produced since the last call, in order, repeated as spandsp asked."""
        out, self._t38_out = self._t38_out, []
        return out

    def take_events(self) -> list[FaxEvent]:
        out, self.events = self.events, []
        return out

    # --- spandsp callbacks ----------------------------------------------------------------------------
    def _t30(self) -> Any:
        engine = self._engine()
        return engine.t30 if engine is not None else ffi.NULL

    def _remote_ident(self) -> str:
        t30 = self._t30()
        if t30 == ffi.NULL:
            return self.negotiated.remote_ident if self.negotiated else ""
        ptr = spandsp.lib.t30_get_rx_ident(t30)
        return ffi.string(ptr).decode("ascii", "replace").strip() if ptr != ffi.NULL else ""

    def on_t38_packet(self, ifp: bytes, count: int) -> None:
        if count <= 1:
            self._t38_out.append(ifp)
        else:
            self._t38_out.extend([ifp] * count)

    def on_frame(self, incoming: bool, frame: bytes) -> None:
        if len(frame) < 3:
            return
        name = spandsp.frame_name(frame[2])
        if name in ECM_IMAGE_FRAMES:  # hundreds per page: counted, not listed
            self.ecm_frames += 1
            return
        msg = T30Message(self.line_seconds, "rx" if incoming else "tx", name)
        self.timeline.append(msg)
        self.events.append(msg)

    @property
    def trained(self) -> bool:
        """Phase B reached a rate both ends accepted: a CFR went either way, or a page got through."""
        return bool(self.pages) or any(m.name == "CFR" for m in self.timeline)

    def on_phase_b(self, result: int) -> None:
        st = spandsp.transfer_stats(self._t30())
        self.negotiated = Negotiated(
            at=self.line_seconds,
            remote_ident=self._remote_ident(),
            bit_rate=st.bit_rate,
            ecm=st.ecm,
            x_resolution=st.x_resolution,
            y_resolution=st.y_resolution,
        )
        self.events.append(self.negotiated)

    def on_phase_d(self, result: int) -> None:
        st = spandsp.transfer_stats(self._t30())
        done = self._pages_before_restart + (st.pages_tx if self.send_file else st.pages_rx)
        while len(self.pages) < done:
            page = PageDone(
                at=self.line_seconds,
                page=len(self.pages) + 1,
                bit_rate=st.bit_rate,
                ecm=st.ecm,
                bad_rows=st.bad_rows,
                width=st.width,
                length=st.length,
                x_resolution=st.x_resolution,
                y_resolution=st.y_resolution,
            )
            self.pages.append(page)
            self.events.append(page)

    def on_phase_e(self, completion_code: int) -> None:
        self.on_phase_d(0)  # count a last page phase D did not report
        self._finish(completion_code, spandsp.transfer_stats(self._t30()))

    def _finish(self, code: int, st: spandsp.TransferStats | None) -> None:
        if self.result is not None:
            return
        self._native_cell[0] = 0  # no more audio into the engine, from C either
        pages = len(self.pages)
        ok = code == spandsp.T30_ERR_OK and (pages > 0 or self.send_file is not None)
        # spandsp's statistics hold the configured maximum, then what DCS proposed, whether or not the
        # training behind it succeeded: a rate is a result only once CFR accepted it (T.30 §5.3.4), so a
        # call that never trained reports 0, not our own setting dressed up as a negotiated speed.
        neg = st if self.trained else None
        self.result = FaxResult(
            ok=ok,
            code=code,
            text=spandsp.completion_text(code),
            pages=pages,
            pages_in_file=st.pages_in_file if st else 0,
            bit_rate=neg.bit_rate if neg else 0,
            ecm=neg.ecm if neg else False,
            x_resolution=neg.x_resolution if neg else 0,
            y_resolution=neg.y_resolution if neg else 0,
            remote_ident=self._remote_ident(),
            line_seconds=self.line_seconds,
            media=self.media.value,
            bad_rows=sum(p.bad_rows for p in self.pages),
        )
        self.events.append(self.result)
        log.info(
            "%s: phase E %s (%d: %s), %d pages",
            self.name,
            "OK" if ok else "FAILED",
            code,
            self.result.text,
            pages,
        )

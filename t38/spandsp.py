"""cffi bindings (ABI mode) to spandsp 0.0.6, the T.30 fax engine and its modems.

ABI mode (``ffi.dlopen``) needs no compiler at install time: Debian's ``libspandsp2`` is enough.
Only the functions vfax uses are declared; every struct spandsp owns stays opaque except
``t30_stats_t``, whose layout is fixed by the 0.0.6 header (``spandsp/t30.h``).

Ownership rule: a C object is created and freed by exactly one Python wrapper (``FaxAudio`` or
``FaxT38``). C callbacks carry an integer key, never a Python pointer, and look their owner up in a
registry that ``close()`` empties *before* the C object is freed, so a callback can never reach a
dead owner. spandsp only calls back from inside our own calls (rx/tx/timeout), on our thread.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cffi import FFI

log = logging.getLogger("t38.spandsp")
spandsp_log = logging.getLogger("t38.spandsp.lib")

CDEF: Final = r"""
typedef struct fax_state_s fax_state_t;
typedef struct t30_state_s t30_state_t;
typedef struct t38_terminal_state_s t38_terminal_state_t;
typedef struct t38_core_state_s t38_core_state_t;
typedef struct logging_state_s logging_state_t;
typedef struct g711_state_s g711_state_t;

typedef struct {
    int bit_rate;
    int error_correcting_mode;
    int pages_tx;
    int pages_rx;
    int pages_in_file;
    int x_resolution;
    int y_resolution;
    int width;
    int length;
    int image_size;
    int encoding;
    int bad_rows;
    int longest_bad_row_run;
    int error_correcting_mode_retries;
    int current_status;
} t30_stats_t;

typedef int (t30_phase_b_handler_t)(t30_state_t *s, void *user_data, int result);
typedef int (t30_phase_d_handler_t)(t30_state_t *s, void *user_data, int result);
typedef void (t30_phase_e_handler_t)(t30_state_t *s, void *user_data, int completion_code);
typedef void (t30_real_time_frame_handler_t)(t30_state_t *s, void *user_data, int direction,
                                             const uint8_t msg[], int len);
typedef int (t38_tx_packet_handler_t)(t38_core_state_t *s, void *user_data, const uint8_t *buf,
                                      int len, int count);
typedef void (*message_handler_func_t)(int level, const char *text);

fax_state_t *fax_init(fax_state_t *s, int calling_party);
int fax_free(fax_state_t *s);
int fax_rx(fax_state_t *s, int16_t *amp, int len);
int fax_rx_fillin(fax_state_t *s, int len);
int fax_tx(fax_state_t *s, int16_t *amp, int max_len);
void fax_set_transmit_on_idle(fax_state_t *s, int transmit_on_idle);
void fax_set_tep_mode(fax_state_t *s, int use_tep);
t30_state_t *fax_get_t30_state(fax_state_t *s);
logging_state_t *fax_get_logging_state(fax_state_t *s);

t38_terminal_state_t *t38_terminal_init(t38_terminal_state_t *s, int calling_party,
                                        t38_tx_packet_handler_t *tx_packet_handler,
                                        void *tx_packet_user_data);
int t38_terminal_free(t38_terminal_state_t *s);
int t38_terminal_send_timeout(t38_terminal_state_t *s, int samples);
void t38_terminal_set_config(t38_terminal_state_t *s, int config);
void t38_terminal_set_tep_mode(t38_terminal_state_t *s, int use_tep);
void t38_terminal_set_fill_bit_removal(t38_terminal_state_t *s, int remove);
t30_state_t *t38_terminal_get_t30_state(t38_terminal_state_t *s);
t38_core_state_t *t38_terminal_get_t38_core_state(t38_terminal_state_t *s);
logging_state_t *t38_terminal_get_logging_state(t38_terminal_state_t *s);

int t38_core_rx_ifp_packet(t38_core_state_t *s, const uint8_t *buf, int len, uint16_t seq_no);
void t38_set_t38_version(t38_core_state_t *s, int t38_version);
void t38_set_max_datagram_size(t38_core_state_t *s, int max_datagram_size);
void t38_set_fastest_image_data_rate(t38_core_state_t *s, int max_rate);
void t38_set_data_rate_management_method(t38_core_state_t *s, int method);
void t38_set_redundancy_control(t38_core_state_t *s, int category, int setting);
void t38_set_fill_bit_removal(t38_core_state_t *s, int fill_bit_removal);
logging_state_t *t38_core_get_logging_state(t38_core_state_t *s);

int t30_set_tx_ident(t30_state_t *s, const char *id);
const char *t30_get_rx_ident(t30_state_t *s);
int t30_set_tx_page_header_info(t30_state_t *s, const char *info);
void t30_set_rx_file(t30_state_t *s, const char *file, int stop_page);
void t30_set_tx_file(t30_state_t *s, const char *file, int start_page, int stop_page);
int t30_set_ecm_capability(t30_state_t *s, int enabled);
int t30_set_rx_encoding(t30_state_t *s, int encoding);
int t30_set_supported_modems(t30_state_t *s, int supported_modems);
int t30_set_supported_compressions(t30_state_t *s, int supported_compressions);
int t30_set_supported_resolutions(t30_state_t *s, int supported_resolutions);
int t30_set_supported_image_sizes(t30_state_t *s, int supported_image_sizes);
void t30_set_iaf_mode(t30_state_t *s, int iaf);
void t30_set_phase_b_handler(t30_state_t *s, t30_phase_b_handler_t *handler, void *user_data);
void t30_set_phase_d_handler(t30_state_t *s, t30_phase_d_handler_t *handler, void *user_data);
void t30_set_phase_e_handler(t30_state_t *s, t30_phase_e_handler_t *handler, void *user_data);
void t30_set_real_time_frame_handler(t30_state_t *s, t30_real_time_frame_handler_t *handler,
                                     void *user_data);
void t30_get_transfer_statistics(t30_state_t *s, t30_stats_t *t);
void t30_terminate(t30_state_t *s);
int t30_call_active(t30_state_t *s);
logging_state_t *t30_get_logging_state(t30_state_t *s);
const char *t30_completion_code_to_str(int result);
const char *t30_frametype(uint8_t x);

int span_log_set_level(logging_state_t *s, int level);
int span_log_set_tag(logging_state_t *s, const char *tag);
void span_log_set_message_handler(logging_state_t *s, message_handler_func_t func);

g711_state_t *g711_init(g711_state_t *s, int mode);
int g711_free(g711_state_t *s);
int g711_encode(g711_state_t *s, uint8_t g711_data[], const int16_t amp[], int len);
int g711_decode(g711_state_t *s, int16_t amp[], const uint8_t g711_data[], int g711_bytes);
"""

# --- constants from the 0.0.6 headers -------------------------------------------------------------
T30_ERR_OK: Final = 0
T30_ERR_CALLDROPPED: Final = 49  # counted from the enum in spandsp/t30.h; checked in tests

T30_SUPPORT_V27TER: Final = 0x01
T30_SUPPORT_V29: Final = 0x02
T30_SUPPORT_V17: Final = 0x04

T30_SUPPORT_T4_1D_COMPRESSION: Final = 0x02
T30_SUPPORT_T4_2D_COMPRESSION: Final = 0x04
T30_SUPPORT_T6_COMPRESSION: Final = 0x08

T30_SUPPORT_STANDARD_RESOLUTION: Final = 0x01
T30_SUPPORT_FINE_RESOLUTION: Final = 0x02
T30_SUPPORT_SUPERFINE_RESOLUTION: Final = 0x04
T30_SUPPORT_R8_RESOLUTION: Final = 0x20000
T30_SUPPORT_R16_RESOLUTION: Final = 0x40000

T30_SUPPORT_215MM_WIDTH: Final = 0x01
T30_SUPPORT_UNLIMITED_LENGTH: Final = 0x10000
T30_SUPPORT_A4_LENGTH: Final = 0x20000
T30_SUPPORT_B4_LENGTH: Final = 0x40000
T30_SUPPORT_US_LETTER_LENGTH: Final = 0x80000
T30_SUPPORT_US_LEGAL_LENGTH: Final = 0x100000

T30_IAF_MODE_T38: Final = 0x02

T4_COMPRESSION_ITU_T4_1D: Final = 1
T4_COMPRESSION_ITU_T4_2D: Final = 2
T4_COMPRESSION_ITU_T6: Final = 3

T38_DATA_RATE_MANAGEMENT_LOCAL_TCF: Final = 1
T38_DATA_RATE_MANAGEMENT_TRANSFERRED_TCF: Final = 2
T38_PACKET_CATEGORIES: Final = range(5)  # indicator, control, control end, image, image end
T38_TERMINAL_OPTION_NO_PACING: Final = 0x01
T38_TERMINAL_OPTION_REGULAR_INDICATORS: Final = 0x02

G711_ALAW: Final = 0
G711_ULAW: Final = 1

SPAN_LOG_SEVERITY_MASK: Final = 0x00FF
SPAN_LOG_SHOW_TAG: Final = 0x2000
SPAN_LOG_SHOW_PROTOCOL: Final = 0x0800
SPAN_LOG_ERROR: Final = 1
SPAN_LOG_WARNING: Final = 2
SPAN_LOG_PROTOCOL_WARNING: Final = 4
SPAN_LOG_FLOW: Final = 5
SPAN_LOG_DEBUG: Final = 8

LIBRARY_NAMES: Final = ("libspandsp.so.2", "libspandsp.so")


class SpandspError(RuntimeError):
    """spandsp could not be loaded or refused to create an object (our misuse or a broken install)."""


ffi = FFI()
ffi.cdef(CDEF)


def _load() -> Any:
    errors = []
    for name in LIBRARY_NAMES:
        try:
            return ffi.dlopen(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise SpandspError("cannot load spandsp (install Debian's libspandsp2): " + "; ".join(errors))


lib: Any = _load()
# The per-20-ms calls, bound once: attribute lookups on ``lib`` cost more than the calls themselves.
_fax_rx = lib.fax_rx
_fax_tx = lib.fax_tx
_rx_ifp_packet = lib.t38_core_rx_ifp_packet
_send_timeout = lib.t38_terminal_send_timeout


# --- logging --------------------------------------------------------------------------------------
def _python_level(span_level: int) -> int:
    severity = span_level & SPAN_LOG_SEVERITY_MASK
    if severity <= SPAN_LOG_ERROR:
        return logging.ERROR
    if severity <= SPAN_LOG_PROTOCOL_WARNING:
        return logging.WARNING
    if severity <= SPAN_LOG_FLOW:
        return logging.INFO
    return logging.DEBUG


@ffi.callback("void(int, const char *)")
def _on_span_message(level: int, text: Any) -> None:
    try:
        spandsp_log.log(_python_level(level), "%s", ffi.string(text).decode("latin-1").rstrip())
    except Exception:  # a callback must never raise into C
        log.exception("spandsp log handler failed")


def span_level_for_python() -> int:
    """The spandsp severity that matches what the Python logger would print (cheap when quiet)."""
    if spandsp_log.isEnabledFor(logging.DEBUG):
        return SPAN_LOG_DEBUG
    if spandsp_log.isEnabledFor(logging.INFO):
        return SPAN_LOG_FLOW
    return SPAN_LOG_WARNING


def route_logging(logging_state: Any, tag: Any) -> None:
    """Send one spandsp logging context to Python ``logging`` with ``tag`` naming the session.

    ``tag`` must be a cdata ``char[]`` that outlives the C object: spandsp keeps the pointer
    (``s->tag = tag`` in logging.c), it does not copy the string."""
    lib.span_log_set_message_handler(logging_state, _on_span_message)
    lib.span_log_set_tag(logging_state, tag)
    lib.span_log_set_level(
        logging_state, span_level_for_python() | SPAN_LOG_SHOW_TAG | SPAN_LOG_SHOW_PROTOCOL
    )


def completion_text(code: int) -> str:
    """The T.30 phase E completion code as spandsp names it (``t30_completion_code_to_str``)."""
    ptr = lib.t30_completion_code_to_str(code)
    return ffi.string(ptr).decode() if ptr != ffi.NULL else f"code {code}"


def frame_name(fcf: int) -> str:
    """T.30 facsimile control field to its name (DIS, DCS, MCF, ...), T.30 §5.3.6."""
    ptr = lib.t30_frametype(fcf & 0xFF)
    return ffi.string(ptr).decode() if ptr != ffi.NULL else f"0x{fcf:02X}"


# --- statistics -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TransferStats:
    """``t30_get_transfer_statistics``: what the T.30 engine knows about the transfer so far."""

    bit_rate: int
    ecm: bool
    pages_tx: int
    pages_rx: int
    pages_in_file: int
    x_resolution: int
    y_resolution: int
    width: int
    length: int
    image_size: int
    encoding: int
    bad_rows: int
    longest_bad_row_run: int
    ecm_retries: int
    current_status: int


def transfer_stats(t30: Any) -> TransferStats:
    raw = ffi.new("t30_stats_t *")
    lib.t30_get_transfer_statistics(t30, raw)
    return TransferStats(
        bit_rate=raw.bit_rate,
        ecm=bool(raw.error_correcting_mode),
        pages_tx=raw.pages_tx,
        pages_rx=raw.pages_rx,
        pages_in_file=raw.pages_in_file,
        x_resolution=raw.x_resolution,
        y_resolution=raw.y_resolution,
        width=raw.width,
        length=raw.length,
        image_size=raw.image_size,
        encoding=raw.encoding,
        bad_rows=raw.bad_rows,
        longest_bad_row_run=raw.longest_bad_row_run,
        ecm_retries=raw.error_correcting_mode_retries,
        current_status=raw.current_status,
    )


# --- T.30 callbacks, routed by integer key -------------------------------------------------------
class T30Listener:
    """What a T.30 owner hears from spandsp. Subclasses override what they need."""

    def on_phase_b(self, result: int) -> None: ...
    def on_phase_d(self, result: int) -> None: ...
    def on_phase_e(self, completion_code: int) -> None: ...
    def on_frame(self, incoming: bool, frame: bytes) -> None: ...
    def on_t38_packet(self, ifp: bytes, count: int) -> None: ...


_owners: dict[int, T30Listener] = {}
_keys = itertools.count(1)


def _owner(user_data: Any) -> T30Listener | None:
    return _owners.get(int(ffi.cast("intptr_t", user_data)))


def _guard(what: str, fn: Callable[[T30Listener], None], user_data: Any) -> None:
    owner = _owner(user_data)
    if owner is None:
        return
    try:
        fn(owner)
    except Exception:  # never let a Python error unwind through C
        log.exception("T.30 %s handler failed", what)


@ffi.callback("int(t30_state_t *, void *, int)")
def _on_phase_b(_s: Any, user_data: Any, result: int) -> int:
    _guard("phase B", lambda o: o.on_phase_b(result), user_data)
    return T30_ERR_OK


@ffi.callback("int(t30_state_t *, void *, int)")
def _on_phase_d(_s: Any, user_data: Any, result: int) -> int:
    _guard("phase D", lambda o: o.on_phase_d(result), user_data)
    return T30_ERR_OK


@ffi.callback("void(t30_state_t *, void *, int)")
def _on_phase_e(_s: Any, user_data: Any, code: int) -> None:
    _guard("phase E", lambda o: o.on_phase_e(code), user_data)


@ffi.callback("void(t30_state_t *, void *, int, const uint8_t *, int)")
def _on_frame(_s: Any, user_data: Any, direction: int, msg: Any, length: int) -> None:
    data = bytes(ffi.buffer(msg, length))
    _guard("frame", lambda o: o.on_frame(bool(direction), data), user_data)


@ffi.callback("int(t38_core_state_t *, void *, const uint8_t *, int, int)")
def _on_t38_tx(_s: Any, user_data: Any, buf: Any, length: int, count: int) -> int:
    # The hottest callback (every IFP packet): no closure, one lookup.
    owner = _owners.get(int(ffi.cast("intptr_t", user_data)))
    if owner is not None:
        try:
            owner.on_t38_packet(ffi.buffer(buf, length)[:], count)
        except Exception:
            log.exception("T.38 tx handler failed")
    return 0


def _register(owner: T30Listener) -> tuple[int, Any]:
    key = next(_keys)
    _owners[key] = owner
    return key, ffi.cast("void *", key)


def _install_t30_handlers(t30: Any, user_data: Any) -> None:
    lib.t30_set_phase_b_handler(t30, _on_phase_b, user_data)
    lib.t30_set_phase_d_handler(t30, _on_phase_d, user_data)
    lib.t30_set_phase_e_handler(t30, _on_phase_e, user_data)
    lib.t30_set_real_time_frame_handler(t30, _on_frame, user_data)


def live_objects() -> int:
    """How many spandsp engines are alive in this process (tests check it drops back to zero)."""
    return len(_owners)


# --- the two engines ------------------------------------------------------------------------------
class _Engine:
    """Common lifetime handling: one C object, freed once, callbacks cut before the free."""

    _free_fn: Callable[[Any], int]

    def __init__(self, listener: T30Listener, tag: str) -> None:
        self._key, self._user_data = _register(listener)
        self._tag = ffi.new("char[]", tag.encode("ascii", "replace")[:40])  # alive as long as the engine
        self._state: Any = ffi.NULL
        self.t30: Any = ffi.NULL

    @property
    def closed(self) -> bool:
        return self._state == ffi.NULL

    @property
    def state(self) -> Any:
        """The spandsp state pointer (``ffi.NULL`` once closed), for C code that drives the engine."""
        return self._state

    def close(self) -> None:
        """Free the C object. Safe to call twice; no callback reaches the listener afterwards."""
        if _owners is not None:  # None only while the interpreter tears the module down
            _owners.pop(self._key, None)
        if self._state != ffi.NULL:
            state, self._state, self.t30 = self._state, ffi.NULL, ffi.NULL
            type(self)._free_fn(state)

    def __del__(self) -> None:
        self.close()


class FaxAudio(_Engine):
    """``fax_state_t``: T.30 over the V.21/V.27ter/V.29/V.17 modems, 16-bit linear PCM at 8 kHz."""

    _free_fn = staticmethod(lambda s: lib.fax_free(s))

    def __init__(self, calling: bool, listener: T30Listener, tag: str) -> None:
        super().__init__(listener, tag)
        state = lib.fax_init(ffi.NULL, int(calling))
        if state == ffi.NULL:
            _owners.pop(self._key, None)
            raise SpandspError("fax_init failed")
        self._state = state
        self.t30 = lib.fax_get_t30_state(state)
        _install_t30_handlers(self.t30, self._user_data)
        lib.fax_set_transmit_on_idle(state, 1)  # keep the RTP stream continuous
        for ls in (lib.fax_get_logging_state(state), lib.t30_get_logging_state(self.t30)):
            route_logging(ls, self._tag)

    def rx(self, samples: Any, count: int) -> None:
        """Feed ``count`` received samples from an ``int16_t[]`` cdata buffer."""
        _fax_rx(self._state, samples, count)

    def rx_fillin(self, count: int) -> None:
        """Tell the modems that ``count`` samples were lost, so they keep their timing."""
        lib.fax_rx_fillin(self._state, count)

    def tx(self, samples: Any, count: int) -> int:
        """Fill an ``int16_t[]`` cdata buffer with up to ``count`` samples; returns how many."""
        return _fax_tx(self._state, samples, count)  # type: ignore[no-any-return]


class FaxT38(_Engine):
    """``t38_terminal_state_t``: T.30 over T.38 IFP packets (ITU-T T.38 terminal)."""

    _free_fn = staticmethod(lambda s: lib.t38_terminal_free(s))

    def __init__(self, calling: bool, listener: T30Listener, tag: str) -> None:
        super().__init__(listener, tag)
        state = lib.t38_terminal_init(ffi.NULL, int(calling), _on_t38_tx, self._user_data)
        if state == ffi.NULL:
            _owners.pop(self._key, None)
            raise SpandspError("t38_terminal_init failed")
        self._state = state
        self.t30 = lib.t38_terminal_get_t30_state(state)
        self.core = lib.t38_terminal_get_t38_core_state(state)
        _install_t30_handlers(self.t30, self._user_data)
        for ls in (
            lib.t38_terminal_get_logging_state(state),
            lib.t30_get_logging_state(self.t30),
            lib.t38_core_get_logging_state(self.core),
        ):
            route_logging(ls, self._tag)

    def configure(
        self,
        *,
        version: int,
        max_datagram: int,
        max_bit_rate: int,
        transferred_tcf: bool,
        packet_repeats: int,
        paced: bool,
    ) -> None:
        lib.t38_set_t38_version(self.core, version)
        lib.t38_set_max_datagram_size(self.core, max_datagram)
        lib.t38_set_fastest_image_data_rate(self.core, max_bit_rate)
        lib.t38_set_data_rate_management_method(
            self.core,
            T38_DATA_RATE_MANAGEMENT_TRANSFERRED_TCF
            if transferred_tcf
            else T38_DATA_RATE_MANAGEMENT_LOCAL_TCF,
        )
        if packet_repeats > 0:
            for category in T38_PACKET_CATEGORIES:
                lib.t38_set_redundancy_control(self.core, category, packet_repeats)
        lib.t38_terminal_set_config(self._state, 0 if paced else T38_TERMINAL_OPTION_NO_PACING)
        lib.t30_set_iaf_mode(self.t30, T30_IAF_MODE_T38)

    def rx_ifp(self, ifp: bytes, seq: int) -> None:
        _rx_ifp_packet(self.core, ifp, len(ifp), seq & 0xFFFF)

    def advance(self, samples: int) -> None:
        """Move spandsp's T.38 clock: timers, pacing and packet output (``t38_terminal_send_timeout``)."""
        _send_timeout(self._state, samples)


class G711Codec:
    """G.711 A-law or µ-law companding through spandsp (C speed, no ``audioop``)."""

    def __init__(self, ulaw: bool) -> None:
        state = lib.g711_init(ffi.NULL, G711_ULAW if ulaw else G711_ALAW)
        if state == ffi.NULL:
            raise SpandspError("g711_init failed")
        self._state = ffi.gc(state, lib.g711_free)

    def encode(self, samples: Any, count: int, out: Any) -> int:
        return int(lib.g711_encode(self._state, out, samples, count))

    def decode(self, data: Any, count: int, out: Any) -> int:
        return int(lib.g711_decode(self._state, out, data, count))

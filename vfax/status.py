"""Fax device status codes (the FSP's ``FAX_DEV_STATUS``) and how SIP and T.30 outcomes map onto them.

vfax's controller drives a device the way the Windows Fax Service drives a Fax Service Provider, so a
device reports its state with the same codes an FSP puts in ``FAX_DEV_STATUS.StatusId``. The numeric
values are those of the ``FS_*`` constants in Microsoft's ``faxdev.h`` (Windows SDK; the same numbers are
in the win32metadata-generated bindings, e.g. ``ynkdir/py-win32more``, module ``Windows.Win32.Devices.Fax``),
documented at https://learn.microsoft.com/windows/win32/api/faxdev/ns-faxdev-fax_dev_status.
That page also says which codes the Fax Service never retries (``FS_BAD_ADDRESS``, ``FS_CALL_BLACKLISTED``,
``FS_USER_ABORT``); :mod:`vfax.store.retry` starts from that rule.

Public API
----------
- :class:`FaxStatus` (``IntEnum``, Windows values), with ``string_id`` ("busy"), ``is_terminal``,
  ``is_success`` and ``description``; :meth:`FaxStatus.from_string_id`.
- :class:`FaxDevStatus`: one status report (status, pages, remote CSI, caller id, routing info, error
  code, string id, timestamp); ``to_dict()`` / ``from_dict()`` give its stable JSON shape.
- :func:`status_for_sip` and the table :data:`SIP_STATUS_TABLE` (final SIP responses of a failed INVITE).
- :func:`status_for_t30`, :func:`is_fax_phase_failure` and the table :data:`T30_COMPLETIONS`
  (spandsp 0.0.6 phase E completion codes, ``enum`` in ``spandsp/t30.h``).

All of it is pure data and pure functions: no clock is read (the caller passes ``at``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class FaxStatus(enum.IntEnum):
    """``FAX_DEV_STATUS.StatusId`` values (``faxdev.h``); the member name is the Windows constant."""

    FS_INITIALIZING = 0x20000000
    FS_DIALING = 0x20000001
    FS_TRANSMITTING = 0x20000002
    FS_RECEIVING = 0x20000004
    FS_COMPLETED = 0x20000008
    FS_HANDLED = 0x20000010
    FS_LINE_UNAVAILABLE = 0x20000020
    FS_BUSY = 0x20000040
    FS_NO_ANSWER = 0x20000080
    FS_BAD_ADDRESS = 0x20000100
    FS_NO_DIAL_TONE = 0x20000200
    FS_DISCONNECTED = 0x20000400
    FS_FATAL_ERROR = 0x20000800
    FS_NOT_FAX_CALL = 0x20001000
    FS_CALL_DELAYED = 0x20002000
    FS_CALL_BLACKLISTED = 0x20004000
    FS_USER_ABORT = 0x20200000
    FS_ANSWERED = 0x20800000

    @property
    def string_id(self) -> str:
        """Stable lower-case id for JSON, the database and the CLI: ``FS_NO_ANSWER`` -> ``"no_answer"``."""
        return self.name[3:].lower()

    @property
    def is_terminal(self) -> bool:
        """True when the operation is over: no further status follows for this attempt."""
        return self not in _IN_PROGRESS

    @property
    def is_success(self) -> bool:
        """Only ``FS_COMPLETED`` means the document went through."""
        return self is FaxStatus.FS_COMPLETED

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def from_string_id(cls, string_id: str) -> FaxStatus:
        """Inverse of :attr:`string_id`; raises ``ValueError`` naming the unknown id."""
        try:
            return cls["FS_" + string_id.upper()]
        except KeyError:
            raise ValueError(f"unknown fax status id {string_id!r}") from None


_IN_PROGRESS = frozenset(
    {
        FaxStatus.FS_INITIALIZING,
        FaxStatus.FS_DIALING,
        FaxStatus.FS_TRANSMITTING,
        FaxStatus.FS_RECEIVING,
        FaxStatus.FS_ANSWERED,
    }
)

#: Status codes that end an attempt (everything but the five in-progress ones).
TERMINAL_STATUSES: frozenset[FaxStatus] = frozenset(s for s in FaxStatus if s not in _IN_PROGRESS)

_DESCRIPTIONS: dict[FaxStatus, str] = {
    FaxStatus.FS_INITIALIZING: "the call is initializing",
    FaxStatus.FS_DIALING: "dialing (INVITE sent, no final response yet)",
    FaxStatus.FS_TRANSMITTING: "transmitting the document",
    FaxStatus.FS_RECEIVING: "receiving a document",
    FaxStatus.FS_COMPLETED: "the fax went through (T.30 phase E reached normally)",
    FaxStatus.FS_HANDLED: "the call was handed to another handler",
    FaxStatus.FS_LINE_UNAVAILABLE: "the device or SIP trunk cannot place the call now",
    FaxStatus.FS_BUSY: "the destination is busy",
    FaxStatus.FS_NO_ANSWER: "the destination did not answer",
    FaxStatus.FS_BAD_ADDRESS: "the destination number or URI is invalid",
    FaxStatus.FS_NO_DIAL_TONE: "no route to the network (the SIP server could not be reached)",
    FaxStatus.FS_DISCONNECTED: "the other side disconnected the call",
    FaxStatus.FS_FATAL_ERROR: "fatal error (see error code and text)",
    FaxStatus.FS_NOT_FAX_CALL: "the call was answered but no fax machine spoke (voice or data)",
    FaxStatus.FS_CALL_DELAYED: "the call is delayed by dialing restrictions",
    FaxStatus.FS_CALL_BLACKLISTED: "the number is barred or the call was refused",
    FaxStatus.FS_USER_ABORT: "the operation was cancelled",
    FaxStatus.FS_ANSWERED: "an incoming call was answered, the fax has not started yet",
}


@dataclass(frozen=True, slots=True)
class FaxDevStatus:
    """One status report of a device, the fields of ``FAX_DEV_STATUS`` plus the time it was made.

    ``string_id`` replaces the FSP's resource ``StringId``: empty means ``status.string_id``.
    ``error_code`` carries the detail behind the status: the SIP response code for call-setup failures,
    the spandsp T.30 completion code for fax-phase failures, 0 otherwise. ``at`` is Unix time (seconds).
    """

    status: FaxStatus
    at: float
    page_count: int = 0
    csi: str = ""
    caller_id: str = ""
    routing_info: str = ""
    error_code: int = 0
    string_id: str = field(default="")

    def __post_init__(self) -> None:
        if not isinstance(self.status, FaxStatus):
            object.__setattr__(self, "status", FaxStatus(self.status))
        if not self.string_id:
            object.__setattr__(self, "string_id", self.status.string_id)
        if self.page_count < 0:
            raise ValueError(f"page_count must be >= 0, got {self.page_count}")
        if not math.isfinite(self.at):
            raise ValueError(f"at must be a finite Unix time, got {self.at!r}")

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape: ``status`` is the string id, ``status_code`` the Windows number."""
        return {
            "status": self.status.string_id,
            "status_code": int(self.status),
            "string_id": self.string_id,
            "page_count": self.page_count,
            "csi": self.csi,
            "caller_id": self.caller_id,
            "routing_info": self.routing_info,
            "error_code": self.error_code,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaxDevStatus:
        if "status_code" in data:
            status = FaxStatus(int(data["status_code"]))
        else:
            status = FaxStatus.from_string_id(str(data["status"]))
        return cls(
            status=status,
            at=float(data["at"]),
            page_count=int(data.get("page_count", 0)),
            csi=str(data.get("csi", "")),
            caller_id=str(data.get("caller_id", "")),
            routing_info=str(data.get("routing_info", "")),
            error_code=int(data.get("error_code", 0)),
            string_id=str(data.get("string_id", "")),
        )


# --------------------------------------------------------------------------------------------------
# SIP final responses (RFC 3261 §21) of an outgoing INVITE -> FaxStatus
# --------------------------------------------------------------------------------------------------


class SipStatusRule(NamedTuple):
    """Responses ``first..last`` (inclusive) map to ``status``; ``reason`` says why (README prints it)."""

    first: int
    last: int
    status: FaxStatus
    reason: str


#: The SIP table, most specific rows first; :func:`status_for_sip` takes the first row that matches.
#: The class rows at the end (3xx, 4xx, 5xx, 6xx) catch every code the rows above do not name.
SIP_STATUS_TABLE: tuple[SipStatusRule, ...] = (
    SipStatusRule(
        401, 401, FaxStatus.FS_LINE_UNAVAILABLE, "our credentials were refused: the line is unusable"
    ),
    SipStatusRule(402, 402, FaxStatus.FS_CALL_BLACKLISTED, "payment required: the trunk refuses this call"),
    SipStatusRule(403, 403, FaxStatus.FS_CALL_BLACKLISTED, "forbidden: the destination is barred for us"),
    SipStatusRule(404, 404, FaxStatus.FS_BAD_ADDRESS, "no such number"),
    SipStatusRule(407, 407, FaxStatus.FS_LINE_UNAVAILABLE, "proxy credentials were refused"),
    SipStatusRule(408, 408, FaxStatus.FS_NO_ANSWER, "request timeout: nobody answered"),
    SipStatusRule(410, 410, FaxStatus.FS_BAD_ADDRESS, "number gone"),
    SipStatusRule(414, 414, FaxStatus.FS_BAD_ADDRESS, "request-URI too long"),
    SipStatusRule(416, 416, FaxStatus.FS_BAD_ADDRESS, "unsupported URI scheme"),
    SipStatusRule(480, 480, FaxStatus.FS_NO_ANSWER, "temporarily unavailable (no answer, not registered)"),
    SipStatusRule(484, 484, FaxStatus.FS_BAD_ADDRESS, "address incomplete"),
    SipStatusRule(485, 485, FaxStatus.FS_BAD_ADDRESS, "ambiguous address"),
    SipStatusRule(486, 486, FaxStatus.FS_BUSY, "busy here"),
    SipStatusRule(
        487,
        487,
        FaxStatus.FS_USER_ABORT,
        "request terminated: we cancelled the INVITE (a ring timeout is reported as no answer)",
    ),
    SipStatusRule(488, 488, FaxStatus.FS_FATAL_ERROR, "not acceptable here: no common media (audio/T.38)"),
    SipStatusRule(491, 491, FaxStatus.FS_LINE_UNAVAILABLE, "request pending (glare): try again shortly"),
    SipStatusRule(502, 502, FaxStatus.FS_NO_DIAL_TONE, "bad gateway: the network behind the proxy failed"),
    SipStatusRule(503, 503, FaxStatus.FS_LINE_UNAVAILABLE, "service unavailable: no trunk capacity now"),
    SipStatusRule(504, 504, FaxStatus.FS_NO_DIAL_TONE, "server time-out: the next hop did not respond"),
    SipStatusRule(600, 600, FaxStatus.FS_BUSY, "busy everywhere"),
    SipStatusRule(603, 603, FaxStatus.FS_CALL_BLACKLISTED, "declined: the destination refuses the call"),
    SipStatusRule(604, 604, FaxStatus.FS_BAD_ADDRESS, "does not exist anywhere"),
    SipStatusRule(606, 606, FaxStatus.FS_FATAL_ERROR, "not acceptable: the callee cannot take our session"),
    SipStatusRule(300, 399, FaxStatus.FS_BAD_ADDRESS, "redirection not followed: the number lives elsewhere"),
    SipStatusRule(400, 499, FaxStatus.FS_FATAL_ERROR, "other client error: our request was refused"),
    SipStatusRule(500, 599, FaxStatus.FS_LINE_UNAVAILABLE, "other server error: transient"),
    SipStatusRule(600, 699, FaxStatus.FS_FATAL_ERROR, "other global failure"),
)


def status_for_sip(code: int) -> FaxStatus:
    """The :class:`FaxStatus` for a final non-2xx response to our INVITE (RFC 3261 §21.3-21.6).

    ===============  ====================  ============================================================
    SIP response     FaxStatus             why
    ===============  ====================  ============================================================
    3xx              FS_BAD_ADDRESS        a redirect we did not follow: the number lives elsewhere
    401, 407         FS_LINE_UNAVAILABLE   our credentials were refused: the line cannot place calls
    402, 403, 603    FS_CALL_BLACKLISTED   the trunk or callee refuses this destination or call
    404, 410, 414,   FS_BAD_ADDRESS        the number does not exist / cannot be dialled
    416, 484, 485,
    604
    408, 480         FS_NO_ANSWER          nobody answered / the callee is unavailable
    486, 600         FS_BUSY               busy here / busy everywhere
    487              FS_USER_ABORT         we cancelled the INVITE
    488, 606         FS_FATAL_ERROR        no common media: retrying the same offer cannot help
    491, 500, 503,   FS_LINE_UNAVAILABLE   glare or a transient server condition
    other 5xx
    502, 504         FS_NO_DIAL_TONE       the network behind our proxy is unreachable
    other 4xx, 6xx   FS_FATAL_ERROR        the request was refused for a reason retry will not fix
    ===============  ====================  ============================================================

    The same rules are :data:`SIP_STATUS_TABLE`. A code outside 300..699 is not a failure response
    and raises ``ValueError``.
    """
    if not 300 <= code <= 699:
        raise ValueError(f"SIP status {code} is not a final failure response (300..699)")
    for rule in SIP_STATUS_TABLE:
        if rule.first <= code <= rule.last:
            return rule.status
    raise AssertionError("SIP_STATUS_TABLE has a class row for every code in 300..699")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# spandsp 0.0.6 T.30 phase E completion codes -> FaxStatus
# --------------------------------------------------------------------------------------------------


class T30Completion(NamedTuple):
    """One spandsp completion code: its value and name in ``spandsp/t30.h``, the status it maps to, and
    whether it is a failure *in the fax phase* (after the T.30 session started: training, page transfer,
    post-page exchange) that a slower modem or no ECM may cure (see :mod:`vfax.store.retry`)."""

    code: int
    name: str
    status: FaxStatus
    fax_phase: bool
    meaning: str


_F = FaxStatus.FS_FATAL_ERROR
_D = FaxStatus.FS_DISCONNECTED
_N = FaxStatus.FS_NOT_FAX_CALL

#: Every completion code of spandsp 0.0.6, in enum order (the value is the position).
T30_COMPLETIONS: tuple[T30Completion, ...] = (
    T30Completion(0, "T30_ERR_OK", FaxStatus.FS_COMPLETED, False, "completed"),
    # Link problems
    T30Completion(1, "T30_ERR_CEDTONE", _N, False, "the CED tone exceeded 5 s"),
    T30Completion(2, "T30_ERR_T0_EXPIRED", _N, False, "no fax answer: timed out waiting for DIS"),
    T30Completion(
        3, "T30_ERR_T1_EXPIRED", _N, False, "no fax caller: timed out waiting for the first message"
    ),
    T30Completion(4, "T30_ERR_T3_EXPIRED", _F, False, "timed out waiting for procedural interrupt"),
    T30Completion(5, "T30_ERR_HDLC_CARRIER", _F, True, "the HDLC carrier did not stop"),
    T30Completion(6, "T30_ERR_CANNOT_TRAIN", _F, True, "failed to train with any compatible modem"),
    T30Completion(7, "T30_ERR_OPER_INT_FAIL", _F, False, "operator intervention failed"),
    T30Completion(8, "T30_ERR_INCOMPATIBLE", _F, False, "far end is not compatible"),
    T30Completion(9, "T30_ERR_RX_INCAPABLE", _F, False, "far end is not able to receive"),
    T30Completion(10, "T30_ERR_TX_INCAPABLE", _F, False, "far end is not able to transmit"),
    T30Completion(11, "T30_ERR_NORESSUPPORT", _F, False, "far end cannot receive at this resolution"),
    T30Completion(12, "T30_ERR_NOSIZESUPPORT", _F, False, "far end cannot receive at this page size"),
    T30Completion(13, "T30_ERR_UNEXPECTED", _F, True, "unexpected message received"),
    # Phase E status values returned to a transmitter
    T30Completion(14, "T30_ERR_TX_BADDCS", _F, True, "bad response to DCS or training"),
    T30Completion(15, "T30_ERR_TX_BADPG", _D, True, "DCN received after sending a page"),
    T30Completion(16, "T30_ERR_TX_ECMPHD", _F, True, "invalid ECM response from the receiver"),
    T30Completion(17, "T30_ERR_TX_GOTDCN", _D, False, "DCN received while waiting for DIS"),
    T30Completion(18, "T30_ERR_TX_INVALRSP", _F, True, "invalid response after sending a page"),
    T30Completion(19, "T30_ERR_TX_NODIS", _F, False, "other than DIS received while waiting for DIS"),
    T30Completion(20, "T30_ERR_TX_PHBDEAD", _F, True, "no response to DCS, training or TCF"),
    T30Completion(21, "T30_ERR_TX_PHDDEAD", _F, True, "no response after sending a page"),
    T30Completion(22, "T30_ERR_TX_T5EXP", _F, True, "timed out waiting for receiver ready (ECM)"),
    # Phase E status values returned to a receiver
    T30Completion(23, "T30_ERR_RX_ECMPHD", _F, True, "invalid ECM response from the transmitter"),
    T30Completion(24, "T30_ERR_RX_GOTDCS", _F, False, "DCS received while waiting for DTC"),
    T30Completion(25, "T30_ERR_RX_INVALCMD", _F, True, "unexpected command after a page"),
    T30Completion(26, "T30_ERR_RX_NOCARRIER", _F, True, "carrier lost during reception"),
    T30Completion(27, "T30_ERR_RX_NOEOL", _F, True, "timed out waiting for EOL"),
    T30Completion(28, "T30_ERR_RX_NOFAX", _F, True, "timed out waiting for the first line"),
    T30Completion(29, "T30_ERR_RX_T2EXPDCN", _F, True, "T2 expired waiting for DCN"),
    T30Completion(30, "T30_ERR_RX_T2EXPD", _F, True, "T2 expired waiting for phase D"),
    T30Completion(31, "T30_ERR_RX_T2EXPFAX", _F, True, "T2 expired waiting for a page"),
    T30Completion(32, "T30_ERR_RX_T2EXPMPS", _F, True, "T2 expired waiting for the next page"),
    T30Completion(33, "T30_ERR_RX_T2EXPRR", _F, True, "T2 expired waiting for RR"),
    T30Completion(34, "T30_ERR_RX_T2EXP", _F, True, "T2 expired waiting for NSS, DCS or MCF"),
    T30Completion(35, "T30_ERR_RX_DCNWHY", _D, False, "unexpected DCN waiting for DCS or DIS"),
    T30Completion(36, "T30_ERR_RX_DCNDATA", _D, True, "unexpected DCN waiting for image data"),
    T30Completion(37, "T30_ERR_RX_DCNFAX", _D, True, "unexpected DCN waiting for EOM, EOP or MPS"),
    T30Completion(38, "T30_ERR_RX_DCNPHD", _D, True, "unexpected DCN after EOM or MPS"),
    T30Completion(39, "T30_ERR_RX_DCNRRD", _D, True, "unexpected DCN after RR/RNR"),
    T30Completion(40, "T30_ERR_RX_DCNNORTN", _D, True, "unexpected DCN after requested retransmission"),
    # TIFF file problems (ours: retrying the same file cannot help)
    T30Completion(41, "T30_ERR_FILEERROR", _F, False, "TIFF/F file cannot be opened"),
    T30Completion(42, "T30_ERR_NOPAGE", _F, False, "TIFF/F page not found"),
    T30Completion(43, "T30_ERR_BADTIFF", _F, False, "TIFF/F format is not compatible"),
    T30Completion(44, "T30_ERR_BADPAGE", _F, False, "TIFF/F page number tag missing"),
    T30Completion(45, "T30_ERR_BADTAG", _F, False, "incorrect values for TIFF/F tags"),
    T30Completion(46, "T30_ERR_BADTIFFHDR", _F, False, "bad TIFF/F header"),
    T30Completion(47, "T30_ERR_NOMEM", _F, False, "cannot allocate memory for more pages"),
    # General problems
    T30Completion(48, "T30_ERR_RETRYDCN", _F, True, "disconnected after permitted retries"),
    T30Completion(49, "T30_ERR_CALLDROPPED", _D, True, "the call dropped prematurely"),
    # Feature negotiation issues
    T30Completion(50, "T30_ERR_NOPOLL", _F, False, "poll not accepted"),
    T30Completion(51, "T30_ERR_IDENT_UNACCEPTABLE", _F, False, "far end's ident is not acceptable"),
    T30Completion(52, "T30_ERR_SUB_UNACCEPTABLE", _F, False, "far end's sub-address is not acceptable"),
    T30Completion(53, "T30_ERR_SEP_UNACCEPTABLE", _F, False, "far end's selective polling address refused"),
    T30Completion(54, "T30_ERR_PSA_UNACCEPTABLE", _F, False, "far end's polled sub-address refused"),
    T30Completion(55, "T30_ERR_SID_UNACCEPTABLE", _F, False, "far end's sender identification refused"),
    T30Completion(56, "T30_ERR_PWD_UNACCEPTABLE", _F, False, "far end's password is not acceptable"),
    T30Completion(57, "T30_ERR_TSA_UNACCEPTABLE", _F, False, "far end's TSA is not acceptable"),
    T30Completion(58, "T30_ERR_IRA_UNACCEPTABLE", _F, False, "far end's IRA is not acceptable"),
    T30Completion(59, "T30_ERR_CIA_UNACCEPTABLE", _F, False, "far end's CIA is not acceptable"),
    T30Completion(60, "T30_ERR_ISP_UNACCEPTABLE", _F, False, "far end's ISP is not acceptable"),
    T30Completion(61, "T30_ERR_CSA_UNACCEPTABLE", _F, False, "far end's CSA is not acceptable"),
)

_T30_BY_CODE: dict[int, T30Completion] = {c.code: c for c in T30_COMPLETIONS}

T30_ERR_OK = 0
T30_ERR_T0_EXPIRED = 2
T30_ERR_T1_EXPIRED = 3
T30_ERR_CANNOT_TRAIN = 6
T30_ERR_FILEERROR = 41
T30_ERR_CALLDROPPED = 49


def t30_completion(code: int) -> T30Completion | None:
    """The table row for a spandsp completion code, or None for a code spandsp 0.0.6 does not define."""
    return _T30_BY_CODE.get(code)


def status_for_t30(completion_code: int, pages: int) -> FaxStatus:
    """The :class:`FaxStatus` for a spandsp phase E completion code (``t30_phase_e_handler_t``).

    - ``T30_ERR_OK`` -> ``FS_COMPLETED``, but only with ``pages >= 1``: a session that "completed" without
      a page did not deliver a fax, and reporting success for a fax that did not complete is the worst bug
      a fax server can have, so ``OK`` with 0 pages is ``FS_FATAL_ERROR``.
    - T0/T1 expired and CED too long -> ``FS_NOT_FAX_CALL``: the call was answered (SIP 200) but no fax
      machine ever spoke T.30 (a voice answer never sends DIS; a voice caller never sends DCS).
    - A DCN from the far end (TX_BADPG, TX_GOTDCN, RX_DCN*) and CALLDROPPED -> ``FS_DISCONNECTED``.
    - Training, page and post-page failures, file errors and negotiation failures -> ``FS_FATAL_ERROR``;
      :func:`is_fax_phase_failure` tells the line-quality ones (worth a slower retry) from the rest.
    - A code spandsp 0.0.6 does not define -> ``FS_FATAL_ERROR``.

    The full mapping is :data:`T30_COMPLETIONS`.
    """
    if pages < 0:
        raise ValueError(f"pages must be >= 0, got {pages}")
    row = _T30_BY_CODE.get(completion_code)
    if row is None:
        return FaxStatus.FS_FATAL_ERROR
    if row.status is FaxStatus.FS_COMPLETED and pages == 0:
        return FaxStatus.FS_FATAL_ERROR
    return row.status


def is_fax_phase_failure(completion_code: int) -> bool:
    """True when the T.30 session had started (training or page transfer) and failed on the line:
    the failures a retry at 9600 bit/s without ECM is meant to cure."""
    row = _T30_BY_CODE.get(completion_code)
    return row is not None and row.fax_phase

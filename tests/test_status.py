"""FSP status codes: Windows values, SIP and T.30 mappings, the status report record."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfax.status import (
    SIP_STATUS_TABLE,
    T30_COMPLETIONS,
    TERMINAL_STATUSES,
    FaxDevStatus,
    FaxStatus,
    is_fax_phase_failure,
    status_for_sip,
    status_for_t30,
    t30_completion,
)

# faxdev.h (Windows SDK), "FAX status constants"
FAXDEV_H = {
    "FS_INITIALIZING": 0x20000000,
    "FS_DIALING": 0x20000001,
    "FS_TRANSMITTING": 0x20000002,
    "FS_RECEIVING": 0x20000004,
    "FS_COMPLETED": 0x20000008,
    "FS_HANDLED": 0x20000010,
    "FS_LINE_UNAVAILABLE": 0x20000020,
    "FS_BUSY": 0x20000040,
    "FS_NO_ANSWER": 0x20000080,
    "FS_BAD_ADDRESS": 0x20000100,
    "FS_NO_DIAL_TONE": 0x20000200,
    "FS_DISCONNECTED": 0x20000400,
    "FS_FATAL_ERROR": 0x20000800,
    "FS_NOT_FAX_CALL": 0x20001000,
    "FS_CALL_DELAYED": 0x20002000,
    "FS_CALL_BLACKLISTED": 0x20004000,
    "FS_USER_ABORT": 0x20200000,
    "FS_ANSWERED": 0x20800000,
}

T30_H = Path("/usr/include/spandsp/t30.h")


def test_status_values_are_the_windows_fs_constants() -> None:
    assert {s.name: int(s) for s in FaxStatus} == FAXDEV_H


def test_string_ids_are_stable_unique_and_round_trip() -> None:
    assert FaxStatus.FS_COMPLETED.string_id == "completed"
    assert FaxStatus.FS_BUSY.string_id == "busy"
    assert FaxStatus.FS_NO_ANSWER.string_id == "no_answer"
    ids = [s.string_id for s in FaxStatus]
    assert len(set(ids)) == len(ids)
    for status in FaxStatus:
        assert FaxStatus.from_string_id(status.string_id) is status


def test_unknown_string_id_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'ringing'"):
        FaxStatus.from_string_id("ringing")


def test_only_progress_statuses_are_non_terminal_and_only_completed_is_success() -> None:
    progress = {s for s in FaxStatus if not s.is_terminal}
    assert progress == {
        FaxStatus.FS_INITIALIZING,
        FaxStatus.FS_DIALING,
        FaxStatus.FS_TRANSMITTING,
        FaxStatus.FS_RECEIVING,
        FaxStatus.FS_ANSWERED,
    }
    assert set(FaxStatus) - progress == TERMINAL_STATUSES
    assert [s for s in FaxStatus if s.is_success] == [FaxStatus.FS_COMPLETED]
    assert all(s.description for s in FaxStatus)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (486, FaxStatus.FS_BUSY),
        (600, FaxStatus.FS_BUSY),
        (408, FaxStatus.FS_NO_ANSWER),
        (480, FaxStatus.FS_NO_ANSWER),
        (404, FaxStatus.FS_BAD_ADDRESS),
        (484, FaxStatus.FS_BAD_ADDRESS),
        (604, FaxStatus.FS_BAD_ADDRESS),
        (503, FaxStatus.FS_LINE_UNAVAILABLE),
        (403, FaxStatus.FS_CALL_BLACKLISTED),
        (603, FaxStatus.FS_CALL_BLACKLISTED),
        (488, FaxStatus.FS_FATAL_ERROR),
        (487, FaxStatus.FS_USER_ABORT),
        (302, FaxStatus.FS_BAD_ADDRESS),
        (401, FaxStatus.FS_LINE_UNAVAILABLE),
        (502, FaxStatus.FS_NO_DIAL_TONE),
        (599, FaxStatus.FS_LINE_UNAVAILABLE),
        (499, FaxStatus.FS_FATAL_ERROR),
        (699, FaxStatus.FS_FATAL_ERROR),
    ],
)
def test_sip_failure_maps_to_the_documented_status(code: int, status: FaxStatus) -> None:
    assert status_for_sip(code) is status


def test_every_sip_failure_code_maps_to_a_terminal_failure() -> None:
    for code in range(300, 700):
        status = status_for_sip(code)
        assert status.is_terminal and not status.is_success, code


@pytest.mark.parametrize("code", [0, 100, 180, 200, 299, 700, 999, -486])
def test_non_failure_sip_codes_are_refused(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        status_for_sip(code)


def _docstring_sip_rows() -> dict[int, str]:
    """code -> FS_* name, read from the table in status_for_sip's docstring."""
    lines = (status_for_sip.__doc__ or "").splitlines()
    rules = [i for i, ln in enumerate(lines) if set(ln.strip()) == {"=", " "}]
    table: dict[int, str] = {}
    pending: list[int] = []
    for line in lines[rules[1] + 1 : rules[2]]:
        cols = re.split(r"\s{2,}", line.strip())
        codes = [int(c) for c in re.findall(r"\b\d{3}\b", cols[0])]
        if len(cols) > 1 and cols[1].startswith("FS_"):
            pending = codes
            for code in codes:
                table[code] = cols[1]
        else:  # a continuation line lists more codes of the row above
            for code in codes:
                table[code] = table[pending[0]]
    return table


def test_sip_docstring_table_agrees_with_the_data() -> None:
    documented = _docstring_sip_rows()
    for rule in SIP_STATUS_TABLE:
        if rule.first == rule.last:
            assert documented.get(rule.first) == rule.status.name, rule


def test_t30_table_matches_the_spandsp_header() -> None:
    if not T30_H.exists():
        pytest.skip("spandsp headers are not installed")
    text = T30_H.read_text()
    body = text[text.index("T30_ERR_OK = 0") :]
    body = body[: body.index("};")]
    names = re.findall(r"^\s*(T30_ERR_[A-Z0-9_]+)", body, flags=re.M)
    assert [(c.code, c.name) for c in T30_COMPLETIONS] == list(enumerate(names))


def test_t30_ok_with_pages_is_completed_but_ok_without_pages_is_not() -> None:
    assert status_for_t30(0, pages=3) is FaxStatus.FS_COMPLETED
    assert status_for_t30(0, pages=0) is FaxStatus.FS_FATAL_ERROR


@given(code=st.integers(min_value=-(2**31), max_value=2**31 - 1), pages=st.integers(0, 10_000))
@settings(max_examples=500, deadline=None)
def test_no_failure_code_is_ever_reported_as_completed(code: int, pages: int) -> None:
    status = status_for_t30(code, pages)
    assert status.is_terminal
    if code != 0:
        assert status is not FaxStatus.FS_COMPLETED


@pytest.mark.parametrize(
    ("name", "status", "fax_phase"),
    [
        ("T30_ERR_T0_EXPIRED", FaxStatus.FS_NOT_FAX_CALL, False),
        ("T30_ERR_T1_EXPIRED", FaxStatus.FS_NOT_FAX_CALL, False),
        ("T30_ERR_CEDTONE", FaxStatus.FS_NOT_FAX_CALL, False),
        ("T30_ERR_CALLDROPPED", FaxStatus.FS_DISCONNECTED, True),
        ("T30_ERR_TX_GOTDCN", FaxStatus.FS_DISCONNECTED, False),
        ("T30_ERR_RX_DCNDATA", FaxStatus.FS_DISCONNECTED, True),
        ("T30_ERR_CANNOT_TRAIN", FaxStatus.FS_FATAL_ERROR, True),
        ("T30_ERR_TX_PHBDEAD", FaxStatus.FS_FATAL_ERROR, True),
        ("T30_ERR_RETRYDCN", FaxStatus.FS_FATAL_ERROR, True),
        ("T30_ERR_FILEERROR", FaxStatus.FS_FATAL_ERROR, False),
        ("T30_ERR_BADTIFF", FaxStatus.FS_FATAL_ERROR, False),
        ("T30_ERR_INCOMPATIBLE", FaxStatus.FS_FATAL_ERROR, False),
        ("T30_ERR_PWD_UNACCEPTABLE", FaxStatus.FS_FATAL_ERROR, False),
    ],
)
def test_t30_failure_maps_to_status_and_phase(name: str, status: FaxStatus, fax_phase: bool) -> None:
    row = next(c for c in T30_COMPLETIONS if c.name == name)
    assert t30_completion(row.code) == row
    assert status_for_t30(row.code, pages=1) is status
    assert is_fax_phase_failure(row.code) is fax_phase


def test_unknown_t30_code_is_a_fatal_error_outside_the_fax_phase() -> None:
    assert t30_completion(999) is None
    assert status_for_t30(999, pages=2) is FaxStatus.FS_FATAL_ERROR
    assert not is_fax_phase_failure(999)


def test_negative_page_count_is_refused() -> None:
    with pytest.raises(ValueError, match="pages"):
        status_for_t30(0, pages=-1)
    with pytest.raises(ValueError, match="page_count"):
        FaxDevStatus(FaxStatus.FS_TRANSMITTING, at=0.0, page_count=-1)


def test_dev_status_defaults_its_string_id_and_round_trips_through_json_shape() -> None:
    report = FaxDevStatus(
        FaxStatus.FS_RECEIVING, at=1_800_000_000.25, page_count=2, csi="+1 555 0100", caller_id="1001"
    )
    assert report.string_id == "receiving"
    assert not report.is_terminal
    data = report.to_dict()
    assert data["status"] == "receiving" and data["status_code"] == 0x20000004
    assert FaxDevStatus.from_dict(data) == report
    assert FaxDevStatus.from_dict({"status": "busy", "at": 5}).status is FaxStatus.FS_BUSY


def test_dev_status_accepts_a_raw_windows_number() -> None:
    report = FaxDevStatus(0x20000040, at=0.0)  # type: ignore[arg-type]
    assert report.status is FaxStatus.FS_BUSY and report.is_terminal

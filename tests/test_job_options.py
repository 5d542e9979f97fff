"""Job options: one vocabulary from the API through the store and the retry policy to the call; old
stores are migrated; a job option wins over the device's setting, but a bit rate is only ever lowered."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vfax.call.device import FaxSend
from vfax.call.fax_call import CallOptions
from vfax.call.media import T38Policy
from vfax.service.controller import fax_send_for
from vfax.status import T30_ERR_CANNOT_TRAIN, FaxStatus
from vfax.store.options import OPT_ECM, OPT_HEADER, OPT_MAX_BIT_RATE, OPT_T38, OPT_TSID
from vfax.store.retry import AttemptResult, RetryPolicy
from vfax.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteJobStore

OLD_KEY = "max_bitrate"  # what the retry policy wrote before schema version 3


def test_migration_renames_the_old_bit_rate_key_in_stored_jobs(tmp_path: Path) -> None:
    path = tmp_path / "vfax.db"
    old = SqliteJobStore(path, migrations=MIGRATIONS[:2])
    assert old.schema_version == 2
    fell_back = old.submit(
        "a.tif", "sip:1@127.0.0.1", options={OLD_KEY: 9600, OPT_ECM: False, OPT_HEADER: "ACME"}
    )
    plain = old.submit("b.tif", "sip:2@127.0.0.1", options={OPT_ECM: True, OPT_TSID: "+1 555 0100"})
    both = old.submit("c.tif", "sip:3@127.0.0.1", options={OLD_KEY: 9600, OPT_MAX_BIT_RATE: 14400})
    empty = old.submit("d.tif", "sip:4@127.0.0.1")
    old.close()

    store = SqliteJobStore(path)
    assert store.schema_version == SCHEMA_VERSION >= 3
    assert store.get(fell_back.id).options == {OPT_MAX_BIT_RATE: 9600, OPT_ECM: False, OPT_HEADER: "ACME"}
    assert store.get(plain.id).options == {OPT_ECM: True, OPT_TSID: "+1 555 0100"}
    assert store.get(both.id).options == {OPT_MAX_BIT_RATE: 9600}  # the fall-back lowered it: keep the lower
    assert store.get(empty.id).options == {}
    # and the migrated job is sent the way its retry announced
    fax = fax_send_for(store.get(fell_back.id))
    assert (fax.max_bit_rate, fax.ecm, fax.page_header) == (9600, False, "ACME")
    store.close()
    with sqlite3.connect(path) as conn:  # no row keeps the old name
        stale = conn.execute("SELECT COUNT(*) FROM outbound_jobs WHERE options LIKE '%max_bitrate%'")
        assert stale.fetchone() == (0,)


def test_the_retry_fall_back_is_what_the_next_attempt_sends(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "vfax.db", policy=RetryPolicy(jitter=0.0, backoff=(0.0,)))
    job = store.submit("a.tif", "sip:1@127.0.0.1", options={OPT_TSID: "+1 555 0100"})
    assert fax_send_for(store.claim_next()).max_bit_rate is None  # nothing set: the device decides
    failed = AttemptResult(FaxStatus.FS_FATAL_ERROR, t30_code=T30_ERR_CANNOT_TRAIN)  # training failed
    store.record_attempt_result(job.id, failed)
    retried = store.claim_next()
    assert retried is not None and retried.id == job.id
    assert retried.options == {OPT_TSID: "+1 555 0100", OPT_MAX_BIT_RATE: 9600, OPT_ECM: False}
    fax = fax_send_for(retried)
    assert (fax.max_bit_rate, fax.ecm, fax.caller_number) == (9600, False, "+1 555 0100")
    store.close()


def test_job_options_map_to_the_call_and_bad_ones_are_refused(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "vfax.db")
    options = {OPT_T38: "only", OPT_ECM: True, OPT_MAX_BIT_RATE: 7200}
    job = store.submit("a.tif", "sip:1@127.0.0.1", options=options)
    fax = fax_send_for(store.get(job.id))
    assert (fax.t38, fax.ecm, fax.max_bit_rate) == (T38Policy.ONLY, True, 7200)
    for bad in ({OPT_ECM: "false"}, {OPT_MAX_BIT_RATE: "fast"}, {OPT_MAX_BIT_RATE: True}, {OPT_T38: "maybe"}):
        with pytest.raises((ValueError, TypeError)):
            fax_send_for(store.get(store.submit("a.tif", "sip:1@127.0.0.1", options=bad).id))
    store.close()


@pytest.mark.parametrize(
    ("device", "job", "expected"),
    [
        ((False, 9600), {}, (False, 9600)),  # nothing in the job: the device's configuration
        ((False, 9600), {"ecm": True}, (True, 9600)),  # the job's ECM wins
        ((True, 14400), {"ecm": False, "max_bit_rate": 9600}, (False, 9600)),  # the fall-back
        ((True, 7200), {"ecm": False, "max_bit_rate": 9600}, (False, 7200)),  # never raised above the device
        ((True, 9600), {"max_bit_rate": 4800}, (True, 4800)),
    ],
)
def test_call_options_take_the_job_over_the_device_but_never_raise_the_bit_rate(
    device: tuple[bool, int], job: dict[str, object], expected: tuple[bool, int]
) -> None:
    base = CallOptions(ecm=device[0], max_bit_rate=device[1], ident="dev", page_header="DEV")
    options = FaxSend(Path("a.tif"), "sip:1@127.0.0.1", **job).call_options(base)  # type: ignore[arg-type]
    assert (options.ecm, options.max_bit_rate) == expected
    assert (options.ident, options.page_header) == ("dev", "DEV")

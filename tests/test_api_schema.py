"""Schemathesis against the OpenAPI spec: generated requests (valid and malformed) to every endpoint but the
endless event stream never get a 5xx, and every response matches the schema the spec publishes for it.

The app runs over a real SQLite store holding a few jobs and a received fax, so the generated ids and
filters meet real rows as well as unknown ones.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests import docfactory
from vfax.service.api import create_app
from vfax.service.config import ApiConfig
from vfax.status import FaxStatus
from vfax.store.sqlite import SqliteJobStore

TOKEN = "schema-token-0123456789"

pytestmark = pytest.mark.filterwarnings("ignore")


def _build_app(tmp: Path) -> tuple[FastAPI, SqliteJobStore]:
    store = SqliteJobStore(tmp / "vfax.db")
    inbox = tmp / "inbox"
    inbox.mkdir()
    doc = docfactory.fax_tiff(tmp / "doc.tif")
    for n in range(3):
        job = store.submit(doc, f"sip:{n}@127.0.0.1", device="line1")
    store.cancel(job.id)
    fax = store.record_inbound(
        call_id="c1", caller="sip:1@127.0.0.1", callee="sip:2@127.0.0.1", device="line1"
    )
    store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1)
    report = inbox / "r.json"
    report.write_text(json.dumps({"ok": True}))
    store.place_inbound_files(
        fax.id,
        tiff_path=docfactory.fax_tiff(inbox / "f.tif"),
        pdf_path=docfactory.text_pdf(inbox / "f.pdf"),
        report_path=report,
    )
    app = create_app(
        store,
        ApiConfig(token=TOKEN, max_upload_mb=1),
        inbox_dir=inbox,
        spool_dir=tmp / "spool",
        wake=lambda: None,
        devices_status=lambda: [{"name": "line1", "registered": True}],
    )
    REAL_IDS["job_id"] = [j.id for j in store.list()]
    REAL_IDS["fax_id"] = [fax.id]
    return app, store


#: Ids of rows in the store: generated path parameters are swapped for them half of the time, so the
#: requests meet real jobs and faxes as well as unknown ids.
REAL_IDS: dict[str, list[str]] = {}
PDF = docfactory.pdf_bytes([[docfactory.text_op(60, 700, 24, "schemathesis")]])


# schemathesis builds its tests at collection time (its fixture-based loader does not run on pytest 9), so
# the app and its store live in a directory made here and removed when the module's tests are done.
_TMP = tempfile.TemporaryDirectory(prefix="vfax-api-schema-")
APP, STORE = _build_app(Path(_TMP.name))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/v1/events")
    # /v1/events is an endless stream: covered by the real-server tests of test_api.py


@schema.hook
def flatmap_path_parameters(
    context: Any, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    choices = [path_parameters]
    for key, ids in REAL_IDS.items():
        if isinstance(path_parameters, dict) and key in path_parameters:
            choices += [{**path_parameters, key: real} for real in ids]
    return st.sampled_from(choices)


@schema.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Half of the generated uploads carry a real PDF, so submissions also succeed."""
    if isinstance(body, dict) and "document" in body:
        return st.sampled_from([body, {**body, "document": PDF}])
    return st.just(body)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    STORE.close()
    _TMP.cleanup()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_never_fails_with_a_server_error_and_answers_as_its_spec_says(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_spec_names_the_bearer_scheme_and_the_error_body() -> None:
    raw = schema.raw_schema
    assert raw["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert set(raw["paths"]) >= {"/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/faxes/{fax_id}/pdf", "/healthz"}
    assert "ErrorBody" in raw["components"]["schemas"]

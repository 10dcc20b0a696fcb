"""GET /batches/<batch number>/rfic.pdf: the release for infusion certificate, read back (its
text and its QR); verified by its digest; refused before release; every download logged;
the definition's optional thaw-to-infusion limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent, Download, IssuedRecord, User
from lab.services.records import coa_data
from labels.coa import dose_text
from labels.rfic import RficData, render_rfic
from tests.factories import get_batch, page_text
from tests.quality import EXCEPTIONAL, post_result, record_results, release, words
from tests.readback import cells_text, qr_digest, text_of
from workflows.definition import DEFINITIONS_DIR, DefinitionError, load_definition, load_definition_text
from workflows.diff import describe_changes
from workflows.formatting import format_datetime, format_number, format_quantity, format_utc

pytestmark = pytest.mark.requirements("CLIN-5")


def rfic(client: FlaskClient, number: str) -> bytes:
    response = client.get(f"/batches/{number}/rfic.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f"attachment; filename=RfIC-{number}.pdf"
    return response.data



def _writes(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Download, IssuedRecord, AuditEvent)}


def test_the_certificate_names_the_patient_the_bags_the_dose_and_the_signed_release(app, released, login):
    pdf = rfic(login("auditor1"), released)
    text = text_of(pdf)
    with app.app_context():
        batch = get_batch(released)
        coa = coa_data(batch, downloaded_by=batch.patient.registered_by, now=datetime.now(UTC))
        patient = batch.patient
        disposition = batch.dispositions[-1]
        assert coa.bags and coa.dose_per_kg is not None and coa.expires_at is not None
        expected = [released, patient.coi, patient.patient_ref, "Initials AB", "Date of birth 1980-05-01",
                    coa.product, dose_text(coa), f"Expires {format_datetime(coa.expires_at)}",
                    f"Number of bags {len(coa.bags)}",
                    f"Disposition: Released: release on {disposition.decided_at:%Y-%m-%d}",
                    ("Signed by Quentin Assurance. Meaning: approved for release. Signed at "
                     f"{format_utc(coa.disposition_signature.signed_at)}."),
                    "Release for Infusion Certificate", "Downloaded by Audrey Auditor at"]
        bags = [f"{bag.code} | {format_quantity(bag.volume_ml, 'mL')} | {format_number(bag.cells)}"
                for bag in coa.bags]
    for line in expected:
        assert line in text, line
    cells = cells_text(pdf)
    for bag in bags:  # each bag's row: its code, volume and CAR+ viable T cells
        assert bag in cells, bag
    assert "58 kg" in dose_text(coa)
    # The interim sterility result is a condition of the release; version 4 of the process limits the thaw.
    conditions = text.split("Conditions of release", 1)[1]
    assert "This batch was released on an interim result (Sterility: no growth to date (interim))" in conditions
    assert "Complete the infusion within 30 minutes of the start of thawing (process cd19-car-t v4)." in text


def test_its_qr_and_footer_carry_the_batch_record_digest_which_verifies_as_current(app, released, login):
    client = login("auditor1")
    pdf = rfic(client, released)
    digest = qr_digest(pdf)
    assert f"Batch record digest SHA-256 {digest}" in text_of(pdf)
    page = words(client.get(f"/verify/{digest}"))
    assert "Executed batch record: current" in page and released in page
    scanned = client.get("/scan", query_string={"code": f"V-{digest.upper()}"}, follow_redirects=True)
    assert scanned.status_code == 200 and "Executed batch record: current" in words(scanned)


def test_each_download_is_logged_and_audited(app, released, login):
    client = login("auditor1")
    with app.app_context():
        since = db.session.scalar(select(func.max(AuditEvent.id)))
    first, second = rfic(client, released), rfic(client, released)
    digest = qr_digest(first)
    assert qr_digest(second) == digest  # nothing changed in between: the same record version
    with app.app_context():
        batch_id = get_batch(released).id
        rows = db.session.scalars(select(Download).order_by(Download.id)).all()
        assert [(d.kind, d.batch_id, d.digest, d.downloaded_by.username) for d in rows] == [
            ("rfic", batch_id, digest, "auditor1")] * 2
        assert db.session.scalar(select(IssuedRecord.batch_id).where(IssuedRecord.digest == digest)) == batch_id
        trail = db.session.scalars(select(AuditEvent).where(AuditEvent.id > since)).all()
        assert sorted((e.action, e.table_name) for e in trail) == [
            ("download.rfic", "downloads"), ("download.rfic", "downloads"), ("record.issue", "issued_records")]
        assert all(e.batch_id == batch_id and e.actor_username == "auditor1" for e in trail)


def test_every_role_that_may_download_the_coa_may_download_it(app, released, login):
    for username in ("tech1", "super1", "qc1", "qa1", "auditor1"):
        client = login(username)
        assert client.get(f"/batches/{released}/coa.pdf").status_code == 200
        assert client.get(f"/batches/{released}/rfic.pdf").status_code == 200, username


def test_an_exceptional_release_prints_the_physicians_request_as_a_condition(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    release(app, number, "exceptional_release", **EXCEPTIONAL)
    conditions = text_of(rfic(login("qa1"), number)).split("Conditions of release", 1)[1]
    for line in ("Treating physician: Dr. Hanna Berg", "Physician's request: Written request of 2026-11-20",
                 "Physician's confirmation: Confirmation of 2026-11-21"):
        assert line in conditions, line


def test_refused_before_release_for_a_rejected_batch_and_on_hold_and_nothing_is_written(app, make_batch, login):
    waiting = make_batch()
    record_results(app, waiting)
    rejected = make_batch(ref="SLE-02")
    record_results(app, rejected, viability="72")
    release(app, rejected, "reject", reason="Viability out of specification.")
    held = make_batch(ref="SLE-03")
    record_results(app, held)
    release(app, held)
    assert post_result(app, login("qc1"), held, "sterility", "growth").status_code == 302
    client = login("qa1")
    before = _writes(app)
    for number, says in ((waiting, "only after QA has released the batch"),
                         (rejected, "is rejected: a release for infusion certificate is issued only after"),
                         (held, "was released but is on hold now")):
        response = client.get(f"/batches/{number}/rfic.pdf")
        assert response.status_code == 409, number
        assert says in page_text(response), (number, page_text(response)[:1500])
    assert _writes(app) == before


def test_an_unknown_or_malformed_batch_number(app, users, login):
    client = login("qa1")
    assert client.get("/batches/B-A9999-26-99999-A/rfic.pdf").status_code in (400, 404)
    assert client.get("/batches/not-a-batch/rfic.pdf").status_code == 400
    assert _writes(app)["Download"] == 0


def test_the_batch_page_links_it_once_released(app, make_batch, login):
    waiting = make_batch()
    record_results(app, waiting)
    client = login("qa1")
    assert f"/batches/{waiting}/rfic.pdf" not in client.get(f"/batches/{waiting}").get_data(as_text=True)
    release(app, waiting)
    page = client.get(f"/batches/{waiting}").get_data(as_text=True)
    assert f'href="/batches/{waiting}/rfic.pdf">Release for infusion certificate (PDF)</a>' in page


# --- the thaw-to-infusion limit of a definition ------------------------------------------------

V3 = DEFINITIONS_DIR / "cd19_car_t_v3.toml"


def _with_limit(value: str) -> str:
    text = V3.read_text(encoding="utf-8")
    assert "\nversion = 3\n" in text
    return text.replace("\nversion = 3\n", f"\nversion = 3\nthaw_to_infusion_minutes = {value}\n", 1)


def test_a_definition_may_set_a_thaw_to_infusion_limit():
    shipped = load_definition(V3)
    assert shipped.thaw_to_infusion_minutes is None
    limited = load_definition_text(_with_limit("180"), "limited.toml")
    assert limited.thaw_to_infusion_minutes == 180
    assert any("thaw-to-infusion limit (minutes) none → 180" in change.text
               for change in describe_changes(shipped, limited))


@pytest.mark.parametrize("value", ["0", "1441", '"3 h"', "90.5"])
def test_an_impossible_thaw_to_infusion_limit_is_refused(value):
    with pytest.raises(DefinitionError, match="thaw_to_infusion_minutes"):
        load_definition_text(_with_limit(value), "limited.toml")


def test_a_process_limit_is_printed(app, released):
    with app.app_context():
        batch = get_batch(released)
        user = db.session.scalars(select(User).filter_by(username="qa1")).one()
        data = RficData(coa_data(batch, downloaded_by=user, now=datetime.now(UTC)), "AB",
                        batch.patient.date_of_birth, "a" * 64)
    text = text_of(render_rfic(replace(data, thaw_to_infusion_minutes=180)))
    assert "Complete the infusion within 180 minutes of the start of thawing (process cd19-car-t v4)." in text
    unlimited = text_of(render_rfic(replace(data, thaw_to_infusion_minutes=None)))
    assert "Thaw to end of infusion Not specified in process cd19-car-t v4" in unlimited
    with pytest.raises(ValueError):
        replace(data, record_digest="not-a-digest")

"""GET /batches/<n>/record.pdf on the demo lab, read back; its QR scanned into the scan box;
GET /verify/<digest> before and after a correction; the download log."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from lab.extensions import db
from lab.models import (
    AuditEvent,
    Batch,
    CustodyEvent,
    Download,
    IssuedRecord,
    Patient,
    QcResult,
    Signature,
    StepEntry,
    StepValue,
    User,
)
from lab.services.batch_record import COPY_TABLES
from lab.services.deviations import report_deviation
from lab.services.progress import definition_for, lab_timezone
from tests.factories import get_batch
from tests.quality import record_results, words
from tests.readback import cells_text, page_texts, qr_digest, text_of
from workflows.formatting import format_datetime, format_number, format_utc

pytestmark = pytest.mark.requirements("A11-8.1", "A11-8.2", "P11-10a", "P11-10b")

DEMO_PASSWORD = "demo-password-42"


def utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def people(text: str, kind: str, unit: str | None) -> str:
    """How the record writes a stored value: a date-time in UTC to the minute, a number in
    the one notation with the digits typed (workflows.formatting), other text as stored."""
    if kind == "datetime":
        shown = format_utc(datetime.fromisoformat(text))
    elif kind == "number" and not text.startswith(("<", ">")):
        shown = format_number(text, None)
    else:
        shown = text
    return f"{shown} {unit}" if unit else shown


@pytest.fixture
def demo(app: Flask, runner: FlaskCliRunner) -> dict[str, str]:
    """The demo lab; patient reference -> batch number."""
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output
    with app.app_context():
        return {ref: number for ref, number in db.session.execute(
            select(Patient.patient_ref, Batch.batch_number).join(Batch.patient))}


@pytest.fixture
def auditor(demo: dict[str, str], login) -> FlaskClient:
    return login("auditor1", DEMO_PASSWORD)


def download(client: FlaskClient, number: str) -> bytes:
    response = client.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f"attachment; filename=record-{number}.pdf"
    return response.data



def expected_lines(app: Flask, number: str) -> tuple[list[str], list[str]]:
    """What the record of ``number`` must print, from the database: (page text, table cells)."""
    with app.app_context():
        batch = get_batch(number)
        definition = batch.definition
        process = definition_for(batch)
        text = [f"Batch number {number}", f"COI {batch.patient.coi}", f"version {definition.version})",
                definition.sha256]
        cells = []
        for entry in batch.entries:
            text.append(f"Entry {entry.occurrence}: performed by {entry.performed_by.full_name} at "
                        f"{utc(entry.performed_at)}")
            step = process.step(entry.step_key)
            for value in entry.values:
                shown = people(value.text, step.field(value.field_key).type, value.unit)
                cells.append(shown)
                if value.reason is not None:
                    cells.append("CHANGED SINCE ORIGINAL ENTRY Original entry: ")
                    cells.append(f"changed to {shown} by {value.recorded_by.full_name} at {utc(value.recorded_at)}. "
                                 f"Reason: {value.reason}")
        signatures = db.session.scalars(select(Signature).where(Signature.batch_id == batch.id)).all()
        assert signatures
        cells += [f"Signed by {s.printed_name} — meaning: {s.meaning} — {utc(s.signed_at)}" for s in signatures]
        for deviation in batch.deviations:
            text += [f"Deviation {deviation.number}: {deviation.title}", f"Status {deviation.status}",
                     f"Opened {deviation.opened_by.full_name} at {utc(deviation.opened_at)}"]
            if deviation.classification:
                text += [f"Classification {deviation.classification}", f"Root cause {deviation.root_cause}"]
        kinds = {test.key: test.kind for test in process.release_tests}
        cells += [people(r.text, kinds[r.test_key], r.unit) for r in batch.results]
        text += [f"{d.title}: " for d in batch.dispositions]
        cells += [e.scanned_code for e in db.session.scalars(select(CustodyEvent).where(CustodyEvent.batch_id ==
                                                                                          batch.id))]
        trail = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.batch_id == batch.id, AuditEvent.table_name.not_in(COPY_TABLES)))
        text.append(f"Appendix: audit trail of batch {number} ({trail} entries)")
        return text, cells


@pytest.mark.parametrize("ref", ["SLE-02", "SLE-08", "DLBCL-09"])
def test_the_record_prints_every_value_correction_signature_and_deviation(app, demo, auditor, ref):
    number = demo[ref]
    pdf = download(auditor, number)
    texts = page_texts(pdf)
    text, cells = " ".join(texts), cells_text(pdf)
    in_text, in_cells = expected_lines(app, number)
    for expected in in_text:
        assert expected in text, expected
    for expected in in_cells:
        assert expected in cells or expected in text, expected
    # Storage forms stay in the digest and the audit appendix: the record itself prints for people.
    body = text[:text.index("Appendix: audit trail")]
    assert re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", body) is None
    with app.app_context():
        counts = {f"{v.text} {v.unit}" for e in get_batch(number).entries for v in e.values
                  if v.unit == "cells" and "e" in v.text}
    assert counts and " × 10" in body
    assert not [count for count in counts if count in body]  # "1.8e9 cells" reads "1.8 × 10⁹ cells"
    assert re.search(r"\d{2}:\d{2}:\d{2}", body) is None  # every time to the minute
    digest = qr_digest(pdf)
    with app.app_context():
        downloaded_at = db.session.scalars(select(Download.downloaded_at).order_by(Download.id.desc())).first()
    assert downloaded_at is not None
    for page_number, page_text in enumerate(texts, start=1):
        assert f"Page {page_number} of {len(texts)}" in page_text
        assert f"Record digest SHA-256 {digest}" in page_text
        assert f"Downloaded by Olu Adeyemi at {utc(downloaded_at)}" in page_text


def test_the_scanned_qr_opens_its_verification_as_current(app, demo, auditor):
    number = demo["DLBCL-09"]
    assert f'href="/batches/{number}/record.pdf"' in auditor.get(f"/batches/{number}").get_data(as_text=True)
    first = qr_digest(download(auditor, number))
    scan = auditor.get("/scan", query_string={"code": "V-" + first.upper()})
    assert scan.status_code == 302
    assert scan.headers["Location"] == f"/verify/{first}"
    page = words(auditor.get(scan.headers["Location"]))
    assert "Executed batch record: current" in page
    assert f"This is the current executed batch record of batch {number}" in page
    assert "First issued" in page and "to Olu Adeyemi" in page
    again = download(auditor, number)  # an unchanged record: the same digest, stored once, downloaded twice
    assert qr_digest(again) == first
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IssuedRecord)) == 1
        assert db.session.scalar(select(func.count()).select_from(Download).where(Download.digest == first)) == 2
    assert "Downloads of this version 2" in words(auditor.get(scan.headers["Location"]))


def test_after_a_correction_the_printed_copy_verifies_as_superseded_with_the_change(app, demo, login):
    number = demo["SLE-02"]
    old = qr_digest(download(login("auditor1", DEMO_PASSWORD), number))
    with app.app_context():
        batch = get_batch(number)
        entry = next(e for e in batch.entries if e.step_key == "expansion" and e.occurrence == 1)
        entry_id, version = entry.id, batch.version
    tech = login("tech1", DEMO_PASSWORD)
    corrected = tech.post(f"/batches/{number}/entries/{entry_id}/fields/viable_cells/correct", data={
        "value": "4.1e8", "reason": "Re-read of the counter print-out.", "batch_version": version,
        "username": "tech1", "password": DEMO_PASSWORD})
    assert corrected.status_code == 302, corrected.get_data(as_text=True)
    auditor = login("auditor1", DEMO_PASSWORD)
    page = words(auditor.get(f"/scan?code=V-{old.upper()}", follow_redirects=True))
    assert "Executed batch record: superseded" in page
    assert f"superseded version of the executed batch record of batch {number}" in page
    assert ("Steps / Expansion (daily count) / entry 1 / Viable cells version 2 added: 4.1 × 10⁸ cells (was 4.0 × 10⁸ "
            "cells), by Alex Rivera at ") in page
    assert "Reason: Re-read of the counter print-out." in page
    assert "/ signature of Alex Rivera (performed," in page and "Valid: yes → no" in page
    assert "Audit trail " in page and "step.correct" in page
    new = qr_digest(download(auditor, number))
    assert new != old and f"sha256 {new}" in page  # the current digest is shown
    assert "Executed batch record: current" in words(auditor.get(f"/verify/{new}"))


def test_a_first_download_that_loses_the_race_to_store_its_version_still_succeeds(app, demo, auditor):
    """Another first download of the same version is stored between our check and our
    insert (SQLite's check takes no lock): the download is retried and succeeds."""
    number = demo["DLBCL-09"]
    raced: list[str] = []

    def other_download_stores_it_first(session: Session, context: object, instances: object) -> None:
        for obj in session.new:
            if isinstance(obj, IssuedRecord) and not raced:
                raced.append(obj.digest)
                session.connection().execute(insert(IssuedRecord).values(
                    digest=obj.digest, batch_id=obj.batch_id, canonical_json=obj.canonical_json,
                    issued_at=obj.issued_at, issued_to_id=None))

    event.listen(Session, "before_flush", other_download_stores_it_first)
    try:
        pdf = download(auditor, number)
    finally:
        event.remove(Session, "before_flush", other_download_stores_it_first)
    assert raced == [qr_digest(pdf)]
    with app.app_context():
        [issued] = db.session.scalars(select(IssuedRecord)).all()
        assert (issued.digest, issued.issued_to.username) == (raced[0], "auditor1")
        assert db.session.scalar(select(func.count()).select_from(Download)) == 1


@pytest.mark.parametrize("text", ["xyz", "V-12AB", "g" * 64, "a" * 63])
def test_a_malformed_digest_is_refused_with_its_reason(users, login, text):
    auditor = login("auditor1")
    response = auditor.get(f"/verify/{text}")
    assert response.status_code == 400
    assert "is not a record digest: a digest is 64 hexadecimal characters" in words(response)
    scanned = auditor.get("/scan", query_string={"code": "V-12AB"})
    assert scanned.status_code == 400 and "is not a record digest" in words(scanned)


def test_an_unknown_digest_is_not_a_celltrail_record(users, login):
    auditor = login("auditor1")
    unknown = hashlib.sha256(b"a record printed elsewhere").hexdigest()
    response = auditor.get(f"/verify/{unknown.upper()}")
    assert response.status_code == 404
    assert "Not a CellTrail record" in words(response) and unknown in words(response)
    scanned = auditor.get("/scan", query_string={"code": f"V-{unknown.upper()}"}, follow_redirects=True)
    assert scanned.status_code == 404


def _counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Batch, StepEntry, StepValue, Signature, QcResult, CustodyEvent, User)}


def test_downloads_are_logged_and_audited_and_are_all_the_auditor_writes(app, demo, auditor):
    number = demo["DLBCL-09"]
    with app.app_context():
        since = db.session.scalar(select(func.max(AuditEvent.id)))
    before = _counts(app)
    record = download(auditor, number)
    coa = auditor.get(f"/batches/{number}/coa.pdf")
    assert coa.status_code == 200
    assert _counts(app) == before
    with app.app_context():
        batch_id = get_batch(number).id
        rows = db.session.scalars(select(Download).order_by(Download.id)).all()
        assert [(d.kind, d.batch_id, d.downloaded_by.username) for d in rows] == [
            ("record", batch_id, "auditor1"), ("coa", batch_id, "auditor1")]
        assert rows[0].digest == qr_digest(record)
        assert rows[1].digest == hashlib.sha256(coa.data).hexdigest()
        trail = db.session.scalars(select(AuditEvent).where(AuditEvent.id > since)).all()
        assert {(e.actor_username, e.action, e.table_name) for e in trail} == {
            ("auditor1", "record.issue", "issued_records"), ("auditor1", "download.record", "downloads"),
            ("auditor1", "download.coa", "downloads")}
        assert all(e.batch_id == batch_id for e in trail)
        coa_at = rows[1].downloaded_at
    assert f"Downloaded by Olu Adeyemi at {coa_at:%Y-%m-%d %H:%M} UTC" in text_of(coa.data)


def test_an_unknown_or_malformed_batch_number_writes_nothing(app, users, login):
    auditor = login("auditor1")
    assert auditor.get("/batches/B-A9999-26-00042-X/record.pdf").status_code in (400, 404)
    assert auditor.get("/batches/B-A9999-26-99999-A/record.pdf").status_code in (400, 404)
    assert auditor.get("/batches/not-a-batch/record.pdf").status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Download)) == 0


def test_a_record_the_fonts_cannot_print_is_refused_and_nothing_is_written(app, demo, auditor):
    number = demo["SLE-03"]
    with app.app_context():
        report_deviation(get_batch(number), title="Bag label torn \U0001F4A5", description="Seen at the incubator.",
                         actor=db.session.scalars(select(User).filter_by(username="tech1")).one())
        db.session.commit()
    response = auditor.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 422
    assert "The batch record cannot be printed" in words(response)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Download)) == 0
        assert db.session.scalar(select(func.count()).select_from(IssuedRecord)) == 0


def test_the_batch_page_and_the_record_write_each_value_the_same_way(app, make_batch, login):
    """One form for people on the page and in the PDF: a stored date-time ("…T00:05Z") and a
    stored count ("1.5e9") are never shown as stored; times to the minute."""
    number = make_batch(weight_kg=64.5)
    record_results(app, number)
    client = login("qa1")
    page = words(client.get(f"/batches/{number}"))
    pdf = download(client, number)
    cells, text = cells_text(pdf), " ".join(page_texts(pdf))
    with app.app_context():
        batch = get_batch(number)
        receipt = next(e for e in batch.entries if e.step_key == "receipt")
        [end] = [v for v in receipt.values if v.field_key == "collection_end"]
        zone = lab_timezone()
        stored, moment = end.text, datetime.fromisoformat(end.text)
        signed_at = db.session.scalars(select(Signature.signed_at).where(Signature.batch_id == batch.id)).first()
        bag = next(c for c in batch.containers if c.kind == "product_bag")
    body = text[:text.index("Appendix: audit trail")]  # the appendix quotes what was stored
    assert stored.endswith("Z") and stored not in body
    assert stored not in page, page[page.index(stored) - 300:page.index(stored) + 50]
    assert format_datetime(moment, zone) in page and f"End of collection | {format_utc(moment)}" in cells
    assert "1.5 × 10⁹ cells" in page and "1.5 × 10⁹ cells" in cells and "1.5e9" not in page
    panel = page[page.index("Release testing"):page.index("Certificate of analysis (PDF)")]
    assert "1.02 × 10⁶ cells/kg" in panel and "1.02e6" not in panel and "1.02 × 10⁶ cells/kg" in cells
    assert "64.5 kg" in page
    assert f"{format_datetime(signed_at, zone)}" in page and signed_at.strftime("%H:%M:%S") not in page
    volumes = re.findall(rf"{re.escape(bag.code)} \| Final product bag[^|]* \| ([^|]+) \|", cells)
    assert volumes == ["32.3 mL"] and "32.3 mL" in page


def test_the_record_prints_each_product_bag_as_its_label_does(app, make_batch, login):
    number = make_batch(weight_kg=150.0)  # two bags of 37.5 mL
    client = login("qa1")
    cells = cells_text(download(client, number))
    with app.app_context():
        bags = sorted((c for c in get_batch(number).containers if c.kind == "product_bag"), key=lambda c: c.number)
        codes = [c.code for c in bags]
        filled = bags[0].created_entry.performed_at
    expires = format_utc(filled + timedelta(days=365))
    for n, code in enumerate(codes, start=1):
        row = (f"Final product bag {n} of 2 | {code} | 37.5 mL | 7.50 × 10⁷ | 5.00 × 10⁵ cells/kg (150 kg) | "
               f"{format_utc(filled)} | {expires}")
        assert row in cells, cells[cells.index("Bag | Code"):][:600]
    tech = login("tech1")
    for code in codes:
        response = tech.get(f"/containers/{code}/label.pdf", query_string={"reason": "Compared with the record"})
        assert response.status_code == 200, words(response)
        label = text_of(response.data)
        for fact in ("37.5 mL", "7.50 × 10⁷", "5.00 × 10⁵ cells/kg", expires.removesuffix(" UTC")):
            assert fact in label, fact

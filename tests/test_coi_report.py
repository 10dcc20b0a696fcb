"""The chain-of-identity report: the PDF drawn from a hand-built report (its text, its QR and
digest), and GET /patients/<COI>/coi-report.pdf over a patient's whole chain (read back,
verified by its digest and by scanning, who may download it, every download logged)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent, Download, IssuedRecord, Patient
from lab.models.clinic import Shipment
from lab.services.audit_trail import action_words
from lab.services.bedside import (
    AdministrationInput,
    BedsideInput,
    DisposalInput,
    check_at_bedside,
    dispose_bag,
    record_administration,
)
from lab.services.chain import position
from lab.services.coi_report import patient_by_coi
from lab.services.containers import CustodyMismatch, Scan, record_mismatches
from lab.services.patients import PatientInput, register_patient
from lab.services.progress import lab_timezone
from lab.services.record_issue import snapshot
from lab.services.shipments import PackInput, pack_shipment, verify_packing
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment
from labels.coi_report import (
    BatchSummary,
    BedsideCheckPart,
    CoiReportData,
    Decision,
    DisposalPart,
    HandOff,
    InfusionPart,
    Receipt,
    ShipmentPart,
    SiteDecision,
    canonical_json,
    duration_text,
    render_coi_report,
    report_digest,
)
from labels.record_data import Issue, Signed
from tests.factories import PASSWORD, get_batch, page_text, user
from tests.quality import words
from tests.readback import cells_text, qr_digest, text_of
from workflows.formatting import format_utc

pytestmark = pytest.mark.requirements("COI-5")

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
RECORD = "ab" * 32


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _signed(name: str, meaning: str, hours: float, valid: bool = True) -> tuple[Signed, ...]:
    return (Signed(name, meaning, _at(hours), valid),)


def hand_built() -> CoiReportData:
    shipment = ShipmentPart(
        number="SHP-2026-0001", batch_number="B-2026-0001", status="Received at the site",
        site="NUH-HEM Northern University Hospital, Haematology", bags=("C-0001-A", "C-0002-B"),
        shipper_code="DS-17", logger_code="LOG-99", temp_min_c="-196", temp_max_c="-150", departed_at=_at(300),
        courier="Cryoport", packed_by="Tess Technician", packed_at=_at(299), verified_by="Theo Second",
        verified_at=_at(299.5), signatures=_signed("Theo Second", "verified", 299.5),
        receipt=Receipt(arrived_at=_at(320), logger_min_c="-190", logger_max_c="-140", within_range=False,
                        shipper_intact=True, storage="Haematology LN2 tank 2", scanned_codes=("C-0001-A", "C-0002-B"),
                        missing_codes=(), comment="", quarantine_reason="Logger maximum -140 °C above -150 °C",
                        deviation="DEV-2026-0003", received_by="Nora Nurse", received_at=_at(320.5),
                        signatures=_signed("Nora Nurse", "received", 320.5)),
        decisions=(SiteDecision("release", "Excursion assessed: product unaffected", "Quentin Assurance", _at(330),
                                _signed("Quentin Assurance", "released for use", 330)),),
    )
    return CoiReportData(
        coi="CH-A9999-26-000001-X", patient_ref="SLE-01", initials="AB", date_of_birth=date(1980, 5, 1),
        treating_site="NUH-HEM Northern University Hospital, Haematology", facility_name="Demo facility",
        stage="closed", collection_end=_at(0), infused_at=_at(341), closed=True, vein_to_vein_minutes=341 * 60,
        batches=(BatchSummary("B-2026-0001", "Autologous anti-CD19 CAR T cells", "cd19-car-t", 4, "Shipped", _at(1),
                              RECORD, (Decision("Released", "Released", "All results pass", "Quentin Assurance",
                                                _at(290), _signed("Quentin Assurance", "approved for release", 290)),)),),
        custody=(
            HandOff(_at(2), "B-2026-0001", "C-0000-Z", "received in the lab", "C-0000-Z", "Apheresis unit", "Lab",
                    "Tess Technician", True),
            HandOff(_at(299), "B-2026-0001", None, "packed into shipper", "C-9999-Q", None, "DS-17",
                    "Tess Technician", False, "C-9999-Q belongs to another patient"),
            HandOff(_at(299.1), "B-2026-0001", "C-0001-A", "packed into shipper", "C-0001-A", "LN2-01", "DS-17",
                    "Tess Technician", True),
        ),
        shipments=(shipment,),
        bedside_checks=(BedsideCheckPart("C-0001-A", "B-2026-0001", "wristband", "CH-A9999-26-000001-X", "C-0001-A",
                                         _at(340), "Nora Nurse", "Dana Doctor",
                                         (*_signed("Nora Nurse", "performed", 340), *_signed("Dana Doctor",
                                                                                             "witnessed", 340))),),
        infusions=(InfusionPart("C-0001-A", "B-2026-0001", _at(340.1), _at(340.2), _at(340.3), _at(340.6), 30, True,
                                "", "DEV-2026-0004", "Nora Nurse", _at(341),
                                _signed("Nora Nurse", "administered", 341)),),
        disposals=(DisposalPart("C-0002-B", "B-2026-0001", "destroyed", "Dose complete with one bag", _at(342),
                                "Nora Nurse", "Dana Doctor", _signed("Nora Nurse", "performed", 342, valid=False)),),
    )


ISSUE = Issue("Audrey Auditor", datetime(2026, 11, 30, 12, 0, tzinfo=UTC))


def test_the_report_prints_the_patient_every_hand_off_and_the_whole_chain():
    report = hand_built()
    pdf = render_coi_report(report, ISSUE)
    text = text_of(pdf)
    for line in (
        "Chain of Identity Report", "COI CH-A9999-26-000001-X", "Patient reference SLE-01", "Initials AB",
        "Date of birth 1980-05-01", "Treating site NUH-HEM Northern University Hospital, Haematology",
        "Vein to vein 14 days 5 h", "Batch B-2026-0001", "cd19-car-t, version 4", f"sha256 {RECORD}",
        "Released → Released: decided by Quentin Assurance at 2026-11-14 10:00 UTC. Reason: All results pass",
        "MISMATCH", "C-9999-Q belongs to another patient", "MATCH",
        "Shipment SHP-2026-0001", "Dry shipper DS-17", "Temperature logger LOG-99", "Courier Cryoport",
        "minimum -190 °C, maximum -140 °C; shipping range -196 °C to -150 °C: OUTSIDE RANGE",
        "QUARANTINED: Logger maximum -140 °C above -150 °C", "DEV-2026-0003",
        "Released for use by Quentin Assurance", "Signed by Theo Second — meaning: verified",
        "Method wristband COI scanned", "Clinicians Nora Nurse and Dana Doctor",
        "30 min from the start of thawing to the end of infusion; limit 30 min: LIMIT EXCEEDED",
        "Destroyed at the site", "Witness Dana Doctor", "INVALIDATED",
        "Downloaded by Audrey Auditor at 2026-11-30 12:00 UTC", "Page 1 of",
    ):
        assert line in text, line
    # Hand-offs in the order given (time order), each with who, from and to, what was scanned and the result.
    cells = cells_text(pdf)
    first = "C-0000-Z B-2026-0001 | received in the lab | C-0000-Z | Apheresis unit → Lab | Tess Technician | MATCH"
    refused = "packed into shipper | C-9999-Q | DS-17 | Tess Technician | MISMATCH | C-9999-Q belongs to another patient"
    packed = "C-0001-A B-2026-0001 | packed into shipper | C-0001-A | LN2-01 → DS-17 | Tess Technician | MATCH"
    assert cells.index(first) < cells.index(refused) < cells.index(packed)


def test_its_qr_and_footer_carry_the_digest_of_its_canonical_content():
    report = hand_built()
    pdf = render_coi_report(report, ISSUE)
    digest = report_digest(report)
    assert qr_digest(pdf) == digest
    assert f"Report digest SHA-256 {digest}" in text_of(pdf)
    assert canonical_json(report).startswith(b'{"format":"celltrail/coi-report/1","record":{')
    # Who downloaded it is not in the content: another download of the same chain has the same digest.
    again = render_coi_report(report, Issue("Other Person", datetime(2026, 12, 1, tzinfo=UTC)))
    assert qr_digest(again) == digest
    assert render_coi_report(report, ISSUE) == pdf  # byte-reproducible
    # Any change to the chain changes it.
    assert report_digest(replace(report, stage="infused")) != digest


def test_an_open_chain_says_what_is_still_to_come():
    report = replace(hand_built(), stage="in transit", infused_at=None, closed=False, vein_to_vein_minutes=None,
                     bedside_checks=(), infusions=(), disposals=(), shipments=())
    text = text_of(render_coi_report(report, ISSUE))
    for line in ("Open: the chain is not closed yet.", "Not shipped yet.", "No bedside check yet.",
                 "Not infused yet.", "Where the product is In transit"):
        assert line in text, line
    assert "Bags not infused" not in text


def test_naive_times_and_a_bad_record_digest_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(hand_built(), collection_end=datetime(2026, 11, 2, 8, 0))
    with pytest.raises(ValueError, match="64 hexadecimal"):
        BatchSummary("B", "P", "k", 1, "S", T0, "not a digest")


# --- GET /patients/<COI>/coi-report.pdf over a whole chain ------------------------------------------


def _typed(moment: datetime) -> str:
    """A time as a clinician types it: to the minute, in the lab's time zone."""
    return moment.astimezone(lab_timezone()).strftime("%Y-%m-%d %H:%M")


@pytest.fixture
def infused(app: Flask, released: str, sites: dict[str, int]) -> str:
    """The released batch packed, verified, received at NUH-HEM, a refused bedside scan of another
    patient's wristband, then checked by two clinicians and infused; returns the patient's COI."""
    with app.app_context():
        batch = get_batch(released)
        bags = [c.code for c in batch.containers if c.kind == "product_bag"]
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        shipment = pack_shipment(batch, PackInput(bags, "DS-0042", "LOG-77", sites["NUH-HEM"], now - timedelta(hours=5),
                                                  "World Courier"), actor=user("tech1"), now=now - timedelta(hours=5))
        db.session.commit()
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"),
                       now=now - timedelta(hours=5))
        db.session.commit()
        receive_shipment(shipment, ReceiptInput("DS-0042", bags, "-182.5", "-171", True, now - timedelta(hours=3),
                                                "Haematology LN2 tank 2"), logger_file=None, actor=user("nurse1"),
                         credentials=Credentials(PASSWORD, "nurse1"), now=now - timedelta(hours=3))
        db.session.commit()
        assert shipment.status == "received"
        checked = now - timedelta(hours=1)
        other = register_patient(PatientInput("OTHER-01", "XY", date(1970, 3, 3), 80.0, "DLBCL"), actor=user("super1"))
        db.session.commit()
        try:
            check_at_bedside(BedsideInput(bags[0], "wristband", wristband=other.coi,
                                          second_username="doc1", second_password=PASSWORD),
                             actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"), now=checked)
        except CustodyMismatch as error:
            db.session.rollback()
            record_mismatches(get_batch(released), error.scans, actor=user("nurse1"), now=checked)
            db.session.commit()
        else:
            raise AssertionError("another patient's wristband was accepted")
        batch = get_batch(released)
        container = next(c for c in batch.containers if c.code == bags[0])
        check = check_at_bedside(BedsideInput(bags[0], "wristband", wristband=batch.patient.coi,
                                              second_username="doc1", second_password=PASSWORD),
                                 actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"), now=checked)
        db.session.commit()
        record_administration(check, AdministrationInput(_typed(checked + timedelta(minutes=5)),
                                                         _typed(checked + timedelta(minutes=15)),
                                                         _typed(checked + timedelta(minutes=20)),
                                                         _typed(checked + timedelta(minutes=30)), "none observed"),
                              actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"), now=now)
        db.session.commit()
        for other in bags[1:]:  # any further bag: not needed, destroyed at the site
            dispose_bag(next(c for c in batch.containers if c.code == other),
                        DisposalInput("destroyed", "Dose complete", _typed(now - timedelta(minutes=10)),
                                      "doc1", PASSWORD),
                        actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"), now=now)
            db.session.commit()
        assert container.status == "infused"
        return batch.patient.coi


def coi_pdf(client: FlaskClient, coi: str) -> bytes:
    response = client.get(f"/patients/{coi}/coi-report.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f"attachment; filename=COI-report-{coi}.pdf"
    return response.data


def test_the_report_reads_back_the_whole_chain_from_collection_to_infusion(app, released, infused, login):
    pdf = coi_pdf(login("qa1"), infused)
    text, cells = text_of(pdf), cells_text(pdf)
    with app.app_context():
        batch = get_batch(released)
        patient = batch.patient
        chain = position(patient)
        shipment = db.session.scalars(select(Shipment)).one()
        disposition = batch.dispositions[-1]
        record = snapshot(batch).digest
        bag = shipment.bags[0].container.code
        assert chain.closed and chain.vein_to_vein is not None
        expected = [
            "Chain of Identity Report", f"COI {patient.coi}", f"Patient reference {patient.patient_ref}",
            "Initials AB", "Date of birth 1980-05-01",
            "Treating site NUH-HEM Northern University Hospital, Haematology", "Where the product is Chain closed",
            f"End of collection {format_utc(chain.collection_end)}",
            f"Vein to vein {duration_text(int(chain.vein_to_vein.total_seconds() // 60))}",
            f"Batch {released}", "cd19-car-t, version 4", f"sha256 {record}",
            f"decided by Quentin Assurance at {format_utc(disposition.decided_at)}",
            "Signed by Quentin Assurance — meaning: approved for release",
            f"Shipment {shipment.number}", "Consignee NUH-HEM", "Dry shipper DS-0042", "Temperature logger LOG-77",
            "Courier World Courier", f"Departed {format_utc(shipment.departed_at)}",
            "Packing verified by Theo Second", "Signed by Theo Second — meaning: verified",
            "minimum -182.5 °C, maximum -171 °C; shipping range -196 °C to -150 °C: within range",
            "Shipper intact yes", "Storage at the site Haematology LN2 tank 2", "Quarantine none",
            "Received by Nora Nurse", "Signed by Nora Nurse — meaning: received",
            "Method wristband COI scanned", "Clinicians Nora Nurse and Dana Doctor",
            "Signed by Dana Doctor — meaning: verified",
            "25 min from the start of thawing to the end of infusion; limit 30 min: within the limit",
            "Reactions none observed", "Signed by Nora Nurse — meaning: administered",
            "Downloaded by Quentin Assurance at",
        ]
    for line in expected:
        assert line in text, line
    assert "— INVALIDATED" not in text and "— valid" in text
    # Every hand-off in time order, with the refused bedside scan as a MISMATCH between the packing and the infusion.
    assert f"{bag} {released} | packed into shipper | {bag} |" in cells
    assert f"{bag} {released} | received at site | {bag} | Dry shipper DS-0042" in cells
    assert (cells.index("| packed into shipper |") < cells.index("| received at site |")
            < cells.index("MISMATCH | DO NOT INFUSE") < cells.index("| infused |"))
    with app.app_context():
        assert patient_by_coi(infused) is not None
        other = db.session.scalar(select(Patient).where(Patient.patient_ref == "OTHER-01"))
        assert other is not None and other.coi in text


def test_its_digest_verifies_at_verify_and_by_scanning_and_a_later_change_supersedes_it(app, infused, login):
    client = login("auditor1")
    pdf = coi_pdf(client, infused)
    digest = qr_digest(pdf)
    assert f"Report digest SHA-256 {digest}" in text_of(pdf)
    page = words(client.get(f"/verify/{digest}"))
    assert "Chain-of-identity report: current" in page and infused in page
    scanned = client.get("/scan", query_string={"code": f"V-{digest.upper()}"}, follow_redirects=True)
    assert scanned.status_code == 200 and "Chain-of-identity report: current" in words(scanned)
    # The batch record digest it prints verifies too (it was issued with the report).
    with app.app_context():
        record = snapshot(db.session.scalars(select(Shipment)).one().batch).digest
    assert "Executed batch record: current" in words(client.get(f"/verify/{record}"))
    assert qr_digest(coi_pdf(client, infused)) == digest  # nothing changed: the same version
    with app.app_context():  # a site's QA decision... any later event in the chain changes the report
        batch = db.session.scalars(select(Shipment)).one().batch
        record_mismatches(batch, [Scan("C-NOT-OURS", None, "received at site", False, "Not this patient's bag")],
                          actor=user("nurse1"))
        db.session.commit()
    page = words(client.get(f"/verify/{digest}"))
    assert "Chain-of-identity report: superseded" in page and "What changed since this copy" in page
    assert "Custody hand-off" in page and "added: by Nora Nurse" in page


def test_each_download_is_logged_and_audited(app, infused, login):
    client = login("nurse1")
    with app.app_context():
        since = db.session.scalar(select(func.max(AuditEvent.id)))
    digest = qr_digest(coi_pdf(client, infused))
    coi_pdf(client, infused)
    with app.app_context():
        batch_id = patient_by_coi(infused).batches[-1].id
        rows = db.session.scalars(select(Download).where(Download.kind == "coi-report").order_by(Download.id)).all()
        assert [(d.batch_id, d.digest, d.detail, d.downloaded_by.username) for d in rows] == [
            (batch_id, digest, infused, "nurse1")] * 2
        issued = db.session.scalars(select(IssuedRecord).where(IssuedRecord.id > 0)).all()
        assert {i.batch_id for i in issued} == {batch_id} and digest in {i.digest for i in issued}
        trail = db.session.scalars(select(AuditEvent).where(AuditEvent.id > since)).all()
        assert sorted((e.action, e.table_name) for e in trail) == [
            ("download.coi-report", "downloads"), ("download.coi-report", "downloads"),
            ("record.issue", "issued_records"), ("record.issue", "issued_records")]
        assert action_words("download.coi-report") == "Downloaded a chain-of-identity report"


def test_who_may_download_it(app, infused, login):
    for username in ("super1", "qa1", "auditor1", "nurse1", "doc1"):
        assert login(username).get(f"/patients/{infused}/coi-report.pdf").status_code == 200, username
    for username in ("tech1", "qc1", "admin", "nurse3"):  # nurse3: a clinician of another site
        response = login(username).get(f"/patients/{infused}/coi-report.pdf")
        assert response.status_code == 403, username
    assert "a clinician sees only their own site's patients" in words(response)
    assert login("qa1").get("/patients/CH-A9999-26-NOPE00-0/coi-report.pdf").status_code == 404
    with app.app_context():
        assert {d.downloaded_by.username for d in db.session.scalars(select(Download))} == {
            "super1", "qa1", "auditor1", "nurse1", "doc1"}


def test_the_patient_page_links_to_it_for_those_who_may_read_it(app, released, infused, login):
    with app.app_context():
        ref = get_batch(released).patient.patient_ref
    link = f'href="/patients/{infused}/coi-report.pdf"'
    assert link in login("nurse1").get(f"/patients/{ref}").get_data(as_text=True)
    assert link in login("auditor1").get(f"/patients/{ref}").get_data(as_text=True)
    assert link not in login("tech1").get(f"/patients/{ref}").get_data(as_text=True)


def test_a_patient_without_a_batch_has_no_report_and_nothing_is_written(app, users, login):
    with app.app_context():
        patient = register_patient(PatientInput("NEW-01", "CD", date(1990, 1, 2), 70.0, "DLBCL"), actor=user("super1"))
        db.session.commit()
        coi = patient.coi
    client = login("qa1")
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = client.get(f"/patients/{coi}/coi-report.pdf")
    assert response.status_code == 409 and "has no batch yet" in page_text(response)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before
        assert db.session.scalar(select(func.count()).select_from(Download)) == 0

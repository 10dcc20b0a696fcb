"""The executed batch record follows the product after release (issue 15): its "Distribution and
administration" section prints each shipment (consignee, departure, packing and verification,
receipt with the logger's readings and the verdict, quarantine and QA's decision), each bag's
bedside check, thaw and infusion against the limit, or its disposal, the vein-to-vein time and
the notices of late results with their acknowledgement; the release for infusion certificate
lists those notices. Read back from the PDFs downloaded over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from lab.extensions import db
from lab.models import Container, IssuedRecord, SiteNotice
from lab.services.bedside import (
    AdministrationInput,
    BedsideInput,
    DisposalInput,
    check_at_bedside,
    dispose_bag,
    record_administration,
)
from lab.services.chain import position
from lab.services.record_distribution import duration_text
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, decide_quarantine, receive_shipment
from tests.clinic import find_shipment, ship
from tests.factories import PASSWORD, get_batch, page_text, user
from tests.quality import close_all_deviations, post_decision, state
from tests.readback import cells_text, qr_digest, text_of
from tests.test_site_notices import acknowledge, fail_late

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("A11-8.1")]

NURSE = Credentials(PASSWORD, "nurse1")


def receive(app: Flask, shipment_number: str, *, high: str = "-165") -> str:
    """nurse1 receives the shipment three hours ago, the logger reading -180 to ``high`` °C: the bag's code."""
    with app.app_context():
        shipment = find_shipment(shipment_number)
        codes = [bag.container.code for bag in shipment.bags]
        now = datetime.now(UTC)
        receive_shipment(shipment, ReceiptInput("DS-0042", codes, "-180", high, True, now - timedelta(hours=3),
                                                "Haematology LN2 tank 2, rack B"),
                         logger_file=None, actor=user("nurse1"), credentials=NURSE, now=now - timedelta(hours=3))
        db.session.commit()
        return codes[0]


def typed(app: Flask, moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(app.config["TIMEZONE"])).strftime("%Y-%m-%d %H:%M")


def infuse(app: Flask, code: str) -> None:
    """nurse1 and doc1 check the bag two hours ago; thawed from 2 minutes after, infused by 18 minutes after."""
    with app.app_context():
        checked = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
        coi = db.session.scalar(select(Container).where(Container.code == code)).batch.patient.coi
        check = check_at_bedside(BedsideInput(code, "wristband", wristband=coi, second_username="doc1",
                                              second_password=PASSWORD),
                                 actor=user("nurse1"), credentials=NURSE, now=checked)
        db.session.commit()
        record_administration(check, AdministrationInput(
            typed(app, checked + timedelta(minutes=2)), typed(app, checked + timedelta(minutes=5)),
            typed(app, checked + timedelta(minutes=10)), typed(app, checked + timedelta(minutes=18)),
            "None observed."), actor=user("nurse1"), credentials=NURSE, now=checked + timedelta(minutes=30))
        db.session.commit()


def record_text(client, number: str) -> tuple[str, str]:
    """The downloaded record's text (each table cell read whole after the page text) and its QR's digest."""
    response = client.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200, page_text(response)[:2000]
    return f"{text_of(response.data)} | {cells_text(response.data)}", qr_digest(response.data)


def test_the_record_follows_the_product_to_the_patient(app, released, sites, login):
    shipment_number = ship(app, released, sites["NUH-HEM"])
    code = receive(app, shipment_number)
    infuse(app, code)
    fail_late(app, login, released)  # the day-14 sterility, after the infusion
    with app.app_context():
        chain = position(get_batch(released).patient)
        assert chain.closed and chain.vein_to_vein is not None
        vein = duration_text(chain.vein_to_vein)
        packer, verifier = user("tech1").full_name, user("tech2").full_name
    qa = login("qa1")
    text, digest = record_text(qa, released)
    section = text[text.index("Distribution and administration"):]
    for expected in (
        f"Shipment {shipment_number} to NUH-HEM Northern University Hospital, Haematology",
        "Dry shipper DS-0042", "Logger LOG-7781", "Courier World Courier",
        "Shipping range -196 to -150 °C", f"Packed {packer} at", f"Verified {verifier} at",
        "meaning: verified", "Receipt at the site", "Logger readings minimum -180 °C, maximum -165 °C", "Shipper intact",
        "Storage at the site Haematology LN2 tank 2, rack B",
        "ACCEPTED: logger within -196 to -150 °C, shipper intact, every bag received", "meaning: received",
        code, "MATCH", "Wristband COI scanned", "Nora Nurse and Dana Doctor",
        "Limit kept: 16 min from the start of thawing to the end of infusion, within 30 minutes.",
        "Vein-to-vein time", "CLOSED: every shipped bag infused", f"Vein-to-vein {vein}",
        "Notices of late results to the sites", "Notice 1 to NUH-HEM", "Sterility: Result growth FAILS",
        "OPEN: not yet acknowledged by the site",
    ):
        assert expected in section, expected
    assert "meaning: administered" in section

    # the site acknowledges: the record says so, and it is a new version of the record
    nurse = login("nurse1")
    assert acknowledge(nurse, 1, "nurse1").status_code == 302
    qa = login("qa1")
    text, later = record_text(qa, released)
    assert "Acknowledged by Nora Nurse at" in text and "meaning: acknowledged" in text
    assert "OPEN: not yet acknowledged" not in text
    assert later != digest
    verified = qa.get(f"/verify/{digest}")
    assert verified.status_code == 200


def test_a_quarantine_its_decision_and_a_returned_bag_are_in_the_record(app, released, sites, login):
    shipment_number = ship(app, released, sites["NUH-HEM"])
    code = receive(app, shipment_number, high="-120")  # an excursion: quarantined at the site
    with app.app_context():
        shipment = find_shipment(shipment_number)
        assert shipment.status == "quarantined"
        decide_quarantine(shipment, decision="reject", reason="Logger above -150 °C for 40 minutes.",
                          actor=user("qa1"), credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()
        container = db.session.scalar(select(Container).where(Container.code == code))
        dispose_bag(container, DisposalInput("returned", "Rejected by QA after the excursion.",
                                             typed(app, datetime.now(UTC) - timedelta(minutes=30)),
                                             witness_username="doc1", witness_password=PASSWORD),
                    actor=user("nurse1"), credentials=NURSE)
        db.session.commit()
    text, _ = record_text(login("qa1"), released)
    section = text[text.index("Distribution and administration"):]
    for expected in (
        "Status Rejected by QA", "QUARANTINED at the site: temperature excursion",
        "QA decision on the quarantine: Rejected", "Logger above -150 °C for 40 minutes.", "meaning: rejected",
        "RETURNED TO THE MANUFACTURER", "Reason: Rejected by QA after the excursion.",
        "Recorded by Nora Nurse, witnessed by Dana Doctor", "meaning: witnessed", "not checked yet",
        "Not counted: the chain closed without an infusion.",
        "None: no release result has failed after shipment.",
    ):
        assert expected in section, expected
    with app.app_context():
        deviation = find_shipment(shipment_number).receipt.deviation
        assert deviation is not None and f"Deviation {deviation.number}" in section


def test_a_batch_not_shipped_says_so_and_an_unchanged_record_keeps_its_digest(app, released, sites, login):
    qa = login("qa1")
    text, digest = record_text(qa, released)
    assert "Distribution and administration Not shipped: no shipment of this batch's product has been packed." in text
    assert record_text(qa, released)[1] == digest
    with app.app_context():  # copies issued before records had the section keep verifying as current
        issued = db.session.scalar(select(IssuedRecord).where(IssuedRecord.digest == digest))
        assert issued is not None and '"distribution"' not in issued.canonical_json
    ship(app, released, sites["NUH-HEM"])
    text, shipped = record_text(qa, released)
    assert shipped != digest and "Receipt at the site: not received yet." in text
    assert "Running: the chain closes when every shipped bag is infused" in text
    assert record_text(qa, released)[1] == shipped


@pytest.mark.requirements("CLIN-5")
def test_the_rfic_lists_the_late_results_sent_to_the_site(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    qa = login("qa1")
    before = qa.get(f"/batches/{released}/rfic.pdf")
    assert before.status_code == 200 and "Notices of late results" not in text_of(before.data)
    fail_late(app, login, released)
    qa = login("qa1")
    held = qa.get(f"/batches/{released}/rfic.pdf")  # on hold: no certificate, as before
    assert held.status_code == 409
    close_all_deviations(app, released)
    qa = login("qa1")
    response = post_decision(app, qa, released, "lift_hold", reason="Investigated; physician informed.")
    assert response.status_code == 302, page_text(response)[:2000]
    assert state(app, released) == "shipped"
    certificate = qa.get(f"/batches/{released}/rfic.pdf")
    assert certificate.status_code == 200
    text = text_of(certificate.data)
    assert "Notices of late results (failed after shipment)" in text
    assert "Notice 1 to NUH-HEM Northern University Hospital, Haematology" in text
    assert "Sterility: Result growth FAILS its specification" in text
    assert "OPEN: not yet acknowledged by the site" in text
    assert acknowledge(login("nurse1"), 1, "nurse1").status_code == 302
    text = text_of(login("qa1").get(f"/batches/{released}/rfic.pdf").data)
    assert "Acknowledged by Nora Nurse at" in text
    with app.app_context():
        assert db.session.scalar(select(SiteNotice.acknowledged_at)) is not None

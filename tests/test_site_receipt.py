"""Receipt of a shipment at its treatment site and QA's decision on a product quarantined there
(issue 15, item 4): through HTTP, with each refusal of the issue's bad-input list that concerns it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Attachment, AuditEvent, Container, CustodyEvent, Deviation, Shipment, ShipmentReceipt, Signature
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment, usable_at_site
from tests.clinic import pack, ship
from tests.factories import PASSWORD, get_batch, page_text, user
from tests.test_shipments import local, product_bags

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-3")]
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def receipt_form(bags: list[str], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "shipper_scanned": "DS-0042", "bag_codes": "\r\n".join(bags), "logger_min_c": "-178", "logger_max_c": "-161.5",
        "logger_file": (BytesIO(PDF), "logger-7781.pdf"), "shipper_intact": "yes",
        "arrived_at": local(datetime.now(UTC) - timedelta(minutes=5)), "storage": "Haematology LN2 tank 2, rack B",
        "comment": "", "username": "nurse1", "password": PASSWORD}
    data.update(overrides)
    return data


def post_receipt(client: Any, number: str, data: dict[str, Any]) -> Any:
    return client.post(f"/shipments/{number}/receive", data=data, content_type="multipart/form-data")


def written(app: Flask) -> dict[str, int]:
    """What a refused receipt must leave as it was."""
    with app.app_context():
        return {"receipts": db.session.scalar(select(func.count(ShipmentReceipt.id))),
                "attachments": db.session.scalar(select(func.count(Attachment.id))),
                "matched": db.session.scalar(select(func.count(CustodyEvent.id)).where(CustodyEvent.matched.is_(True))),
                "deviations": db.session.scalar(select(func.count(Deviation.id))),
                "signatures": db.session.scalar(select(func.count(Signature.id))),
                "at_site": db.session.scalar(select(func.count(Container.id)).where(Container.status == "at site"))}


def status(app: Flask, number: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Shipment.status).where(Shipment.number == number))


def bag_usable(app: Flask, number: str) -> str | None:
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
        return usable_at_site(shipment.bags[0].container)


def test_the_site_receives_and_the_bags_are_usable(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    bags = product_bags(app, released)
    assert "not been shipped" in (bag_usable(app, number) or "") or "in transit" in (bag_usable(app, number) or "")
    client = login("nurse1")
    page = page_text(client.get(f"/shipments/{number}"))
    assert "Receive this shipment" in page
    assert client.get(f"/shipments/{number}/receive").status_code == 200
    response = post_receipt(client, number, receipt_form(bags))
    assert response.status_code == 302, page_text(response)[:3000]
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
        receipt = shipment.receipt
        assert shipment.status == "received" and receipt.quarantine_reason == "" and receipt.deviation is None
        assert (receipt.logger_min_c, receipt.logger_max_c, receipt.scanned_codes, receipt.missing_codes) == (
            -178, -161.5, bags, [])
        assert receipt.logger_file.filename == "logger-7781.pdf" and receipt.logger_file.content == PDF
        assert {(b.container.status, b.container.location) for b in shipment.bags} == {
            ("at site", "NUH-HEM: Haematology LN2 tank 2, rack B")}
        events = db.session.scalars(select(CustodyEvent).where(CustodyEvent.event == "received at site")).all()
        assert [(e.scanned_code, e.matched, e.actor.username) for e in events] == [(bags[0], True, "nurse1")]
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "shipment_receipt")).all()
        assert [(s.meaning, s.signer.username) for s in signed] == [("received", "nurse1")]
    assert bag_usable(app, number) is None
    page = page_text(client.get(f"/shipments/{number}"))
    assert "Receipt at the site" in page and "logger-7781.pdf" in page and "received" in page
    assert "lowest -178 °C, highest -161.5 °C" in page  # every digit read off the logger


def test_an_excursion_quarantines_until_qa_releases(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    response = post_receipt(login("nurse1"), number, receipt_form(product_bags(app, released), logger_max_c="-120"))
    assert response.status_code == 302
    assert status(app, number) == "quarantined"
    assert "QUARANTINED" in (bag_usable(app, number) or "")
    with app.app_context():
        receipt = db.session.scalar(select(ShipmentReceipt))
        assert "temperature excursion" in receipt.quarantine_reason and "-196 to -150 °C" in receipt.quarantine_reason
        assert receipt.deviation is not None and receipt.deviation.batch.batch_number == released
        assert receipt.deviation.source == "limit"
    assert "QUARANTINED AT THE SITE" in page_text(login("nurse1").get(f"/shipments/{number}"))

    dashboard = page_text(login("qa1").get("/"))
    assert "Products quarantined at a treatment site: QA decision needed" in dashboard and number in dashboard

    # Only QA decides, with a reason and a signature.
    assert login("tech1").post(f"/shipments/{number}/decision",
                               data={"decision": "release", "reason": "ok", "password": PASSWORD}).status_code == 403
    client = login("qa1")
    assert "QA decision on the quarantined product" in page_text(client.get(f"/shipments/{number}"))
    refused = client.post(f"/shipments/{number}/decision",
                          data={"decision": "release", "reason": "", "username": "qa1", "password": PASSWORD})
    assert refused.status_code == 422 and "Say why" in page_text(refused)
    assert status(app, number) == "quarantined"
    response = client.post(f"/shipments/{number}/decision", data={
        "decision": "release", "reason": "Peak of 12 minutes; stability data cover it.", "username": "qa1",
        "password": PASSWORD})
    assert response.status_code == 302, page_text(response)[:2000]
    assert status(app, number) == "received"
    assert bag_usable(app, number) is None
    assert "QA decision needed" not in page_text(client.get("/"))
    with app.app_context():
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "shipment_decision")).all()
        assert [(s.meaning, s.signer.username) for s in signed] == [("released for use", "qa1")]


def test_a_broken_shipper_and_a_missing_bag_quarantine_and_qa_rejects(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    response = post_receipt(login("nurse1"), number, receipt_form(
        [], shipper_intact="no", comment="The shipper arrived open and empty."))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        receipt = db.session.scalar(select(ShipmentReceipt))
        assert receipt.missing_codes == product_bags(app, released)
        assert "missing" in receipt.quarantine_reason and "damaged" in receipt.quarantine_reason
        assert receipt.deviation.source == "custody"
    assert status(app, number) == "quarantined"
    response = login("qa1").post(f"/shipments/{number}/decision", data={
        "decision": "reject", "reason": "Product lost in transit.", "username": "qa1", "password": PASSWORD})
    assert response.status_code == 302
    assert status(app, number) == "rejected"
    assert "not received" in (bag_usable(app, number) or "")  # the missing bag never reached the site


def test_a_rejected_bag_at_the_site_is_not_usable(app, released, sites):
    number = ship(app, released, sites["NUH-HEM"])
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
        receive_shipment(shipment, ReceiptInput("DS-0042", product_bags(app, released), "-200", "-170", True,
                                                datetime.now(UTC), "Tank 1"),
                         logger_file=None, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"))
        db.session.commit()
        from lab.services.site_receipt import decide_quarantine
        decide_quarantine(shipment, decision="reject", reason="Below the validated range.", actor=user("qa1"),
                          credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()
    assert (bag_usable(app, number) or "").startswith("REJECTED by QA")


def test_a_temperature_that_is_not_a_number_is_refused_on_its_field(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    before = written(app)
    response = post_receipt(login("nurse1"), number, receipt_form(product_bags(app, released), logger_min_c="cold",
                                                                  logger_max_c="-1e999"))
    assert response.status_code == 422
    text = page_text(response)
    assert "enter a number of °C such as -178, not 'cold'" in text.replace("Lowest temperature: ", "")
    assert "must be between" in text
    assert written(app) == before and status(app, number) == "in_transit"


def test_a_clinician_of_another_site_writes_nothing(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    before = written(app)
    client = login("nurse3")
    assert client.get(f"/shipments/{number}/receive").status_code == 403
    response = post_receipt(client, number, receipt_form(product_bags(app, released), username="nurse3"))
    assert response.status_code == 403 and "another treatment site" in page_text(response)
    assert written(app) == before and status(app, number) == "in_transit"


def test_no_receipt_before_verification(app, released, sites, login):
    number = pack(app, released, sites["NUH-HEM"])
    before = written(app)
    client = login("nurse1")
    page = client.get(f"/shipments/{number}/receive")
    assert page.status_code == 409 and "not been verified" in page_text(page)
    response = post_receipt(client, number, receipt_form(product_bags(app, released)))
    assert response.status_code == 422 and "not been verified" in page_text(response)
    assert written(app) == before and status(app, number) == "packed"


def test_another_patients_bag_at_receipt_is_a_mismatch(app, released, make_batch, sites, login):
    other = make_batch(ref="SLE-02")
    number = ship(app, released, sites["NUH-HEM"])
    before = written(app)
    foreign = product_bags(app, other)
    response = post_receipt(login("nurse1"), number, receipt_form(product_bags(app, released) + foreign))
    assert response.status_code == 409
    text = page_text(response)
    assert "MISMATCH" in text and foreign[0] in text
    after = written(app)
    assert after == {**before, "deviations": before["deviations"] + 1}  # the mismatch's deviation only
    assert status(app, number) == "in_transit"
    with app.app_context():
        kept = db.session.scalars(select(CustodyEvent).where(CustodyEvent.matched.is_(False))).all()
        assert [(e.scanned_code, e.event, e.batch_id, e.actor.username) for e in kept] == [
            (foreign[0], "received at site", get_batch(released).id, "nurse1")]


@pytest.mark.parametrize(("change", "field_message"), [
    ({"shipper_scanned": "DS-9999"}, "travels in DS-0042"),
    ({"arrived_at": local(datetime.now(UTC) - timedelta(days=2))}, "before the shipper left the lab"),
    ({"arrived_at": local(datetime.now(UTC) + timedelta(hours=2))}, "in the future"),
    ({"arrived_at": "soon"}, "date and time"),
    ({"logger_min_c": "-150", "logger_max_c": "-180"}, "below the lowest"),
    ({"storage": ""}, "Enter the storage at the site"),
    ({"logger_file": (BytesIO(b"<html>"), "log.html")}, "not a PDF, PNG or JPEG"),
    ({"logger_file": (BytesIO(b""), "")}, "Attach the logger's print-out"),
    ({"shipper_intact": ""}, "arrived intact"),
    ({"bag_codes": "not-a-code"}, "is not a container code: scan the bag's label again"),
    ({"password": "wrong"}, "password is wrong"),
])
def test_bad_receipts_are_refused_and_write_nothing(app, released, sites, login, change, field_message):
    number = ship(app, released, sites["NUH-HEM"])
    before = written(app)
    response = post_receipt(login("nurse1"), number, receipt_form(product_bags(app, released), **change))
    assert 400 <= response.status_code < 500
    assert field_message in page_text(response)
    after = written(app)
    assert after == before and status(app, number) == "in_transit"


def test_the_trail_and_signatures_of_the_chain_verify(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    post_receipt(login("nurse1"), number, receipt_form(product_bags(app, released), logger_min_c="-210"))
    login("qa1").post(f"/shipments/{number}/decision", data={
        "decision": "release", "reason": "Logger read-out artefact; shipper was charged.", "username": "qa1",
        "password": PASSWORD})
    assert status(app, number) == "received"
    result = app.test_cli_runner().invoke(args=["verify-audit"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"shipment.pack", "shipment.verify", "shipment.logger_file", "shipment.receive",
            "shipment.quarantine_release"} <= actions

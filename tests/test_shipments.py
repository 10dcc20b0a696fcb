"""Packing a released batch into a dry shipper and the second person's verification (issue 15,
item 3): through HTTP, with each refusal of the issue's bad-input list that concerns packing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import AuditEvent, CustodyEvent, Deviation, Shipment, ShipmentBag, Signature
from tests.clinic import pack
from tests.factories import get_batch, page_text, signature
from tests.quality import release, state

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-2")]


def product_bags(app: Flask, number: str) -> list[str]:
    with app.app_context():
        return [c.code for c in get_batch(number).containers if c.kind == "product_bag"]


def local(moment: datetime) -> str:
    """A moment as the datetime-local field sends it, with its zone."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def pack_form(bags: list[str], site_id: int, **overrides: str) -> dict[str, Any]:
    data = {"bag_codes": "\r\n".join(bags), "shipper_code": "DS-0042", "logger_code": "LOG-7781",
            "site_id": str(site_id), "departed_at": local(datetime.now(UTC)), "courier": "World Courier"}
    data.update(overrides)
    return data






def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {"shipments": db.session.scalar(select(func.count(Shipment.id))),
                "bags": db.session.scalar(select(func.count(ShipmentBag.id))),
                "custody": db.session.scalar(select(func.count(CustodyEvent.id)).where(CustodyEvent.matched.is_(True))),
                "signatures": db.session.scalar(select(func.count(Signature.id)))}


def test_pack_and_verify_through_http(app, released, sites, login):
    bags = product_bags(app, released)
    client = login("tech1")
    page = page_text(client.get(f"/batches/{released}"))
    assert "Pack for shipment" in page
    form = client.get(f"/batches/{released}/ship")
    assert form.status_code == 200 and bags[0] in page_text(form)
    response = client.post(f"/batches/{released}/ship", data=pack_form(bags, sites["NUH-HEM"]))
    assert response.status_code == 302, page_text(response)[:2000]
    number = response.headers["Location"].rsplit("/", 1)[-1]
    assert number.startswith(f"SHP-{datetime.now(UTC).year}-")
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
        assert shipment.status == "packed" and (shipment.temp_min_c, shipment.temp_max_c) == (-196, -150)
        assert [b.container.code for b in shipment.bags] == bags
        assert shipment.batch.patient.treating_site_id == sites["NUH-HEM"]  # the first shipment sets it
        events = db.session.scalars(select(CustodyEvent).where(CustodyEvent.event == "packed into shipper")).all()
        assert [(e.scanned_code, e.matched) for e in events] == [(code, True) for code in bags]
        assert db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "shipment.pack")) > 0
    page = page_text(client.get(f"/shipments/{number}"))
    assert "not yet" in page and "Verify the packing" not in page  # the packer does not verify

    refused = client.post(f"/shipments/{number}/verify", data=signature("tech1"))
    assert refused.status_code == 403 and "second person" in page_text(refused)
    with app.app_context():
        assert db.session.scalar(select(Shipment.status).where(Shipment.number == number)) == "packed"

    client = login("tech2")
    assert "Verify the packing" in page_text(client.get(f"/shipments/{number}"))
    response = client.post(f"/shipments/{number}/verify", data=signature("tech2"))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
        assert shipment.status == "in_transit" and shipment.verified_by.username == "tech2"
        assert shipment.batch.state == "shipped"
        assert {b.container.status for b in shipment.bags} == {"shipped"}
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "shipment")).all()
        assert [(s.meaning, s.signer.username) for s in signed] == [("verified", "tech2")]
    page = page_text(client.get(f"/batches/{released}"))
    assert number in page and "Pack for shipment" not in page
    assert number in page_text(client.get("/shipments"))


def test_another_patients_bag_is_refused_and_its_scan_kept(app, released, make_batch, sites, login):
    other = make_batch(ref="SLE-02")  # another patient's batch, not released
    bags, foreign = product_bags(app, released), product_bags(app, other)
    before = counts(app)
    client = login("tech1")
    response = client.post(f"/batches/{released}/ship", data=pack_form(bags + foreign, sites["NUH-HEM"]))
    assert response.status_code == 409
    text = page_text(response)
    assert "MISMATCH" in text and foreign[0] in text and other in text
    assert counts(app) == before
    with app.app_context():
        kept = db.session.scalars(select(CustodyEvent).where(CustodyEvent.matched.is_(False))).all()
        assert [(e.scanned_code, e.event, e.batch_id) for e in kept] == [
            (foreign[0], "packed into shipper", get_batch(released).id)]
        assert db.session.scalar(select(Deviation.source).where(Deviation.batch_id == get_batch(released).id)
                                 .order_by(Deviation.id.desc()).limit(1)) == "custody"
        assert get_batch(released).patient.treating_site_id is None


def test_an_unreleased_batch_is_not_packed(app, in_review, sites, login):
    bags = product_bags(app, in_review)
    client = login("tech1")
    page = client.get(f"/batches/{in_review}/ship")
    assert page.status_code == 409 and "not released" in page_text(page)
    response = client.post(f"/batches/{in_review}/ship", data=pack_form(bags, sites["NUH-HEM"]))
    assert response.status_code == 422 and "not released" in page_text(response)
    assert counts(app)["shipments"] == 0


def test_every_bag_must_be_scanned_and_each_field_is_checked(app, released, sites, login):
    bags = product_bags(app, released)
    before = counts(app)
    client = login("tech1")
    response = client.post(f"/batches/{released}/ship", data=pack_form(
        [], sites["NUH-HEM"], shipper_code="", departed_at=local(datetime.now(UTC) + timedelta(days=30))))
    assert response.status_code == 422
    text = page_text(response)
    assert f"scan {bags[0]} too" in text and "Enter the dry shipper's code" in text and "7 days ahead" in text
    response = client.post(f"/batches/{released}/ship", data=pack_form(bags + bags, sites["NUH-HEM"]))
    assert response.status_code == 422 and "scanned twice" in page_text(response)
    response = client.post(f"/batches/{released}/ship", data=pack_form(bags, sites["NUH-HEM"], departed_at="tomorrow"))
    assert response.status_code == 422 and "date and time" in page_text(response)
    assert counts(app) == before


def test_the_patients_treating_site_is_the_only_consignee(app, released, sites, login):
    with app.app_context():
        with audit.action("test.setup", actor=None):
            get_batch(released).patient.treating_site_id = sites["SGH-ONC"]
        db.session.commit()
    client = login("tech1")
    form = page_text(client.get(f"/batches/{released}/ship"))
    assert "St George's" in form and "Northern University" not in form
    response = client.post(f"/batches/{released}/ship", data=pack_form(product_bags(app, released), sites["NUH-HEM"]))
    assert response.status_code == 422 and "may go only there" in page_text(response)
    assert counts(app)["shipments"] == 0


def test_a_bag_is_packed_once(app, released, sites, login):
    pack(app, released, sites["NUH-HEM"])
    response = login("tech2").post(f"/batches/{released}/ship",
                                   data=pack_form(product_bags(app, released), sites["NUH-HEM"]))
    assert response.status_code == 422 and "already packed into SHP-" in page_text(response)
    assert counts(app)["shipments"] == 1


def test_clinicians_and_qc_do_not_pack_or_verify(app, released, sites, login):
    bags = product_bags(app, released)
    assert login("nurse1").post(f"/batches/{released}/ship", data=pack_form(bags, sites["NUH-HEM"])).status_code == 403
    assert login("qc1").post(f"/batches/{released}/ship", data=pack_form(bags, sites["NUH-HEM"])).status_code == 403
    number = pack(app, released, sites["NUH-HEM"])
    response = login("nurse1").post(f"/shipments/{number}/verify", data=signature("nurse1"))
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(Shipment.status)) == "packed"
        assert db.session.scalar(select(func.count(Signature.id)).where(Signature.record_type == "shipment")) == 0


def test_a_wrong_password_verifies_nothing(app, released, sites, login):
    number = pack(app, released, sites["NUH-HEM"])
    response = login("tech2").post(f"/shipments/{number}/verify", data=signature("tech2", "wrong-password"))
    assert response.status_code == 403 and "password is wrong" in page_text(response)
    with app.app_context():
        assert db.session.scalar(select(Shipment.status)) == "packed"
        assert get_batch(released).state == "released"


def test_clinicians_see_only_their_sites_shipments(app, released, sites, login):
    number = pack(app, released, sites["NUH-HEM"])
    assert number in page_text(login("nurse1").get("/shipments"))
    assert login("nurse1").get(f"/shipments/{number}").status_code == 200
    client = login("nurse3")
    assert number not in page_text(client.get("/shipments"))
    assert client.get(f"/shipments/{number}").status_code == 403
    assert client.get(f"/shipments/{number}/label.pdf").status_code == 403
    assert number in page_text(login("qa1").get("/shipments"))


def test_a_batch_put_on_hold_after_release_is_neither_packed_nor_verified(app, released, sites, login):
    number = pack(app, released, sites["NUH-HEM"])
    release(app, released, "hold", reason="A late result is under investigation.")
    assert state(app, released) == "on_hold"
    response = login("tech2").post(f"/shipments/{number}/verify", data=signature("tech2"))
    assert response.status_code == 422 and "ON HOLD" in page_text(response)
    with app.app_context():
        assert db.session.scalar(select(Shipment.status)) == "packed"
        assert db.session.scalar(select(func.count(Signature.id)).where(Signature.record_type == "shipment")) == 0
    page = login("tech1").get(f"/batches/{released}/ship")
    assert page.status_code == 409 and "quarantined" in page_text(page)

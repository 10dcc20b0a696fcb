"""The shipper label: read back its text and its QR, from the pure renderer and through HTTP."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from lab.extensions import db
from lab.models import Download
from labels.shipper_label import AUTOLOGOUS, ShipperLabel, render_shipper_label
from labels.text import UnprintableText
from tests.clinic import pack, ship
from tests.factories import get_batch, page_text
from tests.readback import page_texts, qr_texts, text_of

pytestmark = pytest.mark.requirements("CLIN-2")

MOMENT = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
LABEL = ShipperLabel(
    number="SHP-2026-0007", coi="COI-B1234-26-000017-K", batch_number="B-B1234-26-0042-X", patient_ref="SLE-01",
    product="Autologous anti-CD19 CAR T cells, cryopreserved", consignee_name="Northern University Hospital",
    consignee_code="NUH-HEM", consignee_address="Haematology day unit\n1 Hospital Road", consignee_contact="Ward +44 20 0000",
    bag_codes=["CTR-B1234-26-000101-7"], shipping_range="Ship at -196 to -150 °C", shipper_code="DS-0042",
    logger_code="LOG-7781", courier="World Courier", departed_at=MOMENT, printed_at=MOMENT, sender="CellTrail lab")


def test_the_label_prints_what_travels_and_its_qr_names_the_shipment():
    pdf = render_shipper_label(LABEL)
    text = text_of(pdf)
    for expected in ("SHP-2026-0007", "COI-B1234-26-000017-K", "B-B1234-26-0042-X", "SLE-01", AUTOLOGOUS,
                     "Northern University Hospital (NUH-HEM)", "1 Hospital Road", "Ward +44 20 0000",
                     "CTR-B1234-26-000101-7", "Ship at -196 to -150 °C", "DS-0042 / LOG-7781", "World Courier",
                     "2026-11-30 09:15 UTC"):
        assert expected in text, expected
    assert qr_texts(pdf, 300) == ["SHP-2026-0007"]
    assert render_shipper_label(LABEL) == pdf  # byte-reproducible


def test_many_bags_run_on_without_losing_a_code():
    codes = [f"CTR-B1234-26-{n:06d}-7" for n in range(40)]
    pdf = render_shipper_label(replace(LABEL, bag_codes=codes))
    texts = page_texts(pdf)
    assert len(texts) > 1
    assert all(code in " ".join(texts) for code in codes)


@pytest.mark.parametrize(("change", "error"), [
    ({"departed_at": datetime(2026, 11, 30, 9, 15)}, ValueError),
    ({"number": "shp-lower"}, ValueError),
    ({"bag_codes": []}, ValueError),
    ({"courier": "Courier \U0001f69a"}, UnprintableText),
])
def test_what_cannot_be_printed_is_refused(change, error):
    with pytest.raises(error):
        render_shipper_label(replace(LABEL, **change))


def test_the_label_through_http_reads_back(app, released, sites, login):
    number = ship(app, released, sites["NUH-HEM"])
    response = login("tech1").get(f"/shipments/{number}/label.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    pdf = response.get_data()
    text = text_of(pdf)
    with app.app_context():
        batch = get_batch(released)
        bags = [c.code for c in batch.containers if c.kind == "product_bag"]
        for expected in (number, batch.patient.coi, released, batch.patient.patient_ref, AUTOLOGOUS,
                         "Northern University Hospital, Haematology", "1 Hospital Road", "Ward desk",
                         "Ship at -196 to -150 °C", *bags):
            assert expected in text, expected
    assert qr_texts(pdf, 300) == [number]
    with app.app_context():  # each print is logged, with the PDF's SHA-256
        logged = db.session.scalars(select(Download).where(Download.kind == "shipper_label")).one()
        assert (logged.detail, logged.batch_id, logged.digest) == (number, batch.id, hashlib.sha256(pdf).hexdigest())
    # The QR scanned into the header's scan box opens the shipment.
    scanned = login("nurse1").get("/scan", query_string={"code": number})
    assert scanned.status_code == 302 and scanned.headers["Location"].endswith(f"/shipments/{number}")
    assert login("tech1").get("/scan", query_string={"code": "SHP-1999-0001"}).status_code == 404


def test_the_shipment_page_offers_the_label_before_verification(app, released, sites, login):
    number = pack(app, released, sites["NUH-HEM"])
    page = page_text(login("tech2").get(f"/shipments/{number}"))
    assert "Print the shipper label" in page and "Verify the packing" in page

"""Where a patient's product is (lab/services/chain.py): each stage from collection to a
closed chain, the vein-to-vein clock ending at the last infusion, and a bounded number of
queries whatever the number of patients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab.extensions import db
from lab.models import Patient
from lab.models.clinic import Administration, Shipment
from lab.services.chain import collection_end_of, position, positions
from lab.services.patients import PatientInput, register_patient
from lab.services.shipments import PackInput, pack_shipment, product_bags, verify_packing
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment
from tests.factories import PASSWORD, get_batch, user
from tests.quality import words
from tests.queries import statements
from tests.test_bedside import check_in_past, infusion_form
from workflows.timing import duration_words

pytestmark = pytest.mark.usefixtures("never_500")


def stage(app: Flask, number: str) -> str:
    with app.app_context():
        return position(get_batch(number).patient).stage


def test_stages_to_a_closed_chain(app: Flask, released: str, sites: dict[str, int],
                                  login: Callable[[str], FlaskClient]) -> None:
    assert stage(app, released) == "released"
    now = datetime.now(UTC)
    with app.app_context():
        batch = get_batch(released)
        codes = [c.code for c in product_bags(batch)]
        shipment = pack_shipment(batch, PackInput(codes, "DS-1", "LOG-1", sites["NUH-HEM"], now - timedelta(hours=5),
                                                  "World Courier"), actor=user("tech1"), now=now - timedelta(hours=5))
        db.session.commit()
    assert stage(app, released) == "released"  # packed, still at the lab until verified
    with app.app_context():
        shipment = db.session.scalar(select(Shipment))
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"),
                       now=now - timedelta(hours=5))
        db.session.commit()
    assert stage(app, released) == "in transit"
    with app.app_context():
        shipment = db.session.scalar(select(Shipment))
        receive_shipment(shipment, ReceiptInput("DS-1", codes, "-180", "-170", True, now - timedelta(hours=3), "LN2"),
                         logger_file=None, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"),
                         now=now - timedelta(hours=3))
        db.session.commit()
        where = position(get_batch(released).patient)
        assert (where.stage, where.closed, where.infused_at, where.vein_to_vein) == ("at site", False, None, None)
        collection_end = where.collection_end
        assert collection_end is not None and collection_end == collection_end_of(get_batch(released))
    check_in_past(app, codes[0], timedelta(hours=1))
    start = now - timedelta(minutes=50)
    response = login("nurse1").post(f"/bedside/bags/{codes[0]}/administration", data=infusion_form(app, start))
    assert response.status_code == 302
    with app.app_context():
        infused = db.session.scalar(select(Administration)).infusion_end
        where = position(get_batch(released).patient)
        assert where.closed and where.stage == "closed"
        assert where.infused_at == infused
        assert where.vein_to_vein == infused - collection_end > timedelta(days=1)
    # The lab's dashboard stops the batch's vein-to-vein clock at the infusion, not at QA's decision.
    closed = words(login("qa1").get("/")).split("Recently closed", 1)[1]
    assert f"{released} " in closed and f"{duration_words(where.vein_to_vein)} to infusion" in closed


def test_quarantined_at_site(app: Flask, released: str, sites: dict[str, int]) -> None:
    now = datetime.now(UTC)
    with app.app_context():
        batch = get_batch(released)
        codes = [c.code for c in product_bags(batch)]
        shipment = pack_shipment(batch, PackInput(codes, "DS-1", "LOG-1", sites["NUH-HEM"], now - timedelta(hours=5),
                                                  "Courier"), actor=user("tech1"), now=now - timedelta(hours=5))
        db.session.commit()
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"),
                       now=now - timedelta(hours=5))
        receive_shipment(shipment, ReceiptInput("DS-1", codes, "-180", "-100", True, now - timedelta(hours=3), "LN2"),
                         logger_file=None, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"),
                         now=now - timedelta(hours=3))
        db.session.commit()
    assert stage(app, released) == "quarantined at site"


def test_early_stages_and_bounded_queries(app: Flask, make_batch: Callable[..., str], released: str) -> None:
    in_manufacture = make_batch(until="expansion", ref="SLE-02")
    scheduled = make_batch(until="receipt", ref="SLE-03")
    with app.app_context():
        register_patient(PatientInput("SLE-04", "EF", date(1990, 3, 4), 60.0, "SLE"), actor=user("super1"))
        db.session.commit()
        patients = list(db.session.scalars(select(Patient).order_by(Patient.id)))
        found = {where.patient.patient_ref: where for where in positions(patients)}
        assert found["SLE-01"].stage == "released"
        assert found["SLE-02"].stage == "manufacture"
        assert found["SLE-03"].stage == "collection"
        assert found["SLE-04"].stage == "collection" and found["SLE-04"].batch is None
        assert found["SLE-02"].collection_end is not None
        assert found["SLE-03"].collection_end is None
        assert [p.patient.id for p in positions(patients)] == [p.id for p in patients]
        db.session.expire_all()
        one = db.session.scalars(select(Patient).order_by(Patient.id).limit(1)).all()
        with statements(app) as few:
            positions(one)
        db.session.expire_all()
        patients = list(db.session.scalars(select(Patient).order_by(Patient.id)))
        with statements(app) as many:
            positions(patients)
    assert len(many) == len(few) <= 10, [s for s, _ in many]
    assert in_manufacture and scheduled

"""A bag that is not infused, through HTTP: returned, destroyed or kept unused, with a reason, a
time and a witness who signs; its custody trail ends there. Refusals write nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab.extensions import db
from lab.models import Container, CustodyEvent, Signature, SigningFailure
from lab.models.clinic import BagDisposal
from lab.services.chain import position
from lab.services.shipments import product_bags
from tests.factories import PASSWORD, get_batch, page_text, user
from tests.test_bedside import at_site, check_form, check_in_past, coi_of, counts, infusion_form, local

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-6")]
__all__ = ["at_site"]  # the fixture, used by name


def disposal_form(app: Flask, **extra: str) -> dict[str, str]:
    return {"outcome": "destroyed", "reason": "Bag cracked on thawing: not infusable.",
            "happened_at": local(app, datetime.now(UTC) - timedelta(minutes=20)), "username": "nurse1",
            "password": PASSWORD, "witness_username": "doc1", "witness_password": PASSWORD, **extra}


def test_bag_at_site_destroyed_with_witness(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    client = login("nurse1")
    bag_page = client.get(f"/bedside/bags/{at_site}").get_data(as_text=True)
    assert f"/bedside/bags/{at_site}/disposal" in bag_page
    assert client.get(f"/bedside/bags/{at_site}/disposal").status_code == 200
    response = client.post(f"/bedside/bags/{at_site}/disposal", data=disposal_form(app))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        disposal = db.session.scalar(select(BagDisposal))
        assert (disposal.outcome, disposal.recorded_by.username, disposal.witness.username) == \
            ("destroyed", "nurse1", "doc1")
        assert disposal.container.status == "destroyed"
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "bag_disposal")).all()
        assert sorted((s.signer.username, s.meaning) for s in signed) == [("doc1", "witnessed"), ("nurse1", "performed")]
        event = db.session.scalar(select(CustodyEvent).where(CustodyEvent.event == "bag destroyed"))
        assert event.matched and event.container_id == disposal.container_id
        # the only shipped bag is destroyed: the chain is closed, without an infusion
        where = position(disposal.container.batch.patient)
        assert where.closed and where.stage == "closed" and where.infused_at is None and where.vein_to_vein is None
    assert "Bag cracked on thawing" in page_text(client.get(f"/bedside/bags/{at_site}"))
    # its trail has ended: no check, no infusion, no second disposal
    before = counts(app)
    response = client.post("/bedside", data=check_form(at_site, coi_of(app, at_site), username=""))
    assert response.status_code == 422 and "custody trail has ended" in page_text(response)
    response = client.post(f"/bedside/bags/{at_site}/disposal", data=disposal_form(app, username=""))
    assert response.status_code == 409 and "custody trail has ended" in page_text(response)
    assert counts(app) == before


def test_bag_at_the_lab_disposed_by_technicians(app: Flask, released: str, sites: dict[str, int],
                                                login: Callable[[str], FlaskClient]) -> None:
    with app.app_context():
        code = product_bags(get_batch(released))[0].code
    client = login("tech1")
    response = client.post(f"/bedside/bags/{code}/disposal",
                           data=disposal_form(app, outcome="unused", username="tech1", witness_username="tech2"))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        assert db.session.scalar(select(Container).where(Container.code == code)).status == "unused"
    before = counts(app)
    response = client.post(f"/containers/{code}/scan", data={"event": "moved", "scanned": code, "to_location": "LN2-02"})
    assert response.status_code == 422 and "no longer be handed over" in page_text(response)
    assert counts(app) == before


@pytest.mark.parametrize(("who", "extra", "status", "text"), [
    ("nurse1", {"reason": ""}, 422, "Say why the bag is not infused"),
    ("nurse1", {"outcome": "lost"}, 422, "Choose one of"),
    ("nurse1", {"witness_username": "nurse1"}, 422, "a second person signs"),
    ("nurse1", {"witness_username": "tech1"}, 422, "not a clinician of this site"),
    ("nurse1", {"happened_at": "tomorrow"}, 422, "as a date and time"),
    ("nurse1", {"witness_password": "wrong"}, 403, "password is wrong"),
    ("nurse3", {"username": "nurse3"}, 403, "another treatment site"),
    ("tech1", {"username": "tech1", "witness_username": "tech2"}, 403, "the site's clinicians"),
])
def test_disposal_refusals_write_nothing_but_a_failed_attempt(
        app: Flask, at_site: str, login: Callable[[str], FlaskClient], who: str, extra: dict[str, str],
        status: int, text: str) -> None:
    before = counts(app)
    response = login(who).post(f"/bedside/bags/{at_site}/disposal", data=disposal_form(app, **extra))
    assert response.status_code == status and text in page_text(response)
    after = counts(app)
    failed = 1 if extra.get("witness_password") == "wrong" else 0
    assert after == {**before, "SigningFailure": before["SigningFailure"] + failed}
    if failed:
        with app.app_context():
            failure = db.session.scalars(select(SigningFailure).order_by(SigningFailure.id.desc())).first()
            assert failure.user_id == user("doc1").id


def test_infused_bag_cannot_be_disposed(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    check_in_past(app, at_site, timedelta(hours=1))
    client = login("nurse1")
    start = datetime.now(UTC) - timedelta(minutes=50)
    assert client.post(f"/bedside/bags/{at_site}/administration", data=infusion_form(app, start)).status_code == 302
    before = counts(app)
    response = client.post(f"/bedside/bags/{at_site}/disposal", data=disposal_form(app, username=""))
    assert response.status_code == 409 and "infused" in page_text(response)
    assert counts(app) == before


def test_disposal_before_arrival_is_refused(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    before = counts(app)
    response = login("nurse1").post(f"/bedside/bags/{at_site}/disposal", data=disposal_form(
        app, happened_at=local(app, datetime.now(UTC) - timedelta(hours=4))))  # received 3 hours ago
    assert response.status_code == 422 and "arrived at the site" in page_text(response)
    assert counts(app) == before

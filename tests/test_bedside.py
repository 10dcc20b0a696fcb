"""At the bedside, through HTTP: the two-clinician identity check, its refusals (a mismatch is
kept as a custody event and nothing else of the check), the thaw and infusion with its order
and limit, and a second infusion or an infusion before receipt refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Container, CustodyEvent, Deviation, Signature, SigningFailure
from lab.models.clinic import Administration, BagDisposal, BedsideCheck, Shipment
from lab.services.bedside import BedsideInput, check_at_bedside
from lab.services.patients import PatientInput, register_patient
from lab.services.shipments import PackInput, pack_shipment, product_bags, verify_packing
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment
from tests.factories import PASSWORD, get_batch, page_text, user
from tests.htmlcheck import problems

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-4")]

#: When the product left the lab, arrived and was checked, before "now" (the tests' past).
PACKED_AGO = timedelta(hours=5)
RECEIVED_AGO = timedelta(hours=3)


def ship(app: Flask, number: str, *, receive: bool = True, site_id: int, high: str = "-170") -> str:
    """Pack the batch's product bag, verify the packing, and (``receive``) receive it at the site
    (nurse1, NUH-HEM) with the logger's highest reading ``high``: the bag's code."""
    with app.app_context():
        now = datetime.now(UTC)
        batch = get_batch(number)
        codes = [c.code for c in product_bags(batch)]
        shipment = pack_shipment(batch, PackInput(codes, "DS-0042", "LOG-77", site_id, now - PACKED_AGO,
                                                  "World Courier"), actor=user("tech1"), now=now - PACKED_AGO)
        db.session.commit()
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"), now=now - PACKED_AGO)
        db.session.commit()
        if receive:
            receive_shipment(shipment, ReceiptInput("DS-0042", codes, "-180", high, True, now - RECEIVED_AGO,
                                                    "Haematology LN2 tank 2"),
                             logger_file=None, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"),
                             now=now - RECEIVED_AGO)
            db.session.commit()
        return codes[0]


@pytest.fixture
def at_site(app: Flask, released: str, sites: dict[str, int]) -> str:
    """The released batch's bag received at NUH-HEM by nurse1: its code."""
    return ship(app, released, site_id=sites["NUH-HEM"])


def coi_of(app: Flask, code: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Container).where(Container.code == code)).batch.patient.coi


def local(app: Flask, moment: datetime) -> str:
    """``moment`` as a datetime-local field sends it (lab time zone, to the minute)."""
    return moment.astimezone(ZoneInfo(app.config["TIMEZONE"])).strftime("%Y-%m-%dT%H:%M")


def check_form(code: str, coi: str, **extra: str) -> dict[str, str]:
    return {"bag_scanned": code, "method": "wristband", "wristband": coi, "username": "nurse1",
            "password": PASSWORD, "second_username": "doc1", "second_password": PASSWORD, **extra}


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) for model in (
            BedsideCheck, Administration, BagDisposal, Signature, CustodyEvent, Deviation, SigningFailure)}


def check_in_past(app: Flask, code: str, ago: timedelta) -> None:
    """A bedside check by nurse1 and doc1, ``ago`` before now (through the service)."""
    with app.app_context():
        check_at_bedside(BedsideInput(code, "wristband", wristband=coi_of(app, code), second_username="doc1",
                                      second_password=PASSWORD),
                         actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"),
                         now=datetime.now(UTC) - ago)
        db.session.commit()


def infusion_form(app: Flask, thaw_start: datetime, minutes: tuple[int, int, int] = (10, 12, 25),
                  **extra: str) -> dict[str, str]:
    """Thaw from ``thaw_start``; thaw end, infusion start and end ``minutes`` after it."""
    thaw_end, infusion_start, infusion_end = (thaw_start + timedelta(minutes=m) for m in minutes)
    return {"thaw_start": local(app, thaw_start), "thaw_end": local(app, thaw_end),
            "infusion_start": local(app, infusion_start), "infusion_end": local(app, infusion_end),
            "reactions": "Mild fever 38.1 °C at 40 min, paracetamol given.", "username": "nurse1",
            "password": PASSWORD, **extra}


def test_check_then_infuse(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    client = login("nurse1")
    page = client.get("/bedside")
    assert page.status_code == 200 and at_site in page_text(page)  # the site's bags, each with its check link
    assert f"/bedside/bags/{at_site}" in page.get_data(as_text=True)
    response = client.post("/bedside", data=check_form(at_site, coi_of(app, at_site)))
    assert response.status_code == 302, page_text(response)[:2000]
    assert f"/bedside/bags/{at_site}" in response.headers["Location"]
    with app.app_context():
        check = db.session.scalar(select(BedsideCheck))
        assert (check.first.username, check.second.username, check.method) == ("nurse1", "doc1", "wristband")
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "bedside_check")).all()
        assert sorted((s.signer.username, s.meaning) for s in signed) == [("doc1", "verified"), ("nurse1", "performed")]
        event = db.session.scalars(select(CustodyEvent).where(CustodyEvent.event == "bedside check")).one()
        assert event.matched and event.container.code == at_site
        checked = check.checked_at
    start = checked.replace(second=0, microsecond=0)
    response = client.post(f"/bedside/bags/{at_site}/administration",
                           data=infusion_form(app, start, (1, 2, 4), username=""))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        done = db.session.scalar(select(Administration))
        assert not done.limit_exceeded and done.limit_minutes == 30 and done.deviation_id is None
        assert done.thaw_start == start and done.infusion_end == start + timedelta(minutes=4)
        assert done.container.status == "infused"
        assert db.session.scalar(select(Signature).where(Signature.record_type == "administration")).meaning \
            == "administered"
        assert db.session.scalar(select(CustodyEvent).where(CustodyEvent.event == "infused")).to_location \
            == f"patient {done.patient.coi}"
    page = page_text(client.get(f"/bedside/bags/{at_site}"))
    assert "administered" in page and "Dana Doctor" in page and "Mild fever" in page


def test_check_by_identifiers(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    client = login("doc1")
    response = client.post("/bedside", data=check_form(at_site, "", method="identifiers", patient_ref="sle-01",
                                                       date_of_birth="1980-05-01", username="doc1",
                                                       second_username="nurse1"))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        assert db.session.scalar(select(BedsideCheck)).patient_evidence == "sle-01 / 1980-05-01"


def test_wristband_of_another_patient_is_a_recorded_mismatch(app: Flask, at_site: str,
                                                             login: Callable[[str], FlaskClient]) -> None:
    with app.app_context():
        other = register_patient(PatientInput("SLE-02", "CD", date(1975, 1, 2), 70.0, "SLE"), actor=user("super1"))
        db.session.commit()
        other_coi = other.coi
    before = counts(app)
    response = login("nurse1").post("/bedside", data=check_form(at_site, other_coi))
    assert response.status_code == 422
    text = page_text(response)
    assert "DO NOT INFUSE" in text and "COI MISMATCH" in text and other_coi in text
    after = counts(app)
    assert after["CustodyEvent"] == before["CustodyEvent"] + 1
    assert after["Deviation"] == before["Deviation"] + 1  # record_mismatches: a custody deviation, as at every hand-off
    assert {k: after[k] - before[k] for k in ("BedsideCheck", "Administration", "Signature", "SigningFailure")} \
        == {"BedsideCheck": 0, "Administration": 0, "Signature": 0, "SigningFailure": 0}
    with app.app_context():
        event = db.session.scalars(select(CustodyEvent).order_by(CustodyEvent.id.desc())).first()
        assert not event.matched and event.event == "bedside check" and event.container.code == at_site
        assert "DO NOT INFUSE" in event.message and other_coi in event.message


def test_wrong_date_of_birth_is_a_mismatch(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    before = counts(app)
    response = login("nurse1").post("/bedside", data=check_form(
        at_site, "", method="identifiers", patient_ref="SLE-01", date_of_birth="1980-05-02"))
    assert response.status_code == 422 and "DO NOT INFUSE: PATIENT MISMATCH" in page_text(response)
    after = counts(app)
    assert after["CustodyEvent"] == before["CustodyEvent"] + 1 and after["BedsideCheck"] == 0


@pytest.mark.parametrize(("extra", "field_text"), [
    ({"second_username": "nurse1"}, "a second person signs"),
    ({"second_username": "nurse3"}, "not a clinician of this site"),
    ({"second_username": ""}, "types their username and password"),
    ({"wristband": "not a code"}, "is not a COI"),
    ({"bag_scanned": ""}, "Scan the label on the bag"),
    ({"method": "identifiers", "date_of_birth": "01/05/1980", "patient_ref": "SLE-01"}, "YYYY-MM-DD"),
])
def test_check_refusals_write_nothing(app: Flask, at_site: str, login: Callable[[str], FlaskClient],
                                      extra: dict[str, str], field_text: str) -> None:
    before = counts(app)
    response = login("nurse1").post("/bedside", data=check_form(at_site, coi_of(app, at_site), **extra))
    assert response.status_code == 422 and field_text in page_text(response)
    assert counts(app) == before


def test_second_clinicians_wrong_password_is_their_failed_attempt(app: Flask, at_site: str,
                                                                  login: Callable[[str], FlaskClient]) -> None:
    before = counts(app)
    response = login("nurse1").post("/bedside", data=check_form(at_site, coi_of(app, at_site),
                                                                second_password="wrong"))
    assert response.status_code == 403 and "password is wrong" in page_text(response)
    after = counts(app)
    assert after["SigningFailure"] == before["SigningFailure"] + 1 and after["BedsideCheck"] == 0
    with app.app_context():
        failure = db.session.scalars(select(SigningFailure).order_by(SigningFailure.id.desc())).first()
        assert failure.user_id == user("doc1").id and user("doc1").failed_signatures == 1
        assert user("nurse1").failed_signatures == 0


def test_clinician_of_another_site_is_refused(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    before = counts(app)
    client = login("nurse3")
    response = client.post("/bedside", data=check_form(at_site, coi_of(app, at_site), username="nurse3",
                                                       second_username="doc1"))
    assert response.status_code == 403 and "another treatment site" in page_text(response)
    assert client.get(f"/bedside/bags/{at_site}").status_code == 403
    assert client.get(f"/bedside/bags/{at_site}/administration").status_code == 403
    check_in_past(app, at_site, timedelta(hours=1))
    before = counts(app)
    start = datetime.now(UTC) - timedelta(minutes=50)
    assert client.post(f"/bedside/bags/{at_site}/administration",
                       data=infusion_form(app, start, username="nurse3")).status_code == 403
    assert counts(app) == before


def test_lab_staff_may_not_check(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    assert login("tech1").get("/bedside").status_code == 403


def test_bag_not_received_is_refused(app: Flask, released: str, sites: dict[str, int],
                                     login: Callable[[str], FlaskClient]) -> None:
    code = ship(app, released, site_id=sites["NUH-HEM"], receive=False)
    before = counts(app)
    client = login("nurse1")
    response = client.post("/bedside", data=check_form(code, coi_of(app, code)))
    assert response.status_code == 422 and "in transit" in page_text(response)
    # an infusion before receipt: refused whatever was typed
    start = datetime.now(UTC) - timedelta(minutes=50)
    response = client.post(f"/bedside/bags/{code}/administration", data=infusion_form(app, start))
    assert response.status_code == 409 and "receive the shipment first" in page_text(response)
    assert counts(app) == before


def test_quarantined_bag_is_refused(app: Flask, released: str, sites: dict[str, int],
                                    login: Callable[[str], FlaskClient]) -> None:
    code = ship(app, released, site_id=sites["NUH-HEM"], high="-120")  # an excursion: quarantined at the site
    before = counts(app)
    response = login("nurse1").post("/bedside", data=check_form(code, coi_of(app, code)))
    assert response.status_code == 422 and "QUARANTINED" in page_text(response)
    assert counts(app) == before


def test_infusion_without_check_is_refused(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    before = counts(app)
    start = datetime.now(UTC) - timedelta(minutes=50)
    response = login("nurse1").post(f"/bedside/bags/{at_site}/administration", data=infusion_form(app, start))
    assert response.status_code == 409 and "no bedside check" in page_text(response)
    assert counts(app) == before


@pytest.mark.parametrize(("minutes", "shift", "field_text"), [
    ((-5, 2, 20), timedelta(0), "The thaw cannot end before it started"),
    ((10, 8, 20), timedelta(0), "The infusion cannot start before the thaw ended"),
    ((10, 12, 11), timedelta(0), "The infusion cannot end before it started"),
    ((10, 12, 25), timedelta(hours=2), "cannot be in the future"),
    ((10, 12, 25), -timedelta(hours=1), "cannot start before the bedside check"),
])
def test_infusion_order_enforced(app: Flask, at_site: str, login: Callable[[str], FlaskClient],
                                 minutes: tuple[int, int, int], shift: timedelta, field_text: str) -> None:
    check_in_past(app, at_site, timedelta(hours=1))
    before = counts(app)
    start = datetime.now(UTC) - timedelta(minutes=50) + shift
    response = login("nurse1").post(f"/bedside/bags/{at_site}/administration",
                                    data=infusion_form(app, start, minutes))
    assert response.status_code == 422 and field_text in page_text(response)
    assert counts(app) == before
    with app.app_context():
        assert db.session.scalar(select(Container).where(Container.code == at_site)).status == "at site"


def test_second_infusion_is_refused(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    check_in_past(app, at_site, timedelta(hours=1))
    client = login("nurse1")
    start = datetime.now(UTC) - timedelta(minutes=50)
    assert client.post(f"/bedside/bags/{at_site}/administration", data=infusion_form(app, start)).status_code == 302
    before = counts(app)
    response = client.post(f"/bedside/bags/{at_site}/administration",
                           data=infusion_form(app, start, username="", password=PASSWORD))
    assert response.status_code == 409 and "already infused" in page_text(response)
    assert counts(app) == before
    # nor can it be checked again
    response = client.post("/bedside", data=check_form(at_site, coi_of(app, at_site), username=""))
    assert response.status_code == 422 and "already been infused" in page_text(response)
    assert counts(app) == before


def test_limit_exceeded_opens_a_deviation(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    check_in_past(app, at_site, timedelta(hours=2))
    client = login("nurse1")
    start = datetime.now(UTC) - timedelta(minutes=90)
    response = client.post(f"/bedside/bags/{at_site}/administration", data=infusion_form(app, start, (10, 12, 45)),
                           follow_redirects=True)
    assert response.status_code == 200
    with app.app_context():
        done = db.session.scalar(select(Administration))
        assert done.limit_exceeded and done.deviation is not None
        number = done.deviation.number
        assert "Thaw-to-infusion limit exceeded" in done.deviation.title and done.deviation.status == "open"
    text = page_text(response)
    assert number in text and "LIMIT EXCEEDED" in text


def test_wrong_password_of_the_administrator(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    check_in_past(app, at_site, timedelta(hours=1))
    before = counts(app)
    start = datetime.now(UTC) - timedelta(minutes=50)
    response = login("nurse1").post(f"/bedside/bags/{at_site}/administration",
                                    data=infusion_form(app, start, password="wrong"))
    assert response.status_code == 403 and "password is wrong" in page_text(response)
    after = counts(app)
    assert after["SigningFailure"] == before["SigningFailure"] + 1 and after["Administration"] == 0


def test_bag_page_for_the_lab(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    check_in_past(app, at_site, timedelta(hours=1))
    page = login("qa1").get(f"/bedside/bags/{at_site}")
    assert page.status_code == 200 and "Nora Nurse" in page_text(page)
    with app.app_context():
        assert db.session.scalar(select(Shipment)).status == "received"


def test_clinicians_pages_are_labelled(app: Flask, at_site: str, login: Callable[[str], FlaskClient]) -> None:
    client = login("nurse1")
    mismatch = client.post("/bedside", data=check_form(at_site, "", method="identifiers", patient_ref="SLE-01",
                                                       date_of_birth="1999-01-01"))
    refused = client.post(f"/bedside/bags/{at_site}/disposal", data={"outcome": "destroyed", "reason": ""})
    pages = {"check": client.get(f"/bedside?bag={at_site}"), "mismatch": mismatch, "refused disposal": refused,
             "disposal": client.get(f"/bedside/bags/{at_site}/disposal"), "bag": client.get(f"/bedside/bags/{at_site}")}
    check_in_past(app, at_site, timedelta(hours=1))
    pages["administration"] = client.get(f"/bedside/bags/{at_site}/administration")
    pages["refused administration"] = client.post(f"/bedside/bags/{at_site}/administration",
                                                  data={"thaw_start": "soon", "username": "nurse1"})
    start = datetime.now(UTC) - timedelta(minutes=50)
    client.post(f"/bedside/bags/{at_site}/administration", data=infusion_form(app, start, password=PASSWORD))
    pages["infused bag"] = client.get(f"/bedside/bags/{at_site}")
    assert {name: r.status_code for name, r in pages.items()} == {
        "check": 200, "mismatch": 422, "refused disposal": 422, "disposal": 200, "bag": 200, "administration": 200,
        "refused administration": 422, "infused bag": 200}
    assert {name: problems(r.get_data(as_text=True)) for name, r in pages.items()
            if problems(r.get_data(as_text=True))} == {}


def test_a_clinician_scanning_a_bag_opens_its_page_and_a_batch_code_is_refused(app, at_site, released, login):
    nurse = login("nurse1")
    scanned = nurse.get("/scan", query_string={"code": at_site})
    assert scanned.status_code == 302 and scanned.headers["Location"] == f"/bedside/bags/{at_site}"
    refused = nurse.get("/scan", query_string={"code": released}, headers={"Accept": "application/json"})
    assert refused.status_code == 403
    assert "scan the bag's label, the shipper's label or the patient's wristband" in refused.get_json()["refusal"]
    other = login("nurse3").get(f"/bedside/bags/{at_site}")
    assert other.status_code == 403

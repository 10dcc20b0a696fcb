"""Dashboards of issue 15 (item 9) over HTTP: a clinician's dashboard shows their own site's
shipments on their way, products in site storage (quarantine shown), infusions due and notices
to acknowledge; QA, supervisors and auditors see every patient's position from collection to
infusion on /positions, linked from their dashboard. Both pages run a bounded number of queries."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab import audit
from lab.extensions import db
from lab.models import QcResult, Shipment, SiteNotice, utcnow
from lab.services.shipments import PackInput, pack_shipment, verify_packing
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment
from tests.factories import PASSWORD, get_batch, patient, user
from tests.queries import statements

pytestmark = pytest.mark.usefixtures("never_500")

Login = Callable[..., FlaskClient]


def text_of(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def section(page: str, section_id: str) -> str:
    """The HTML of ``<section id="section_id">`` on ``page``."""
    found = re.search(rf'<section id="{section_id}".*?</section>', page, re.DOTALL)
    assert found, f"no section {section_id}"
    return found[0]


def ship(app: Flask, number: str, site_id: int, *, verify: bool = True) -> str:
    """Pack every product bag of released batch ``number`` for ``site_id`` (tech1), verified by
    tech2 unless ``verify`` is False; returns the shipment number."""
    with app.app_context():
        batch = get_batch(number)
        bags = [c.code for c in batch.containers if c.kind == "product_bag"]
        now = datetime.now(UTC)
        shipment = pack_shipment(batch, PackInput(bags, f"DS-{number[-7:]}", f"LOG-{number[-7:]}", site_id,
                                                  now, "World Courier"), actor=user("tech1"))
        db.session.commit()
        if verify:
            verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"))
            db.session.commit()
        return shipment.number


def receive(app: Flask, shipment_number: str, *, max_c: str = "-160", by: str = "nurse1") -> None:
    """The site receives every bag; a logger maximum above -150 °C quarantines them."""
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == shipment_number))
        assert shipment is not None
        bags = [bag.container.code for bag in shipment.bags]
        now = datetime.now(UTC)
        receive_shipment(shipment, ReceiptInput(shipment.shipper_code, bags, "-185", max_c, True,
                                                now, "Haematology LN2 tank 2"),
                         logger_file=None, actor=user(by), credentials=Credentials(PASSWORD, by), now=now)
        db.session.commit()


def notify(app: Flask, number: str, site_id: int) -> int:
    """A late failure notice for ``number``'s site (as NOTICE's notify_late_failure leaves it)."""
    with app.app_context():
        batch = get_batch(number)
        result = db.session.scalar(select(QcResult).where(QcResult.batch_id == batch.id).limit(1))
        assert result is not None
        with audit.action("test.setup", actor=None):
            notice = SiteNotice(batch_id=batch.id, site_id=site_id, result_id=result.id,
                                what="Sterility (final, day 14): growth detected", created_at=utcnow())
            db.session.add(notice)
        db.session.commit()
        return notice.id


def test_a_clinician_sees_shipments_on_their_way_to_their_site_only(app: Flask, login: Login, released: str,
                                                                   sites: dict[str, int]) -> None:
    packed = ship(app, released, sites["NUH-HEM"], verify=False)
    client = login("nurse1")
    page = text_of(client.get("/"))
    assert "Northern University Hospital, Haematology" in page
    assert packed not in section(page, "in-transit")  # packed, not yet verified: not on its way
    with app.app_context():
        shipment = db.session.scalar(select(Shipment).where(Shipment.number == packed))
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"))  # type: ignore[arg-type]
        db.session.commit()
        coi = patient("SLE-01").coi
    page = text_of(client.get("/"))
    transit = section(page, "in-transit")
    assert "Shipments on their way (1)" in transit
    assert packed in transit and coi in transit and "World Courier" in transit
    assert f'href="/shipments/{packed}"' in transit
    assert 'href="/patients/SLE-01"' in transit
    assert "No product is stored" in section(page, "site-storage")
    # another site's clinician sees nothing of it
    other = text_of(login("nurse3").get("/"))
    assert packed not in other and "Shipments on their way (0)" in other


def test_received_bags_are_in_storage_and_due_for_infusion(app: Flask, login: Login, released: str,
                                                          sites: dict[str, int]) -> None:
    number = ship(app, released, sites["NUH-HEM"])
    receive(app, number)
    with app.app_context():
        bags = [c.code for c in get_batch(released).containers if c.kind == "product_bag"]
    page = text_of(login("doc1").get("/"))
    assert "Shipments on their way (0)" in page
    storage = section(page, "site-storage")
    assert all(code in storage for code in bags)
    assert "Haematology LN2 tank 2" in storage and "QUARANTINED" not in storage
    due = section(page, "infusions-due")
    assert "Infusions due (1)" in due and "SLE-01" in due and released in due
    assert all(f'href="/bedside/bags/{code}"' in due for code in bags)
    assert 'href="/bedside"' in due


def test_a_quarantined_product_is_shown_in_storage_and_not_due(app: Flask, login: Login, released: str,
                                                               sites: dict[str, int]) -> None:
    number = ship(app, released, sites["NUH-HEM"])
    receive(app, number, max_c="-120")  # an excursion: quarantined at the site
    page = text_of(login("nurse1").get("/"))
    storage = section(page, "site-storage")
    assert "quarantined)" in storage and "QUARANTINED at the site until QA decides" in storage
    assert "Infusions due (0)" in section(page, "infusions-due")


def test_notices_to_acknowledge_link_to_their_page(app: Flask, login: Login, released: str,
                                                   sites: dict[str, int]) -> None:
    notice_id = notify(app, released, sites["NUH-HEM"])
    other = notify(app, released, sites["SGH-ONC"])
    page = text_of(login("nurse1").get("/"))
    notices = section(page, "site-notices")
    assert "Notices to acknowledge (1)" in notices
    assert f'href="/notices/{notice_id}"' in notices and f'href="/notices/{other}"' not in notices
    assert "growth detected" in notices and released in notices
    with app.app_context():
        with audit.action("test.setup", actor=None):
            db.session.get(SiteNotice, notice_id).acknowledged_at = utcnow()  # type: ignore[union-attr]
        db.session.commit()
    assert "Notices to acknowledge (0)" in text_of(login("nurse1").get("/"))


def test_the_lab_dashboard_is_unchanged_for_the_labs_staff(app: Flask, login: Login, sites: dict[str, int]) -> None:
    page = text_of(login("tech1").get("/"))
    assert "Batches in progress" in page and "Shipments on their way" not in page
    assert 'href="/positions"' not in page


def test_the_clinic_dashboard_runs_a_bounded_number_of_queries(app: Flask, login: Login,
                                                               make_batch: Callable[..., str],
                                                               sites: dict[str, int]) -> None:
    from tests.quality import record_results, release

    numbers = []
    for ref in ("SLE-01", "SLE-02", "SLE-03"):
        numbers.append(make_batch(ref=ref))
        record_results(app, numbers[-1])
        release(app, numbers[-1])
    client = login("nurse1")

    def queries() -> int:
        with statements(app) as found:
            assert client.get("/").status_code == 200
        return len(found)

    receive(app, ship(app, numbers[0], sites["NUH-HEM"]))
    second = ship(app, numbers[1], sites["NUH-HEM"])
    notify(app, numbers[0], sites["NUH-HEM"])
    one = queries()  # one shipment of each kind: received, on its way; one notice
    receive(app, second, max_c="-120")
    ship(app, numbers[2], sites["NUH-HEM"])
    notify(app, numbers[1], sites["NUH-HEM"])
    notify(app, numbers[2], sites["NUH-HEM"])
    page = text_of(client.get("/"))
    assert "Shipments on their way (1)" in page and "Infusions due (1)" in page
    assert "1 quarantined" in page and "Notices to acknowledge (3)" in page
    assert queries() == one
    assert one <= 12


def test_shipments_on_their_way_are_listed_up_to_the_limit_and_the_rest_counted(
        app: Flask, login: Login, make_batch: Callable[..., str], sites: dict[str, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.quality import record_results, release

    monkeypatch.setattr("lab.services.clinic_dashboard.IN_TRANSIT_LIMIT", 1)
    shipped = []
    for ref in ("SLE-01", "SLE-02"):
        number = make_batch(ref=ref)
        record_results(app, number)
        release(app, number)
        shipped.append(ship(app, number, sites["NUH-HEM"]))
    transit = section(text_of(login("nurse1").get("/")), "in-transit")
    assert "Shipments on their way (2)" in transit
    assert shipped[0] in transit and shipped[1] not in transit  # the soonest departed first
    assert "and 1 more, departed later." in transit


# --- every patient's position ----------------------------------------------------------------------

@pytest.mark.parametrize("username", ["qa1", "super1", "auditor1"])
def test_qa_supervisors_and_auditors_reach_the_positions_page_from_their_dashboard(
        app: Flask, login: Login, make_batch: Callable[..., str], username: str) -> None:
    number = make_batch(until="receipt", ref="SLE-05")
    client = login(username)
    dashboard = text_of(client.get("/"))
    assert 'href="/positions"' in section(dashboard, "positions-link")
    response = client.get("/positions")
    assert response.status_code == 200
    page = text_of(response)
    row = re.search(r'<tr id="position-SLE-05".*?</tr>', page, re.DOTALL)
    assert row, page[-3000:]
    assert 'href="/patients/SLE-05"' in row[0] and f'href="/batches/{number}"' in row[0]
    with app.app_context():
        assert patient("SLE-05").coi in row[0]
    assert "collection" in row[0] and "open" in row[0]


@pytest.mark.parametrize("username", ["tech1", "qc1", "admin", "nurse1"])
def test_others_are_refused_the_positions_page(login: Login, sites: dict[str, int], username: str) -> None:
    response = login(username).get("/positions")
    assert response.status_code == 403


def test_positions_show_the_stage_from_release_to_the_site(app: Flask, login: Login, released: str,
                                                          make_batch: Callable[..., str],
                                                          sites: dict[str, int]) -> None:
    make_batch(until="receipt", ref="SLE-02")
    client = login("qa1")

    def row(ref: str) -> str:
        found = re.search(rf'<tr id="position-{ref}".*?</tr>', text_of(client.get("/positions")), re.DOTALL)
        assert found
        return found[0]

    assert "released" in row("SLE-01") and "collection" in row("SLE-02")
    number = ship(app, released, sites["NUH-HEM"])
    assert "in transit" in row("SLE-01") and "NUH-HEM" in row("SLE-01")
    receive(app, number)
    received = row("SLE-01")
    assert "at site" in received
    assert re.search(r'data-label="Collection end">\d{4}-\d\d-\d\d \d\d:\d\d', received)  # from the receipt step
    assert re.search(r'data-label="Collection end">—', row("SLE-02"))  # not recorded yet
    assert 'data-label="Infused">—' in received and "open" in received


def test_the_positions_page_runs_a_bounded_number_of_queries(app: Flask, login: Login,
                                                            make_batch: Callable[..., str]) -> None:
    client = login("qa1")

    def queries() -> int:
        with statements(app) as found:
            assert client.get("/positions").status_code == 200
        return len(found)

    make_batch(until="receipt", ref="SLE-01")
    make_batch(until="receipt", ref="SLE-02")
    two = queries()
    for ref in ("SLE-03", "SLE-04", "SLE-05"):
        make_batch(until="receipt", ref=ref)
    page = text_of(client.get("/positions"))
    assert all(f"position-SLE-0{n}" in page for n in range(1, 6))
    assert queries() == two


def test_the_dashboards_and_positions_are_labelled(app: Flask, login: Login, released: str,
                                                   sites: dict[str, int]) -> None:
    from tests.htmlcheck import problems

    number = ship(app, released, sites["NUH-HEM"])
    receive(app, number, max_c="-120")
    notify(app, released, sites["NUH-HEM"])
    for username, url in (("nurse1", "/"), ("nurse3", "/"), ("qa1", "/"), ("qa1", "/positions"),
                          ("auditor1", "/positions")):
        response = login(username).get(url)
        assert response.status_code == 200
        assert problems(response.get_data(as_text=True)) == [], (username, url)


def test_an_infused_product_leaves_the_clinic_dashboard_and_closes_the_position(
        app: Flask, login: Login, released: str, sites: dict[str, int]) -> None:
    from datetime import timedelta

    from tests.test_bedside import check_in_past, infusion_form

    now = datetime.now(UTC)
    with app.app_context():
        batch = get_batch(released)
        codes = [c.code for c in batch.containers if c.kind == "product_bag"]
        shipment = pack_shipment(batch, PackInput(codes, "DS-1", "LOG-1", sites["NUH-HEM"], now - timedelta(hours=5),
                                                  "World Courier"), actor=user("tech1"), now=now - timedelta(hours=5))
        db.session.commit()
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"),
                       now=now - timedelta(hours=5))
        db.session.commit()
        receive_shipment(shipment, ReceiptInput("DS-1", codes, "-180", "-170", True, now - timedelta(hours=3), "LN2"),
                         logger_file=None, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"),
                         now=now - timedelta(hours=3))
        db.session.commit()
    for code in codes:
        check_in_past(app, code, timedelta(hours=1))
    client = login("nurse1")
    due = section(text_of(client.get("/")), "infusions-due")
    assert "bedside check done" in due
    for code in codes:
        response = client.post(f"/bedside/bags/{code}/administration",
                               data=infusion_form(app, now - timedelta(minutes=50)))
        assert response.status_code == 302, text_of(response)[-2000:]
    page = text_of(client.get("/"))
    assert "Infusions due (0)" in page and "No product is stored" in page
    found = re.search(r'<tr id="position-SLE-01".*?</tr>', text_of(login("qa1").get("/positions")), re.DOTALL)
    assert found and "closed" in found[0]
    days = re.search(r'data-label="Vein-to-vein \(days\)"><strong>(\d+\.\d)</strong>', found[0])
    assert days and float(days[1]) > 1  # collection (days before) to the end of the infusion

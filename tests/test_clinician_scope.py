"""A clinician reaches the clinic's pages only (issue 15, item 1): their dashboard, account,
shipments, bedside, notices, and the patients of their own treatment site. Everything of the
manufacturing lab (batches, the audit trail, materials, equipment, administration) and another
site's patients answer 403 with the reason, and nothing is written."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab import audit
from lab.clinic_access import OTHER_SITE, REFUSAL
from lab.extensions import db
from lab.models import Patient
from tests.factories import patient

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-1", "P11-10g")]

Login = Callable[..., FlaskClient]


def text_of(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
                for table in db.metadata.sorted_tables}


def treat_at(app: Flask, ref: str, site_id: int | None) -> str:
    """Make ``ref`` a patient of ``site_id``; returns the COI."""
    with app.app_context():
        with audit.action("test.setup", actor=None):
            found = patient(ref)
            found.treating_site_id = site_id
        db.session.commit()
        return found.coi


@pytest.fixture
def two_patients(app: Flask, make_batch: Callable[..., str], sites: dict[str, int]) -> dict[str, str]:
    """SLE-01 treated at NUH-HEM, SLE-02 at SGH-ONC, each with a batch: ref -> batch number."""
    numbers = {"SLE-01": make_batch(until="receipt", ref="SLE-01"), "SLE-02": make_batch(until="receipt", ref="SLE-02")}
    treat_at(app, "SLE-01", sites["NUH-HEM"])
    treat_at(app, "SLE-02", sites["SGH-ONC"])
    return numbers


def test_a_clinician_sees_only_their_own_sites_patients(app: Flask, login: Login,
                                                        two_patients: dict[str, str]) -> None:
    client = login("nurse1")
    listing = text_of(client.get("/patients/"))
    assert "SLE-01" in listing and "SLE-02" not in listing
    assert two_patients["SLE-01"] in listing  # the batch number, as text
    assert f'href="/batches/{two_patients["SLE-01"]}"' not in listing  # not a link to a page they cannot open
    own = client.get("/patients/SLE-01")
    assert own.status_code == 200 and "Northern University Hospital" in text_of(own)
    assert f'href="/batches/{two_patients["SLE-01"]}"' not in text_of(own)
    other = client.get("/patients/SLE-02")
    assert other.status_code == 403
    assert OTHER_SITE in text_of(other)
    assert "SLE-02" not in text_of(other).split("</header>", 1)[1]  # nothing of the other patient shown
    # and the other way round
    client = login("nurse3")
    assert client.get("/patients/SLE-02").status_code == 200
    assert client.get("/patients/SLE-01").status_code == 403
    assert "SLE-01" not in text_of(client.get("/patients/"))


def test_a_patient_without_a_treating_site_is_no_clinicians(app: Flask, login: Login,
                                                            two_patients: dict[str, str]) -> None:
    treat_at(app, "SLE-01", None)
    client = login("nurse1")
    assert client.get("/patients/SLE-01").status_code == 403
    assert "SLE-01" not in text_of(client.get("/patients/"))
    assert client.get("/patients/NOBODY-1").status_code == 404  # an unknown patient is still a 404


def test_the_coi_report_of_another_sites_patient_is_refused(app: Flask, login: Login,
                                                            two_patients: dict[str, str]) -> None:
    with app.app_context():
        other_coi = patient("SLE-02").coi
    client = login("nurse1")
    before = counts(app)
    response = client.get(f"/patients/{other_coi}/coi-report.pdf")
    assert response.status_code == 403 and OTHER_SITE in text_of(response)
    assert counts(app) == before  # no report issued, no download logged


@pytest.mark.parametrize("path", [
    "/batches/{batch}", "/batches/{batch}/record.pdf", "/batches", "/audit", "/audit.csv", "/materials/",
    "/equipment/", "/deviations", "/processes/", "/admin/users", "/inventory/", "/sites/", "/positions",
    "/patients/new", "/patients/SLE-01/weight",
])
def test_a_clinician_is_refused_the_labs_pages_with_the_reason(app: Flask, login: Login,
                                                                two_patients: dict[str, str], path: str) -> None:
    client = login("nurse1")
    response = client.get(path.format(batch=two_patients["SLE-01"]))
    assert response.status_code == 403, path
    assert "clinician" in text_of(response)


def test_a_clinician_posting_to_the_labs_pages_is_refused_and_nothing_is_written(
        app: Flask, login: Login, two_patients: dict[str, str], sites: dict[str, int]) -> None:
    client = login("doc1")
    before = counts(app)
    posts = {
        "/admin/users": {"username": "mole", "full_name": "Mole Man", "role": "admin", "password": "new-user-pass-1"},
        "/sites/new": {"code": "EVIL", "name": "Evil site", "address": "Nowhere road 1", "contact": "nobody"},
        f"/sites/{sites['NUH-HEM']}/status": {"reason": "take it down"},
        "/patients/new": {"patient_ref": "SLE-99", "initials": "AB", "date_of_birth": "1990-01-01",
                          "weight_kg": "70", "indication": "SLE", "treating_site": str(sites["NUH-HEM"])},
        "/patients/SLE-01/batches": {"product": "cd19-car-t"},
        f"/batches/{two_patients['SLE-01']}/deviations/new": {"title": "x", "description": "y"},
    }
    for path, data in posts.items():
        response = client.post(path, data=data)
        assert response.status_code == 403, path
        assert REFUSAL in text_of(response), path
    assert counts(app) == before


def test_a_clinician_reaches_the_clinics_pages(app: Flask, login: Login, two_patients: dict[str, str]) -> None:
    client = login("nurse1")
    for path in ("/", "/account/password", "/patients/", "/patients/SLE-01", "/shipments", "/notices", "/bedside"):
        response = client.get(path)
        assert response.status_code == 200, (path, text_of(response)[:500])
    menu = text_of(client.get("/")).split("</header>", 1)[0]
    assert 'href="/patients/"' in menu and 'href="/shipments"' in menu and 'href="/notices"' in menu
    for lab_page in ('href="/batches"', 'href="/materials/"', 'href="/equipment/"', 'href="/audit"'):
        assert lab_page not in menu
    with app.app_context():
        coi = patient("SLE-01").coi
    # the scan box opens their own patient and refuses another site's
    assert client.get(f"/scan?code={coi}").headers["Location"] == "/patients/SLE-01"
    with app.app_context():
        other = patient("SLE-02").coi
    opened = client.get(f"/scan?code={other}", follow_redirects=True)
    assert opened.status_code == 403
    assert client.post("/logout").status_code == 302


def test_the_labs_staff_are_not_bound_to_a_site(app: Flask, login: Login, two_patients: dict[str, str]) -> None:
    for username in ("tech1", "qa1", "auditor1"):
        client = login(username)
        assert client.get("/patients/SLE-02").status_code == 200
        listing = text_of(client.get("/patients/"))
        assert "SLE-01" in listing and "SLE-02" in listing
        assert client.get(f"/batches/{two_patients['SLE-01']}").status_code == 200


def test_a_clinician_without_a_site_sees_nothing_of_any_site(app: Flask, login: Login,
                                                             two_patients: dict[str, str]) -> None:
    from lab.models import User
    with app.app_context():
        with audit.action("test.setup", actor=None):
            db.session.scalar(select(User).where(User.username == "nurse1")).site_id = None  # type: ignore[union-attr]
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 2
    client = login("nurse1")
    assert "belongs to no treatment site" in text_of(client.get("/"))
    assert client.get("/patients/SLE-01").status_code == 403
    listing = text_of(client.get("/patients/"))
    assert "SLE-01" not in listing and "SLE-02" not in listing


def test_a_clinician_reads_the_logger_file_of_their_own_sites_receipt_only(app: Flask, login: Login, released: str,
                                                                           sites: dict[str, int]) -> None:
    from datetime import UTC, datetime
    from io import BytesIO

    from lab.services.shipments import PackInput, pack_shipment, verify_packing
    from lab.services.signatures import Credentials
    from lab.services.site_receipt import ReceiptInput, receive_shipment, store_logger_file
    from tests.factories import PASSWORD, get_batch, user

    with app.app_context():
        batch = get_batch(released)
        codes = [c.code for c in batch.containers if c.kind == "product_bag"]
        now = datetime.now(UTC)
        shipment = pack_shipment(batch, PackInput(codes, "DS-9", "LOG-9", sites["NUH-HEM"], now, "World Courier"),
                                 actor=user("tech1"))
        db.session.commit()
        verify_packing(shipment, actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"))
        db.session.commit()
        logger = store_logger_file(BytesIO(b"%PDF-1.4 logger trace\n%%EOF"), "logger.pdf", actor=user("nurse1"))
        receive_shipment(shipment, ReceiptInput("DS-9", codes, "-185", "-160", True, datetime.now(UTC), "LN2 tank"),
                         logger_file=logger, actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"))
        db.session.commit()
        url = f"/attachments/{logger.id}/logger.pdf"
    assert login("nurse1").get(url).status_code == 200
    refused = login("nurse3").get(url)
    assert refused.status_code == 403 and REFUSAL in text_of(refused)
    assert login("qa1").get(url).status_code == 200

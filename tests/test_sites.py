"""The register of treatment sites (issue 15, item 1) over HTTP: an administrator registers,
changes, deactivates and reactivates sites, every change audited; duplicates and bad input are
refused on the field with nothing written; a clinician's account needs an active site and other
roles none; a patient may be registered with a treating site, shown on their page."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent, Patient, Site, User
from lab.services.sites import active_sites
from tests.factories import user

pytestmark = pytest.mark.usefixtures("never_500")

Login = Callable[..., FlaskClient]
NEW_SITE = {"code": "kch-bmt", "name": "King's College Hospital, Bone Marrow Transplant",
            "address": "Denmark Hill\nLondon SE5 9RS", "contact": "BMT coordinator, +44 20 3299 0000, bmt@kch.example"}
NEW_PATIENT = {"patient_ref": "SLE-77", "initials": "CD", "date_of_birth": "1990-02-03", "weight_kg": "70",
               "indication": "SLE"}


def text_of(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
                for table in db.metadata.sorted_tables}


def site_row(app: Flask, code: str) -> Site | None:
    with app.app_context():
        found = db.session.scalar(select(Site).where(Site.code == code))
        if found is not None:
            db.session.expunge(found)
        return found


def field_error(page: str, field: str) -> str:
    """The message shown next to ``field`` (its ``<p class="error" id="<field>-error">``)."""
    found = re.search(rf'id="{field}-error">⚠ ([^<]*)<', page)
    assert found, f"no message on {field}"
    return found[1]


# --- the register ------------------------------------------------------------------------------

def test_the_admin_reaches_the_register_from_the_menu_and_registers_a_site(app: Flask, login: Login,
                                                                            sites: dict[str, int]) -> None:
    client = login("admin")
    assert 'href="/sites/"' in text_of(client.get("/"))
    page = client.get("/sites/")
    assert page.status_code == 200
    assert "NUH-HEM" in text_of(page) and "SGH-ONC" in text_of(page)
    assert 'href="/sites/new"' in text_of(page)
    assert client.get("/sites/new").status_code == 200
    response = client.post("/sites/new", data=NEW_SITE)
    assert response.status_code == 302, text_of(response)
    site = site_row(app, "KCH-BMT")
    assert site is not None and site.active and site.name == NEW_SITE["name"]
    assert site.address == "Denmark Hill\nLondon SE5 9RS"
    assert response.headers["Location"] == f"/sites/{site.id}"
    detail = text_of(client.get(f"/sites/{site.id}"))
    assert "King's College Hospital" in detail and "bmt@kch.example" in detail
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "sites",
                                                             AuditEvent.row_id == str(site.id))).all()
        assert {e.action for e in events} == {"site.register"}
        assert {e.actor_username for e in events} == {"admin"}
        assert '"code": "KCH-BMT"' in events[0].new_value


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"code": "nuh-hem"}, "code", "already used"),
    ({"name": "northern  university hospital, haematology"}, "name", "already has this name"),
    ({"code": "K"}, "code", "2 to 16 letters"),
    ({"code": "KCH BMT"}, "code", "2 to 16 letters"),
    ({"name": ""}, "name", "Enter the site's name"),
    ({"address": ""}, "address", "delivery address"),
    ({"contact": " "}, "contact", "who to call"),
    ({"code": "X" * 17}, "code", "16"),
])
def test_a_bad_or_duplicate_site_is_refused_on_its_field_and_nothing_is_written(
        app: Flask, login: Login, sites: dict[str, int], change: dict[str, str], field: str, words: str) -> None:
    client = login("admin")
    before = counts(app)
    response = client.post("/sites/new", data={**NEW_SITE, **change})
    assert response.status_code == 422
    assert words in field_error(text_of(response), field)
    assert counts(app) == before


def test_a_site_is_changed_with_a_reason_and_the_change_is_audited(app: Flask, login: Login,
                                                                   sites: dict[str, int]) -> None:
    client = login("admin")
    site_id = sites["NUH-HEM"]
    page = text_of(client.get(f"/sites/{site_id}"))
    assert "Nora Nurse" in page and "Dana Doctor" in page  # its clinicians
    data = {"code": "NUH-HEM", "name": "Northern University Hospital, Haematology",
            "address": "Northern University Hospital\n1 Hospital Road", "contact": "Cell therapy desk +44 20 1111 1111"}
    before = counts(app)
    refused = client.post(f"/sites/{site_id}", data=data)
    assert refused.status_code == 422
    assert "Say why" in field_error(text_of(refused), "reason")
    assert counts(app) == before
    same = client.post(f"/sites/{site_id}", data={**data, "contact": "Ward desk +44 20 0000 0000",
                                                  "address": "Northern University Hospital, Haematology\n1 Hospital Road",
                                                  "reason": "no change"})
    assert same.status_code == 422 and "Nothing to change" in text_of(same)
    taken = client.post(f"/sites/{site_id}", data={**data, "code": "SGH-ONC", "reason": "typo"})
    assert taken.status_code == 422 and "already used" in field_error(text_of(taken), "code")
    assert counts(app) == before
    done = client.post(f"/sites/{site_id}", data={**data, "reason": "New cell therapy desk"})
    assert done.status_code == 302
    assert site_row(app, "NUH-HEM").contact == "Cell therapy desk +44 20 1111 1111"  # type: ignore[union-attr]
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "site.update",
                                                           AuditEvent.field == "contact"))
        assert event is not None and event.reason == "New cell therapy desk"
        assert event.old_value == "Ward desk +44 20 0000 0000"


def test_a_site_is_deactivated_and_reactivated_with_a_reason(app: Flask, login: Login, sites: dict[str, int]) -> None:
    client = login("admin")
    site_id = sites["SGH-ONC"]
    before = counts(app)
    refused = client.post(f"/sites/{site_id}/status", data={"reason": ""})
    assert refused.status_code == 422 and "Say why" in text_of(refused)
    assert counts(app) == before
    assert client.post(f"/sites/{site_id}/status", data={"reason": "Contract ended"}).status_code == 302
    assert not site_row(app, "SGH-ONC").active  # type: ignore[union-attr]
    assert "DEACTIVATED" in text_of(client.get(f"/sites/{site_id}"))
    with app.app_context():
        assert [s.code for s in active_sites()] == ["NUH-HEM"]
    # a deactivated site is offered to no new clinician, and refused if sent anyway
    assert f'value="{site_id}"' not in text_of(client.get("/admin/users"))
    response = client.post("/admin/users", data={"username": "nurse9", "full_name": "Nine Nurse", "role": "clinician",
                                                 "site": str(site_id), "password": "new-user-pass-1"})
    assert response.status_code == 422 and "deactivated" in field_error(text_of(response), "site")
    assert client.post(f"/sites/{site_id}/status", data={"reason": "Contract renewed"}).status_code == 302
    assert site_row(app, "SGH-ONC").active  # type: ignore[union-attr]
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.table_name == "sites",
                                                                     AuditEvent.row_id == str(site_id))
                                     .order_by(AuditEvent.id)).all()
        assert actions == ["test.setup", "site.deactivate", "site.reactivate"]


def test_a_site_with_a_shipment_on_its_way_is_not_deactivated(app: Flask, login: Login, released: str,
                                                              sites: dict[str, int]) -> None:
    from datetime import UTC, datetime

    from lab.services.shipments import PackInput, pack_shipment
    from tests.factories import get_batch

    with app.app_context():
        batch = get_batch(released)
        bags = [c.code for c in batch.containers if c.kind == "product_bag"]
        shipment = pack_shipment(batch, PackInput(bags, "DS-0042", "LOG-77", sites["NUH-HEM"], datetime.now(UTC),
                                                  "World Courier"), actor=user("tech1"))
        db.session.commit()
        number = shipment.number
    client = login("admin")
    before = counts(app)
    response = client.post(f"/sites/{sites['NUH-HEM']}/status", data={"reason": "Closing"})
    assert response.status_code == 422 and number in text_of(response)
    assert counts(app) == before and site_row(app, "NUH-HEM").active  # type: ignore[union-attr]


@pytest.mark.parametrize("username", ["qa1", "tech1", "auditor1", "nurse1"])
def test_only_an_administrator_keeps_the_register(app: Flask, login: Login, sites: dict[str, int],
                                                  username: str) -> None:
    client = login(username)
    assert 'href="/sites/"' not in text_of(client.get("/"))
    for url in ("/sites/", "/sites/new", f"/sites/{sites['NUH-HEM']}"):
        assert client.get(url).status_code == 403
    before = counts(app)
    assert client.post("/sites/new", data=NEW_SITE).status_code == 403
    assert client.post(f"/sites/{sites['NUH-HEM']}/status", data={"reason": "x"}).status_code == 403
    assert counts(app) == before


def test_an_unknown_site_is_a_404(login: Login, sites: dict[str, int]) -> None:
    client = login("admin")
    assert client.get("/sites/9999").status_code == 404
    assert client.get("/sites/99999999999").status_code == 404


# --- users and their site ------------------------------------------------------------------------

def test_the_admin_creates_a_clinician_of_an_active_site(app: Flask, login: Login, sites: dict[str, int]) -> None:
    client = login("admin")
    page = text_of(client.get("/admin/users"))
    assert "Treatment site" in page and f'value="{sites["NUH-HEM"]}"' in page
    response = client.post("/admin/users", data={"username": "nurse2", "full_name": "Nina Second",
                                                 "role": "clinician", "site": str(sites["NUH-HEM"]),
                                                 "password": "new-user-pass-1"})
    assert response.status_code == 302, text_of(response)
    with app.app_context():
        created = user("nurse2")
        assert created.role == "clinician" and created.site_id == sites["NUH-HEM"]
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.create"))
        assert event is not None and f'"site_id": "{sites["NUH-HEM"]}"' in (event.new_value or "")


@pytest.mark.parametrize(("role", "site", "words"), [
    ("clinician", "", "belongs to one treatment site"),
    ("technician", "NUH-HEM", "Only a clinician belongs to a treatment site"),
    ("qa_officer", "SGH-ONC", "Only a clinician belongs to a treatment site"),
    ("clinician", "abc", "Choose one of the registered treatment sites"),
    ("clinician", "99999999999", "Choose one of the registered treatment sites"),
    ("clinician", "9999", "Choose one of the registered treatment sites"),
])
def test_a_clinician_without_a_site_or_staff_with_one_is_refused(app: Flask, login: Login, sites: dict[str, int],
                                                                 role: str, site: str, words: str) -> None:
    client = login("admin")
    before = counts(app)
    response = client.post("/admin/users", data={"username": "someone", "full_name": "Some One", "role": role,
                                                 "site": str(sites.get(site, site)), "password": "new-user-pass-1"})
    assert response.status_code == 422
    assert words in field_error(text_of(response), "site")
    assert counts(app) == before


def test_changing_a_role_keeps_the_site_rule(app: Flask, login: Login, sites: dict[str, int]) -> None:
    client = login("admin")
    with app.app_context():
        tech2, nurse1 = user("tech2").id, user("nurse1").id
    page = text_of(client.get(f"/admin/users/{nurse1}"))
    assert f'<option selected value="{sites["NUH-HEM"]}">' in page or \
        f'<option value="{sites["NUH-HEM"]}" selected>' in page
    before = counts(app)
    # technician -> clinician without a site; clinician keeping a site while becoming a technician
    refused = client.post(f"/admin/users/{tech2}", data={"role": "clinician", "site": "", "status": "active",
                                                         "reason": "Moved to the ward"})
    assert refused.status_code == 422 and "choose the site" in field_error(text_of(refused), "site")
    refused = client.post(f"/admin/users/{nurse1}", data={"role": "technician", "site": str(sites["NUH-HEM"]),
                                                          "status": "active", "reason": "Joined the lab"})
    assert refused.status_code == 422 and "Only a clinician" in field_error(text_of(refused), "site")
    assert counts(app) == before
    moved = client.post(f"/admin/users/{nurse1}", data={"role": "clinician", "site": str(sites["SGH-ONC"]),
                                                        "status": "active", "reason": "Moved to St George's"})
    assert moved.status_code == 302, text_of(moved)
    made = client.post(f"/admin/users/{tech2}", data={"role": "clinician", "site": str(sites["NUH-HEM"]),
                                                      "status": "active", "reason": "Moved to the ward"})
    assert made.status_code == 302, text_of(made)
    with app.app_context():
        assert user("nurse1").site_id == sites["SGH-ONC"]
        assert (user("tech2").role, user("tech2").site_id) == ("clinician", sites["NUH-HEM"])
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.row_id == str(nurse1),
                                                           AuditEvent.table_name == "users",
                                                           AuditEvent.field == "site_id",
                                                           AuditEvent.action == "user.update"))
        assert event is not None and event.reason == "Moved to St George's"
        assert (event.old_value, event.new_value) == (str(sites["NUH-HEM"]), str(sites["SGH-ONC"]))


def test_a_clinician_of_a_deactivated_site_can_still_be_deactivated(app: Flask, login: Login,
                                                                    sites: dict[str, int]) -> None:
    client = login("admin")
    assert client.post(f"/sites/{sites['SGH-ONC']}/status", data={"reason": "Closed"}).status_code == 302
    with app.app_context():
        nurse3 = user("nurse3").id
    page = text_of(client.get(f"/admin/users/{nurse3}"))
    assert "(deactivated)" in page  # the current site is still shown
    response = client.post(f"/admin/users/{nurse3}", data={"role": "clinician", "site": str(sites["SGH-ONC"]),
                                                           "status": "inactive", "reason": "Site closed"})
    assert response.status_code == 302, text_of(response)
    with app.app_context():
        assert not db.session.get(User, nurse3).active  # type: ignore[union-attr]


# --- patients and their treating site --------------------------------------------------------------

def test_a_patient_is_registered_with_a_treating_site_shown_on_their_page(app: Flask, login: Login,
                                                                         sites: dict[str, int]) -> None:
    client = login("tech1")
    form = text_of(client.get("/patients/new"))
    assert "Treating site" in form and "NUH-HEM" in form
    response = client.post("/patients/new", data={**NEW_PATIENT, "treating_site": str(sites["NUH-HEM"])})
    assert response.status_code == 302, text_of(response)
    page = text_of(client.get("/patients/SLE-77"))
    assert "Treating site" in page and "Northern University Hospital, Haematology" in page
    assert "NUH-HEM" in text_of(client.get("/patients/"))
    with app.app_context():
        patient = db.session.scalar(select(Patient).where(Patient.patient_ref == "SLE-77"))
        assert patient is not None and patient.treating_site_id == sites["NUH-HEM"]
    # the site stays optional
    assert client.post("/patients/new", data={**NEW_PATIENT, "patient_ref": "SLE-78"}).status_code == 302
    assert "not recorded" in text_of(client.get("/patients/SLE-78"))


@pytest.mark.parametrize("value", ["abc", "99999999999", "9999", "deactivated"])
def test_a_patient_with_an_unknown_or_deactivated_site_is_refused(app: Flask, login: Login, sites: dict[str, int],
                                                                  value: str) -> None:
    if value == "deactivated":
        assert login("admin").post(f"/sites/{sites['SGH-ONC']}/status", data={"reason": "Closed"}).status_code == 302
        value = str(sites["SGH-ONC"])
    client = login("tech1")
    before = counts(app)
    response = client.post("/patients/new", data={**NEW_PATIENT, "treating_site": value})
    assert response.status_code == 422
    assert "site" in field_error(text_of(response), "treating_site")
    assert counts(app) == before


def test_the_register_pages_are_labelled_even_when_refusing(app: Flask, login: Login, sites: dict[str, int]) -> None:
    from tests.htmlcheck import problems

    client = login("admin")
    site_id = sites["NUH-HEM"]
    pages = {url: client.get(url) for url in ("/sites/", "/sites/new", f"/sites/{site_id}", "/admin/users",
                                              f"/admin/users/{user_id(app, 'nurse1')}")}
    pages["refused new"] = client.post("/sites/new", data={**NEW_SITE, "code": "NUH-HEM"})
    pages["refused edit"] = client.post(f"/sites/{site_id}", data={**NEW_SITE, "reason": ""})
    pages["refused status"] = client.post(f"/sites/{site_id}/status", data={"reason": ""})
    pages["refused user"] = client.post("/admin/users", data={"username": "x1", "full_name": "X One",
                                                              "role": "clinician", "password": "new-user-pass-1"})
    pages["patient form"] = login("tech1").get("/patients/new")
    for name, response in pages.items():
        assert problems(response.get_data(as_text=True)) == [], name


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        return user(username).id

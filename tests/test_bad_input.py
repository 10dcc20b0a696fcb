"""Bad input through HTTP: refused with a clear message and a 4xx, never a 500, and nothing written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from config import TestingConfig
from lab import audit, create_app
from lab.extensions import db
from lab.models import Patient, User
from tests.conftest import ON_POSTGRES
from tests.factories import PASSWORD, PASSWORD_HASH, entries, form_data, get_batch, page_text, snapshot, step_values

LONG = "x" * 50_000
pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("A11-5")]


def step_form(app: Flask, number: str, step_key: str, *, comment: str = "", **overrides: str) -> dict[str, Any]:
    with app.app_context():
        batch = get_batch(number)
        raw = step_values(step_key, when=datetime.now(UTC), batch=batch, **overrides)
        return form_data(raw, comment=comment, batch_version=batch.version)


def assert_refused(response: Any, status: int, message: str) -> None:
    assert response.status_code == status, page_text(response)[:2000]
    assert message in page_text(response)


@pytest.fixture
def tech(login: Any) -> FlaskClient:
    return login("tech1")


@pytest.fixture
def scheduled(make_batch: Any) -> str:
    """A scheduled batch whose receipt is the next step."""
    return make_batch(until="receipt")


# --- a number field ----------------------------------------------------------------------------

NUMBER_CASES = [
    ("abc", "Volume: enter a number such as 91.5, not 'abc'."),
    ("NaN", "Volume: enter a number such as 91.5, not 'NaN'."),
    ("nan", "Volume: enter a number such as 91.5, not 'nan'."),
    ("inf", "Volume: enter a number such as 91.5, not 'inf'."),
    ("-inf", "Volume: enter a number such as 91.5, not '-inf'."),
    ("Infinity", "Volume: enter a number such as 91.5, not 'Infinity'."),
    ("1e309", "Volume: '1e309' is too large to be a measured value."),
    ("-5", "Volume must be between 0 and 2000 mL."),
    ("2001", "Volume must be between 0 and 2000 mL."),
    ("1,5", "Volume: use a dot for decimals and no thousands separators (for example 91.5), not '1,5'."),
    ("1 500", "Volume: use no thousands separators, not '1 500'."),
    ("", "Enter a value for Volume."),
    ("   ", "Enter a value for Volume."),
    ("12 L", "Volume is entered in mL: convert it to mL, not 'L'."),
    ("12 °C", "Volume is entered in mL: convert it to mL, not '°C'."),
    ("０１２", "Volume: enter a number such as 91.5"),  # full-width digits
    (LONG, f"Volume: enter a number such as 91.5, not '{'x' * 40}…'."),
    ("9" * 50_000, "Volume: '" + "9" * 40 + "…' is too large to be a measured value."),
]


@pytest.mark.parametrize(("typed", "message"), NUMBER_CASES, ids=[f"case{i}" for i in range(len(NUMBER_CASES))])
def test_a_bad_number_is_refused_and_nothing_is_written(app, scheduled, tech, typed, message):
    before = snapshot(app, scheduled)
    response = tech.post(f"/batches/{scheduled}/steps/receipt",
                         data=step_form(app, scheduled, "receipt", volume_ml=typed))
    assert_refused(response, 422, message)
    page = page_text(response)
    assert "The entry was not saved: correct the fields marked below." in page
    assert re.search(r'<div class="field has-error[^"]*">\s*<label for="field-volume_ml">', page)
    assert snapshot(app, scheduled) == before


def test_a_negative_cell_count_is_refused(app, make_batch, tech):
    number = make_batch(until="enrichment")
    before = snapshot(app, number)
    response = tech.post(f"/batches/{number}/steps/enrichment",
                         data=step_form(app, number, "enrichment", pre_tnc="-8.0e9"))
    assert_refused(response, 422, "Total nucleated cells before enrichment must be between 0 and 1.00 × 10¹² cells.")
    assert snapshot(app, number) == before


@pytest.mark.parametrize(("step_key", "field", "typed", "message"), [
    ("receipt", "collection_end", "yesterday",
     "End of collection: enter a date and time such as 2026-11-25 08:30, not 'yesterday'."),
    ("receipt", "collection_end", "2026-02-30T08:00",
     "End of collection: enter a date and time such as 2026-11-25 08:30, not '2026-02-30T08:00'."),
    ("receipt", "collection_end", (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
     "End of collection cannot be in the future"),
    ("receipt", "collection_end", "1999-12-31T08:00", "is before the year 2000; check the date."),
    ("receipt", "decision", "maybe", "Decision must be one of: accept, reject (not 'maybe')."),
    ("receipt", "bag_intact", "perhaps", "Bag intact: answer yes or no, not 'perhaps'."),
    ("receipt", "coi_on_bag", "", "Enter a value for COI on the bag label."),
    ("receipt", "coi_on_bag", LONG, "COI on the bag label: That is not a COI: it is too long"),
])
def test_bad_values_of_other_field_types_are_refused(app, scheduled, tech, step_key, field, typed, message):
    before = snapshot(app, scheduled)
    response = tech.post(f"/batches/{scheduled}/steps/{step_key}",
                         data=step_form(app, scheduled, step_key, **{field: typed}))
    assert_refused(response, 422, message)
    assert snapshot(app, scheduled) == before


def test_oversized_text_and_a_fractional_culture_day_are_refused(app, make_batch, tech):
    number = make_batch(until="storage")
    before = snapshot(app, number)
    response = tech.post(f"/batches/{number}/steps/storage", data=step_form(app, number, "storage", rack=LONG))
    assert_refused(response, 422, "Rack is limited to 20 characters; this has 50000.")
    response = tech.post(f"/batches/{number}/steps/storage",
                         data=step_form(app, number, "storage", rack="R3\x1b"))
    assert_refused(response, 400, "field-rack” holds a control character (U+001B)")  # before the form is read
    assert snapshot(app, number) == before

    number = make_batch(until="harvest", ref="SLE-02")
    before = snapshot(app, number)
    for typed, message in [("6.5", "Culture day: enter a whole number such as 3, not '6.5'."),
                           ("31", "Culture day must be between 0 and 30."),
                           ("-1", "Culture day must be between 0 and 30.")]:
        response = tech.post(f"/batches/{number}/steps/expansion",
                             data=step_form(app, number, "expansion", culture_day=typed))
        assert_refused(response, 422, message)
    assert snapshot(app, number) == before


def test_nul_characters_are_refused_everywhere(app, make_batch, login):
    """PostgreSQL cannot store or even look up text with NUL: refused before any query, on every form."""
    number = make_batch(until="enrichment", verify=False)
    client = login("tech1")
    with app.app_context():
        entry_id = entries(number, "receipt")[0].id
        version = get_batch(number).version
    before = snapshot(app, number)
    requests = [
        ("post", f"/batches/{number}/steps/enrichment", step_form(app, number, "enrichment", comment="ok\x00")),
        ("post", f"/batches/{number}/steps/enrichment", step_form(app, number, "enrichment", tubing_set_lot="TS\x00")),
        ("post", f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct",
         {"value": "185", "reason": "Typo\x00", "batch_version": version}),
        ("post", "/patients/new", {"patient_ref": "SLE-09", "initials": "AB", "date_of_birth": "1980-01-01",
                                   "weight_kg": "70", "indication": "SLE\x00"}),
        ("get", "/patients/SLE%00", None),
        ("get", "/scan?code=B%00", None),
    ]
    for method, url, data in requests:
        response = getattr(client, method)(url, data=data)
        assert_refused(response, 400, "holds a control character (U+0000)")
    assert snapshot(app, number) == before
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 1


def test_fields_missing_from_the_body_are_refused(app, scheduled, tech):
    before = snapshot(app, scheduled)
    with app.app_context():
        version = get_batch(scheduled).version
    response = tech.post(f"/batches/{scheduled}/steps/receipt", data={"batch_version": version})
    assert_refused(response, 422, "Enter a value for Volume.")
    assert "Enter a value for COI on the bag label." in page_text(response)
    assert snapshot(app, scheduled) == before


# --- comment and batch version --------------------------------------------------------------------


def test_an_over_long_comment_is_refused(app, scheduled, tech):
    before = snapshot(app, scheduled)
    response = tech.post(f"/batches/{scheduled}/steps/receipt",
                         data=step_form(app, scheduled, "receipt", comment="c" * 2001))
    assert_refused(response, 422, "Field cannot be longer than 2000 characters.")
    assert snapshot(app, scheduled) == before
    response = tech.post(f"/batches/{scheduled}/steps/receipt",
                         data=step_form(app, scheduled, "receipt", comment="c" * 50_000))
    assert_refused(response, 422, "Field cannot be longer than 2000 characters.")
    assert snapshot(app, scheduled) == before


@pytest.mark.parametrize("batch_version", [None, "", "abc", "1.5", "1e3"])
def test_a_missing_or_non_integer_batch_version_is_refused(app, scheduled, tech, batch_version):
    data = step_form(app, scheduled, "receipt")
    if batch_version is None:
        del data["batch_version"]
    else:
        data["batch_version"] = batch_version
    before = snapshot(app, scheduled)
    response = tech.post(f"/batches/{scheduled}/steps/receipt", data=data)
    assert_refused(response, 422, "reload the page")
    assert snapshot(app, scheduled) == before


def test_a_stale_batch_version_is_refused_with_who_changed_it(app, make_batch, tech):
    number = make_batch(until="enrichment")
    data = step_form(app, number, "enrichment")
    data["batch_version"] = int(data["batch_version"]) - 1
    before = snapshot(app, number)
    response = tech.post(f"/batches/{number}/steps/enrichment", data=data)
    assert_refused(response, 409, "changed this batch at")
    assert "Nothing of yours was saved" in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.parametrize("form", ["correct", "verify"])
def test_correction_and_verification_forms_need_the_batch_version(app, make_batch, login, form):
    number = make_batch(until="enrichment", verify=False)
    with app.app_context():
        entry_id = entries(number, "receipt")[0].id
    client = login("tech1" if form == "correct" else "tech2")
    before = snapshot(app, number)
    if form == "correct":
        response = client.post(f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct",
                               data={"value": "185", "reason": "Typo."})
    else:
        response = client.post(f"/batches/{number}/entries/{entry_id}/verify",
                               data={"password": PASSWORD, "batch_version": "x"})
    assert_refused(response, 422, "reload the page")
    assert snapshot(app, number) == before


def test_an_over_long_correction_reason_or_value_is_refused(app, make_batch, tech):
    number = make_batch(until="enrichment")
    with app.app_context():
        entry_id = entries(number, "receipt")[0].id
        version = get_batch(number).version
    url = f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct"
    before = snapshot(app, number)
    response = tech.post(url, data={"value": "185", "reason": LONG, "batch_version": version})
    assert_refused(response, 422, "Field cannot be longer than 2000 characters.")
    response = tech.post(url, data={"value": LONG, "reason": "Typo.", "batch_version": version})
    assert_refused(response, 422, "Field cannot be longer than 2000 characters.")
    assert snapshot(app, number) == before


# --- unknown things in the URL ---------------------------------------------------------------------


def test_unknown_steps_entries_and_fields_are_404(app, make_batch, tech):
    number = make_batch(until="enrichment")
    with app.app_context():
        entry_id = entries(number, "receipt")[0].id
        version = get_batch(number).version
    before = snapshot(app, number)
    cases = [
        ("get", f"/batches/{number}/steps/no_such_step", "has no step 'no_such_step'"),
        ("post", f"/batches/{number}/steps/no_such_step", "has no step 'no_such_step'"),
        ("get", f"/batches/{number}/entries/99999/verify", f"Batch {number} has no entry 99999."),
        ("post", f"/batches/{number}/entries/99999/verify", f"Batch {number} has no entry 99999."),
        ("get", f"/batches/{number}/entries/99999/fields/volume_ml/correct", f"Batch {number} has no entry 99999."),
        ("post", f"/batches/{number}/entries/{entry_id}/fields/no_field/correct",
         "Apheresis receipt has no field 'no_field'."),
        ("get", f"/batches/{number}/entries/abc/verify", "<h1>Not found</h1>"),
        ("get", f"/batches/{number}/entries/-1/verify", "<h1>Not found</h1>"),
        ("get", "/patients/NOBODY-9", "No patient 'NOBODY-9' is registered in this lab."),
        ("get", "/no/such/page", "<h1>Not found</h1>"),
    ]
    for method, url, message in cases:
        response = getattr(tech, method)(url, data={"batch_version": version, "password": PASSWORD,
                                                    "value": "1", "reason": "x"})
        assert_refused(response, 404, message)
    assert snapshot(app, number) == before


def test_an_entry_of_another_batch_is_404(app, make_batch, tech):
    first = make_batch(until="enrichment")
    second = make_batch(until="enrichment", ref="SLE-02")
    with app.app_context():
        other_entry = entries(first, "receipt")[0].id
        version = get_batch(second).version
    before = snapshot(app, second)
    response = tech.post(f"/batches/{second}/entries/{other_entry}/fields/volume_ml/correct",
                         data={"value": "185", "reason": "Typo.", "batch_version": version})
    assert_refused(response, 404, f"Batch {second} has no entry {other_entry}.")
    assert snapshot(app, second) == before


@pytest.mark.parametrize("typed", ["B-A9999-26-00001", "DROP TABLE batches", "%00", "B" * 200])
def test_malformed_batch_numbers_in_urls_are_400(app, users, tech, typed):
    response = tech.get(f"/batches/{typed}")
    assert response.status_code == 400
    assert "batch number" in page_text(response)
    response = tech.post(f"/batches/{typed}/steps/receipt", data={"batch_version": "1"})
    assert response.status_code == 400


# --- transport-level refusals ---------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_413(app, scheduled, tech):
    data = step_form(app, scheduled, "receipt", comment="c" * (app.config["MAX_CONTENT_LENGTH"] + 1))
    before = snapshot(app, scheduled)
    response = tech.post(f"/batches/{scheduled}/steps/receipt", data=data)
    assert response.status_code == 413
    assert "<h1>Too large</h1>" in page_text(response)
    assert snapshot(app, scheduled) == before
    response = tech.post("/patients/new", data={"patient_ref": "SLE-09", "indication": "x" * 2_000_000})
    assert response.status_code == 413


class CsrfConfig(TestingConfig):
    WTF_CSRF_ENABLED = True


@pytest.fixture
def csrf_app(app: Flask) -> Iterator[Flask]:
    """An app with CSRF protection on, as in production, and one technician."""
    protected = create_app(CsrfConfig)
    with protected.app_context():
        if not ON_POSTGRES:  # in-memory SQLite: this app has a database of its own
            db.create_all()
        with audit.action("test.setup", actor=None):
            db.session.add(User(username="tech1", full_name="Tess Technician", role="technician",
                                password_hash=PASSWORD_HASH))
        db.session.commit()
    yield protected
    with protected.app_context():
        db.session.remove()
        db.engine.dispose()


def csrf_token(client: FlaskClient, url: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get(url).get_data(as_text=True))
    assert match is not None
    return match.group(1)


def test_a_post_without_its_csrf_token_is_400(csrf_app):
    client = csrf_app.test_client()
    response = client.post("/login", data={"username": "tech1", "password": PASSWORD})
    assert response.status_code == 400
    assert "The form expired or did not come from this CellTrail page." in page_text(response)
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"username": "tech1", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302

    patient = {"patient_ref": "SLE-01", "initials": "KM", "date_of_birth": "1988-03-14", "weight_kg": "64.5",
               "indication": "Systemic lupus erythematosus"}
    for data in (patient, {**patient, "csrf_token": "forged"}):
        response = client.post("/patients/new", data=data)
        assert response.status_code == 400
        assert "Form not accepted" in page_text(response)
    response = client.post("/batches/B-A9999-26-00001-5/steps/receipt", data={"batch_version": "1"})
    assert response.status_code == 400
    with csrf_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 0
    response = client.post("/patients/new", data={**patient, "csrf_token": csrf_token(client, "/patients/new")})
    assert response.status_code == 302
    with csrf_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 1

"""Patients and identity over HTTP: registration and its COI, starting a batch, codes typed or scanned."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from lab.exceptions import ImmutableRecordError
from lab.extensions import db
from lab.models import AuditEvent, Batch, Patient, ProcessDefinitionRecord
from tests.factories import get_batch, patient
from workflows.codes import CodeKind, make_code, parse_code
from workflows.definition import DEFINITIONS_DIR

DEFINITION_FILE = DEFINITIONS_DIR / "cd19_car_t_v4.toml"  # new batches start on the latest version
YY = f"{datetime.now(UTC).year % 100:02d}"


def registration(**overrides: str) -> dict[str, str]:
    return {"patient_ref": "SLE-01", "initials": "KM", "date_of_birth": "1988-03-14", "weight_kg": "64.5",
            "indication": "Systemic lupus erythematosus, refractory", **overrides}


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


@pytest.fixture
def tech(login, users):
    return login("tech1")


# --- registration -------------------------------------------------------------------------


@pytest.mark.requirements("COI-2")
def test_registration_assigns_a_coi_with_a_valid_check_character(app, tech):
    response = tech.post("/patients/new", data=registration())
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/patients/SLE-01")
    with app.app_context():
        row = patient("SLE-01")
        assert re.fullmatch(rf"CH-A9999-{YY}-000001-[0-9A-Z*]", row.coi), row.coi
        code = parse_code(row.coi, CodeKind.COI)
        assert str(code) == row.coi
        assert code.fin == "A9999"
        assert (row.initials, row.date_of_birth, row.weight_kg) == ("KM", date(1988, 3, 14), 64.5)
        assert row.indication == "Systemic lupus erythematosus, refractory"
        coi = row.coi
    page = text_of(tech.get(response.headers["Location"]))
    assert coi in page
    assert f"Patient SLE-01 registered with COI {coi}" in page


@pytest.mark.parametrize("column", ["coi", "patient_ref"])
def test_a_registered_patients_coi_and_reference_never_change(app, tech, column):
    """Labels, records and the pages that keep them per patient (lab/services/batch_summary.py)
    rely on it: a change is refused before anything is written."""
    assert tech.post("/patients/new", data=registration()).status_code == 302
    with app.app_context():
        row = patient("SLE-01")
        before = getattr(row, column)
        with pytest.raises(ImmutableRecordError):
            setattr(row, column, "CH-A9999-26-000009-X")
        db.session.rollback()
        assert getattr(patient("SLE-01"), column) == before


@pytest.mark.requirements("COI-2")
def test_the_second_registration_gets_the_next_coi(app, tech):
    assert tech.post("/patients/new", data=registration()).status_code == 302
    assert tech.post("/patients/new", data=registration(patient_ref="SLE-02", initials="JT")).status_code == 302
    with app.app_context():
        first, second = patient("SLE-01").coi, patient("SLE-02").coi
    assert first.startswith(f"CH-A9999-{YY}-000001-")
    assert second.startswith(f"CH-A9999-{YY}-000002-")
    for coi in (first, second):
        assert str(parse_code(coi, CodeKind.COI)) == coi


@pytest.mark.requirements("COI-2")
def test_the_facility_id_comes_from_the_configuration(app, tech):
    app.config["FACILITY_ID"] = "B1234"
    assert tech.post("/patients/new", data=registration()).status_code == 302
    with app.app_context():
        coi = patient("SLE-01").coi
    assert coi.startswith(f"CH-B1234-{YY}-000001-")
    assert parse_code(coi, CodeKind.COI).fin == "B1234"
    response = tech.post("/patients/SLE-01/batches")
    assert response.status_code == 302
    with app.app_context():
        number = patient("SLE-01").batches[0].batch_number
    assert number.startswith(f"B-B1234-{YY}-00001-")
    assert str(parse_code(number, CodeKind.BATCH)) == number


@pytest.mark.requirements("COI-2")
def test_a_duplicate_patient_id_is_refused(app, tech):
    assert tech.post("/patients/new", data=registration()).status_code == 302
    with app.app_context():
        audit_before = count(AuditEvent)
    response = tech.post("/patients/new", data=registration(initials="ZZ", patient_ref="sle-01"))
    assert response.status_code == 422
    assert "Patient SLE-01 is already registered." in text_of(response)
    with app.app_context():
        assert count(Patient) == 1
        assert count(AuditEvent) == audit_before


#: A date of birth still in the future when the test runs, even if the run crosses midnight after collection.
IN_TWO_DAYS = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("initials", "K1", "Use 2 to 4 letters."),
    ("initials", "K", "Use 2 to 4 letters."),
    ("initials", "ABCDE", "Field cannot be longer than 4 characters."),
    ("patient_ref", "Jane Doe", "Use 2 to 32 letters, digits or hyphens"),
    ("date_of_birth", IN_TWO_DAYS, "The date of birth must be in the past"),
    ("date_of_birth", "1899-12-31", "The date of birth must be in the past (and after 1900)."),
    ("date_of_birth", "14.03.1988", "Not a valid date value."),
    ("weight_kg", "NaN", "Enter a finite number."),
    ("weight_kg", "nan", "Enter a finite number."),
    ("weight_kg", "inf", "Enter a finite number."),
    ("weight_kg", "-inf", "Enter a finite number."),
    ("weight_kg", "1e309", "Enter a finite number."),
    ("weight_kg", "-5", "Weight must be between 1 and 400 kg."),
    ("weight_kg", "0", "Weight must be between 1 and 400 kg."),
    ("weight_kg", "401", "Weight must be between 1 and 400 kg."),
    ("weight_kg", "abc", "Not a valid float value."),
    ("weight_kg", "", "Enter the weight in kg."),
    ("patient_ref", "", "This field is required."),
    ("initials", "", "This field is required."),
    ("date_of_birth", "", "Enter the date of birth."),
    ("indication", "", "This field is required."),
    ("indication", "x", "Enter the indication (2 to 128 characters)"),
    ("indication", "x" * 5000, "Field cannot be longer than 128 characters."),
])
def test_bad_registration_is_refused_with_its_message(app, tech, field, value, message):
    with app.app_context():
        audit_before = count(AuditEvent)
    response = tech.post("/patients/new", data=registration(**{field: value}))
    assert response.status_code == 422
    page = text_of(response)
    assert message in page
    assert 'aria-invalid="true"' in page  # the message sits on the field at fault
    with app.app_context():
        assert count(Patient) == 0
        assert count(AuditEvent) == audit_before


@pytest.mark.requirements("P11-10g")
def test_a_role_that_may_not_register_gets_403(app, login, users):
    client = login("qc1")
    assert client.get("/patients/new").status_code == 403
    response = client.post("/patients/new", data=registration())
    assert response.status_code == 403
    assert "Only a lab technician or supervisor may register a patient" in text_of(response)
    with app.app_context():
        assert count(Patient) == 0


# --- starting a batch -------------------------------------------------------------------


@pytest.mark.requirements("PROC-2")
def test_starting_a_batch_numbers_it_and_pins_the_definition(app, tech):
    assert tech.post("/patients/new", data=registration()).status_code == 302
    response = tech.post("/patients/SLE-01/batches")
    assert response.status_code == 302
    with app.app_context():
        batch = patient("SLE-01").batches[0]
        number = batch.batch_number
        assert re.fullmatch(rf"B-A9999-{YY}-00001-[0-9A-Z*]", number), number
        assert str(parse_code(number, CodeKind.BATCH)) == number
        assert batch.state == "scheduled"
        record = batch.definition
        data = DEFINITION_FILE.read_bytes()
        assert (record.key, record.version) == ("cd19-car-t", 4)
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        assert record.source_text == data.decode("utf-8")
        assert record.source_name == DEFINITION_FILE.name
        sha = record.sha256
    assert response.headers["Location"].endswith(f"/batches/{number}")
    page = text_of(tech.get(response.headers["Location"]))
    assert number in page and "scheduled" in page
    assert f"sha256 {sha}" in page


def test_a_second_open_batch_for_the_same_patient_is_refused(app, tech):
    assert tech.post("/patients/new", data=registration()).status_code == 302
    assert tech.post("/patients/SLE-01/batches").status_code == 302
    with app.app_context():
        first = patient("SLE-01").batches[0].batch_number
    response = tech.post("/patients/SLE-01/batches")
    assert response.status_code == 409
    assert f"Patient SLE-01 already has an open batch, {first}." in text_of(response)
    with app.app_context():
        assert count(Batch) == 1
        assert count(ProcessDefinitionRecord) == 1


def test_starting_a_batch_for_an_unknown_patient_is_404(app, tech):
    response = tech.post("/patients/NOBODY-9/batches")
    assert response.status_code == 404
    with app.app_context():
        assert count(Batch) == 0


# --- codes typed or scanned ---------------------------------------------------------------


@pytest.fixture
def registered(app, tech):
    """A registered patient with one batch: (batch number, COI)."""
    assert tech.post("/patients/new", data=registration()).status_code == 302
    assert tech.post("/patients/SLE-01/batches").status_code == 302
    with app.app_context():
        row = patient("SLE-01")
        return row.batches[0].batch_number, row.coi


def compact(code: str) -> str:
    return code.replace("-", "").lower()


@pytest.mark.requirements("P11-10h")
def test_scanning_a_batch_number_opens_the_batch(tech, registered):
    number, _ = registered
    for typed in (number, compact(number), f"  {number.lower()}  ", f"https://celltrail.example/batches/{number}",
                  f"https://celltrail.example/batches/{number}/"):
        response = tech.get("/scan", query_string={"code": typed})
        assert response.status_code == 302, typed
        assert response.headers["Location"].endswith(f"/batches/{number}"), typed


@pytest.mark.requirements("P11-10h")
def test_scanning_a_coi_opens_the_patient(tech, registered):
    _, coi = registered
    for typed in (coi, compact(coi), f"https://celltrail.example/coi/{coi}"):
        response = tech.get("/scan", query_string={"code": typed})
        assert response.status_code == 302, typed
        assert response.headers["Location"].endswith("/patients/SLE-01"), typed


def wrong_check(code: str) -> str:
    good = code[-1]
    return code[:-1] + ("A" if good != "A" else "B")


@pytest.mark.requirements("P11-10h", "COI-1")
def test_a_wrong_check_character_is_refused_where_it_is_scanned(tech, registered):
    number, coi = registered
    for typed in (wrong_check(number), wrong_check(coi), compact(wrong_check(number))):
        response = tech.get("/scan", query_string={"code": typed})
        assert response.status_code == 400, typed
        assert "the check character does not match" in text_of(response)


@pytest.mark.requirements("P11-10h")
@pytest.mark.parametrize("typed", ["", "   ", "hello", "B-A9999", "x" * 500])
def test_text_that_is_no_code_is_refused_by_the_scan_box(tech, registered, typed):
    response = tech.get("/scan", query_string={"code": typed})
    assert response.status_code == 400
    assert "batch number" in text_of(response) or "COI" in text_of(response)


def test_an_unknown_well_formed_code_is_404(tech, registered):
    year = datetime.now(UTC).year
    unknown_batch = str(make_code(CodeKind.BATCH, "A9999", year, 99))
    unknown_coi = str(make_code(CodeKind.COI, "A9999", year, 99))
    response = tech.get("/scan", query_string={"code": unknown_batch})
    assert response.status_code == 404
    assert f"No batch {unknown_batch} is registered" in text_of(response)
    response = tech.get("/scan", query_string={"code": unknown_coi})
    assert response.status_code == 404
    assert f"No patient with COI {unknown_coi} is registered" in text_of(response)


@pytest.mark.requirements("P11-10h", "COI-1")
def test_batch_urls_check_the_batch_number(app, tech, registered):
    number, _ = registered
    assert tech.get(f"/batches/{number}").status_code == 200
    assert tech.get(f"/batches/{compact(number)}").status_code == 200
    response = tech.get(f"/batches/{wrong_check(number)}")
    assert response.status_code == 400
    assert "the check character does not match" in text_of(response)
    response = tech.get("/batches/not-a-batch")
    assert response.status_code == 400
    unknown = str(make_code(CodeKind.BATCH, "A9999", datetime.now(UTC).year, 99))
    response = tech.get(f"/batches/{unknown}")
    assert response.status_code == 404
    assert f"No batch {unknown} is registered in this lab." in text_of(response)
    with app.app_context():
        assert get_batch(number).state == "scheduled"

"""Equipment through HTTP: the register, the logbook with certificates, out of and back into
service (signed by QA), where-used, labels, and steps refusing unusable equipment."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.demo import INCUBATOR, OVERDUE_INCUBATOR, _certificate, equipment_code
from lab.extensions import db
from lab.models import Attachment, AuditEvent, Download, Equipment, EquipmentLogEntry, Signature
from lab.services.signatures import record_signatures
from tests.factories import PASSWORD, page_text, post_step, signature, snapshot
from tests.readback import decode, pages, text_of
from tests.test_verify_audit import tamper, verify
from workflows.codes import CodeKind, parse_code

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("EQP-1", "EQP-2")]
Login = Callable[..., FlaskClient]
TODAY = datetime.now(UTC).date()
PDF = _certificate("Calibration certificate", "Test")


def registration(**overrides: str) -> dict[str, str]:
    return {"name": "CO2 incubator #3", "kind": "incubator", "serial_number": "HC-50001", "location": "Clean room 3",
            "qualification": "qualified", "calibration_due": (TODAY + timedelta(days=200)).isoformat(), **overrides}


def log_form(certificate: bytes | None = PDF, filename: str = "cert.pdf", **overrides: Any) -> dict[str, Any]:
    data = {"kind": "calibration", "performed_on": (TODAY - timedelta(days=1)).isoformat(),
            "performed_by": "Acme Calibration, J. Smith", "what": "Temperature and CO2 against reference probe",
            "result": "pass", "next_due": (TODAY + timedelta(days=180)).isoformat(), **overrides}
    if certificate is not None:
        data["certificate"] = (BytesIO(certificate), filename)
    return data


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Equipment, EquipmentLogEntry, Attachment, Signature, AuditEvent)}


def state(app: Flask, code: str) -> tuple[bool, str, date | None, str | None]:
    with app.app_context():
        item = db.session.scalar(select(Equipment).where(Equipment.code == code))
        assert item is not None
        return item.active, item.qualification, item.calibration_due, item.out_of_service_reason


def demo_code(app: Flask, name: str) -> str:
    with app.app_context():
        return equipment_code(name)


def overdue_since(app: Flask) -> date:
    """The demo's overdue incubator's due date: ten days before the demo was seeded (read back,
    not worked out from TODAY, which is a day behind when a run crosses midnight UTC)."""
    with app.app_context():
        due = db.session.scalars(select(Equipment.calibration_due).filter_by(name=OVERDUE_INCUBATOR)).one()
    assert due is not None and due < datetime.now(UTC).date()
    return due


def register(login: Login, **overrides: str) -> str:
    response = login("super1").post("/equipment/new", data=registration(**overrides))
    assert response.status_code == 302, page_text(response)
    return response.headers["Location"].rsplit("/", 1)[-1]


# --- the register ----------------------------------------------------------------------------


def test_a_supervisor_registers_equipment_under_a_code_with_a_check_character(app, inventory, login):
    code = register(login)
    assert str(parse_code(code, CodeKind.EQUIPMENT)) == code
    page = page_text(login("super1").get(f"/equipment/{code}"))
    for expected in ("CO2 incubator #3", "Incubator", "HC-50001", "Clean room 3", "In service", "Qualified",
                     (TODAY + timedelta(days=200)).isoformat()):
        assert expected in page
    with app.app_context():
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "equipment.register")) is not None
    listing = page_text(login("tech1").get("/equipment/"))
    assert code in listing and "CO2 incubator #3" in listing and "Clean room 3" in listing


def test_the_list_flags_overdue_and_soon_due_calibration(app, inventory, login):
    register(login, name="Soon due incubator", serial_number="HC-1",
             calibration_due=(TODAY + timedelta(days=10)).isoformat())
    response = login("tech1").get("/equipment/")
    page = page_text(response)
    assert response.status_code == 200
    assert "OVERDUE" in page and "DUE SOON" in page
    assert demo_code(app, OVERDUE_INCUBATOR) in page


def test_the_label_prints_the_code_as_text_and_qr(app, inventory, login):
    code = register(login)
    response = login("tech1").get(f"/equipment/{code}/label.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = text_of(response.data)
    for expected in ("EQUIPMENT", code, "CO2 incubator #3", "Serial no.: HC-50001", "Location: Clean room 3",
                     f"Calibration due: {(TODAY + timedelta(days=200)).isoformat()}"):
        assert expected in text
    [image] = pages(response.data, 203)
    assert [barcode.text for barcode in decode(image)] == [code]
    with app.app_context():  # the print is on record, with the PDF's SHA-256
        printed = db.session.scalars(select(Download).where(Download.kind == "equipment_label")).one()
        assert (printed.detail, printed.downloaded_by.username) == (code, "tech1")
        assert printed.digest == hashlib.sha256(response.data).hexdigest()


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"name": ""}, "name", "Enter the instrument's name"),
    ({"kind": "toaster"}, "kind", "Choose the kind of equipment the process steps ask for."),
    ({"serial_number": ""}, "serial_number", "Enter the manufacturer's serial number."),
    ({"location": ""}, "location", "Say where the instrument stands."),
    ({"calibration_due": "2020-01-01"}, "calibration_due", "The calibration due date cannot be in the past"),
    ({"calibration_due": "soon"}, "calibration_due", "Enter a date such as 2026-11-30."),
    ({"serial_number": "HC-40877"}, "serial_number", "Serial number HC-40877 is already registered for CO2 incubator #2"),
])
def test_bad_registrations_are_refused_next_to_the_field(app, inventory, login, overrides, field, message):
    client = login("super1")
    before = counts(app)
    response = client.post("/equipment/new", data=registration(**overrides))
    assert response.status_code == 422
    page = page_text(response)
    assert message in page
    assert f'id="{field}-error"' in response.get_data(as_text=True)
    assert counts(app) == before


def test_the_same_serial_number_is_allowed_for_another_type(app, inventory, login):
    code = register(login, kind="biosafety_cabinet", serial_number="HC-40877", name="Cabinet with a clashing serial")
    assert code.startswith("E-")


@pytest.mark.parametrize("username", ["tech1", "qc1", "auditor1", "admin"])
def test_only_supervisors_and_qa_register_equipment(app, inventory, login, username):
    client = login(username)
    before = counts(app)
    assert client.get("/equipment/new").status_code == 403
    assert client.post("/equipment/new", data=registration()).status_code == 403
    assert counts(app) == before


@pytest.mark.parametrize("code", ["E-A9999-26-9999-0", "E-A9999-26-0001-0", "NOPE", "E" * 80])
def test_an_unknown_or_malformed_code_is_404_with_the_reason(app, inventory, login, code):
    response = login("tech1").get(f"/equipment/{code}")
    assert response.status_code == 404
    page = page_text(response)
    assert "check character does not match" in page or "is registered in this lab" in page


# --- the logbook -----------------------------------------------------------------------------


def test_a_passed_calibration_with_its_certificate_moves_the_due_date(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    client = login("tech1")
    response = client.post(f"/equipment/{code}/log", data=log_form(), content_type="multipart/form-data")
    assert response.status_code == 302, page_text(response)
    assert state(app, code)[2] == TODAY + timedelta(days=180)
    page = page_text(client.get(f"/equipment/{code}"))
    assert "Acme Calibration, J. Smith" in page and "cert.pdf" in page
    assert page.index("Acme Calibration") < page.index("Demo Calibration Services")  # newest first
    with app.app_context():
        entry = db.session.scalars(select(EquipmentLogEntry).order_by(EquipmentLogEntry.id.desc())).first()
        assert entry is not None and entry.attachment is not None
        link = f"/attachments/{entry.attachment.id}/cert.pdf"
    assert link in page
    assert client.get(link).data == PDF


def test_a_failed_calibration_takes_the_instrument_out_of_service(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    response = login("tech1").post(f"/equipment/{code}/log", data=log_form(result="fail", next_due=""),
                                   content_type="multipart/form-data")
    assert response.status_code == 302
    active, _, _, reason = state(app, code)
    assert not active and reason and reason.startswith("calibration failed on")


def test_a_failed_qualification_makes_a_step_refuse_the_instrument(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, INCUBATOR)
    response = login("qa1").post(f"/equipment/{code}/log", data=log_form(None, kind="qualification", result="fail",
                                                                         next_due=""))
    assert response.status_code == 302
    assert state(app, code)[1] == "not_qualified"
    tech = login("tech1")
    before = snapshot(app, number)
    response = post_step(app, tech, number, "expansion", culture_day="7", incubator=code)
    assert response.status_code == 422
    assert f"CO2 incubator #1 {code} is NOT QUALIFIED" in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"performed_on": (TODAY + timedelta(days=2)).isoformat()}, "performed_on", "is in the future"),
    ({"performed_on": ""}, "performed_on", "Enter the day the work was done."),
    ({"next_due": (TODAY - timedelta(days=5)).isoformat()}, "next_due", "The next due date must come after"),
    ({"next_due": ""}, "next_due", "A passed calibration needs the date the next one is due."),
    ({"performed_by": ""}, "performed_by", "Say who did the work"),
    ({"what": ""}, "what", "Say what was done"),
    ({"kind": "polishing"}, "kind", "Choose calibration, maintenance, cleaning or qualification."),
    ({"result": "maybe"}, "result", "Choose pass or fail."),
    ({"certificate": b"MZ\x90\x00 not a certificate"}, "certificate", "is not a PDF, PNG or JPEG file"),
    ({"certificate": b"%PDF-" + b"0" * (400 * 1024)}, "certificate", "The file is larger than"),
])
def test_bad_logbook_entries_are_refused_next_to_the_field(app, inventory, login, overrides, field, message):
    app.config["ATTACHMENT_MAX_BYTES"] = 300 * 1024  # small: an oversized upload under 500 KB is not spooled to disk
    code = demo_code(app, INCUBATOR)
    client = login("tech1")
    before, due = counts(app), state(app, code)
    certificate = overrides.pop("certificate", PDF)
    response = client.post(f"/equipment/{code}/log", data=log_form(certificate, "upload.bin", **overrides),
                                   content_type="multipart/form-data")
    assert response.status_code == 422
    assert message in page_text(response)
    assert f'id="{field}-error"' in response.get_data(as_text=True)
    assert counts(app) == before and state(app, code) == due


@pytest.mark.parametrize("username", ["qc1", "auditor1", "admin"])
def test_only_lab_staff_write_the_logbook(app, inventory, login, username):
    code = demo_code(app, INCUBATOR)
    client = login(username)
    before = counts(app)
    response = client.post(f"/equipment/{code}/log", data=log_form(), content_type="multipart/form-data")
    assert response.status_code == 403
    assert counts(app) == before


# --- out of service and back -----------------------------------------------------------------


def take_out(app: Flask, login: Login, code: str, reason: str = "Door seal torn") -> None:
    response = login("super1").post(f"/equipment/{code}/out-of-service", data={"reason": reason})
    assert response.status_code == 302, page_text(response)


def test_out_of_service_equipment_is_refused_at_a_step_with_the_reason(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, INCUBATOR)
    take_out(app, login, code)
    assert state(app, code)[0] is False
    client = login("tech1")
    before = snapshot(app, number)
    response = post_step(app, client, number, "expansion", culture_day="7", incubator=code)
    assert response.status_code == 422
    assert f"CO2 incubator #1 {code} is OUT OF SERVICE (Door seal torn): use another one." in page_text(response)
    assert snapshot(app, number) == before
    page = page_text(login("tech1").get(f"/equipment/{code}"))
    assert "OUT OF SERVICE" in page and "Taken out of service" in page


def test_taking_out_of_service_needs_a_reason_and_a_supervisor(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    client = login("super1")
    before = counts(app)
    response = client.post(f"/equipment/{code}/out-of-service", data={"reason": " "})
    assert response.status_code == 422 and "Say why the instrument is taken out of service." in page_text(response)
    assert counts(app) == before
    client = login("tech1")
    before = counts(app)
    assert client.post(f"/equipment/{code}/out-of-service", data={"reason": "x"}).status_code == 403
    assert counts(app) == before and state(app, code)[0] is True


def test_qa_returns_equipment_to_service_with_a_signature(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, INCUBATOR)
    take_out(app, login, code)
    response = login("qa1").post(f"/equipment/{code}/return-to-service",
                                 data={"reason": "Seal replaced, calibration checked", **signature("qa1")})
    assert response.status_code == 302, page_text(response)
    assert state(app, code)[0] is True and state(app, code)[3] is None
    with app.app_context():
        entry = db.session.scalars(select(EquipmentLogEntry).where(EquipmentLogEntry.kind == "returned_to_service")
                                   ).one()
        [(signed, valid)] = record_signatures(entry)
        assert signed.meaning == "returned to service" and valid and signed.printed_name == "Quentin Assurance"
    page = page_text(login("tech1").get(f"/equipment/{code}"))
    assert "Returned to service" in page and "Signed by Quentin Assurance, meaning “returned to service”" in page
    assert post_step(app, login("tech1"), number, "expansion", culture_day="12", incubator=code).status_code == 302


def test_a_non_qa_user_cannot_return_equipment_to_service(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    take_out(app, login, code)
    for username in ("super1", "tech1", "admin"):
        client = login(username)
        before = counts(app)
        response = client.post(f"/equipment/{code}/return-to-service", data={"reason": "fixed", **signature(username)})
        assert response.status_code == 403
        assert counts(app) == before
    assert state(app, code)[0] is False


def test_a_wrong_signature_password_returns_nothing_to_service(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    take_out(app, login, code)
    client = login("qa1")
    before = counts(app)
    response = client.post(f"/equipment/{code}/return-to-service",
                           data={"reason": "fixed", "username": "qa1", "password": PASSWORD + "x"})
    assert 400 <= response.status_code < 500
    assert 'id="password-error"' in response.get_data(as_text=True)
    after = counts(app)
    assert (after["Equipment"], after["EquipmentLogEntry"], after["Signature"]) == (
        before["Equipment"], before["EquipmentLogEntry"], before["Signature"])
    assert state(app, code)[0] is False


def test_returning_equipment_already_in_service_is_refused(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    response = login("qa1").post(f"/equipment/{code}/return-to-service", data={"reason": "x", **signature("qa1")})
    assert response.status_code == 422 and "is already in service" in page_text(response)


# --- steps and where-used --------------------------------------------------------------------


def test_the_calibration_refusal_stays(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, OVERDUE_INCUBATOR)
    response = post_step(app, login("tech1"), number, "expansion", culture_day="7", incubator=code)
    assert response.status_code == 422
    assert f"CO2 incubator #2 {code} was due for calibration on {overdue_since(app).isoformat()}" \
        in page_text(response)


def test_a_mistyped_check_character_is_refused_at_a_step(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, INCUBATOR)
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    response = post_step(app, login("tech1"), number, "expansion", culture_day="7", incubator=wrong)
    assert response.status_code == 422
    assert "check character does not match" in page_text(response)


def test_a_code_typed_without_hyphens_in_lower_case_is_accepted(app, make_batch, login):
    number = make_batch(until="harvest")
    code = demo_code(app, INCUBATOR)
    response = post_step(app, login("tech1"), number, "expansion", culture_day="12",
                         incubator=code.replace("-", "").lower())
    assert response.status_code == 302


def test_the_equipment_page_lists_every_batch_step_that_used_it(app, make_batch, login):
    number = make_batch()
    page = page_text(login("qa1").get(f"/equipment/{demo_code(app, INCUBATOR)}"))
    assert "Where used" in page and number in page and "Expansion" in page
    cabinet = page_text(login("qa1").get(f"/equipment/{demo_code(app, 'Biosafety cabinet class II, room 2')}"))
    assert cabinet.count(number) >= 3  # transduction, harvest, formulation


def test_verify_audit_checks_the_return_to_service_signature(app, inventory, login):
    code = demo_code(app, INCUBATOR)
    take_out(app, login, code)
    response = login("qa1").post(f"/equipment/{code}/return-to-service",
                                 data={"reason": "Seal replaced", **signature("qa1")})
    assert response.status_code == 302
    result = verify(app)
    assert result.exit_code == 0, result.output
    tamper(app, "UPDATE equipment_log SET what = 'Never repaired' WHERE kind = 'returned_to_service'")
    result = verify(app)
    assert result.exit_code != 0 and "the equipment log entry" in result.output and "TAMPERED" in result.output


def test_equipment_needing_attention_is_listed_for_the_dashboard(app, inventory, login):
    from lab.services.equipment import needing_attention

    take_out(app, login, demo_code(app, INCUBATOR))
    with app.app_context():
        found = {item.name: why for item, why in needing_attention()}
    assert found == {INCUBATOR: "out of service",
                     OVERDUE_INCUBATOR: f"calibration overdue since {overdue_since(app)}"}

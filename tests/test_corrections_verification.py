"""Corrections that never erase, and second-person verification with an electronic signature."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Signature
from lab.services.signatures import current_values, entry_sha256
from tests.factories import PASSWORD, entries, get_batch, page_text, signature, signed_in, snapshot
from workflows.formatting import format_datetime

pytestmark = pytest.mark.requirements("A11-12.4")


def receipt_id(app: Flask, number: str) -> int:
    with app.app_context():
        return entries(number, "receipt")[0].id


def version(app: Flask, number: str) -> int:
    with app.app_context():
        return get_batch(number).version


def correct(app: Flask, client: FlaskClient, number: str, field: str, value: str, reason: str,
            step_key: str = "receipt") -> Any:
    with app.app_context():
        entry_id = entries(number, step_key)[0].id
    return client.post(f"/batches/{number}/entries/{entry_id}/fields/{field}/correct",
                       data={"value": value, "reason": reason, "batch_version": version(app, number),
                             **signature(signed_in(app, client))})


def verify(app: Flask, client: FlaskClient, number: str, password: str = PASSWORD, step_key: str = "receipt") -> Any:
    with app.app_context():
        entry_id = entries(number, step_key)[0].id
    return client.post(f"/batches/{number}/entries/{entry_id}/verify",
                       data={**signature(signed_in(app, client), password), "batch_version": version(app, number)})


def receipt_state(client: FlaskClient, number: str) -> str:
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    match = re.search(r'id="step-receipt">\s*<h3>[^<]*<span class="badge [^"]*">([^<]*)</span>', page)
    assert match is not None
    return match.group(1)


# --- corrections ---------------------------------------------------------------------------


@pytest.mark.requirements("ALCOA-COMPLETE", "P11-10e")
def test_a_correction_keeps_the_old_value_and_shows_it_struck_through(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    form = client.get(f"/batches/{number}/entries/{receipt_id(app, number)}/fields/volume_ml/correct")
    assert form.status_code == 200
    assert "Current value: <strong>180 mL</strong>" in page_text(form)
    with app.app_context():
        [old] = [v for v in entries(number, "receipt")[0].values if v.field_key == "volume_ml"]
        old_id, old_recorded_at = old.id, old.recorded_at
    before = datetime.now(UTC)
    response = correct(app, client, number, "volume_ml", "185", "Transcription error: scale print-out reads 185 mL.")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/batches/{number}#step-receipt")
    with app.app_context():
        entry = entries(number, "receipt")[0]
        rows = [v for v in entry.values if v.field_key == "volume_ml"]
        assert len(rows) == 2
        kept, new = rows
        assert (kept.id, kept.text, kept.number, kept.supersedes_id, kept.reason) == (old_id, "180", 180.0, None, None)
        assert kept.recorded_at == old_recorded_at
        assert new.supersedes_id == old_id
        assert (new.text, new.number, new.unit) == ("185", 185.0, "mL")
        assert new.reason == "Transcription error: scale print-out reads 185 mL."
        assert new.recorded_by.username == "tech1"
        assert before - timedelta(seconds=1) <= new.recorded_at <= datetime.now(UTC)
        assert current_values(entry)["volume_ml"].id == new.id
        assert entry.performed_by.username == "tech1"  # the entry itself is untouched
        when = new.recorded_at.strftime("%Y-%m-%d %H:%M")
    page = page_text(client.get(f"/batches/{number}"))
    assert "<del>180 mL</del>" in page
    assert (f"Changed since original entry: corrected {when} UTC by\n              Tess Technician. "
            "Reason: “Transcription error: scale print-out reads 185 mL.”") in page
    assert "185 mL" in page
    history = page_text(client.get(f"/batches/{number}/entries/{receipt_id(app, number)}/fields/volume_ml/correct"))
    assert "Current value: <strong>185 mL</strong>" in history
    assert "Transcription error" in history


@pytest.mark.requirements("ALCOA-COMPLETE", "P11-10e")
@pytest.mark.parametrize("reason", ["", "   "])
def test_a_correction_without_a_reason_is_refused(app, make_batch, login, reason):
    number = make_batch(until="enrichment")
    client = login("tech1")
    before = snapshot(app, number)
    response = correct(app, client, number, "volume_ml", "185", reason)
    assert response.status_code == 422
    assert "Say why the value is corrected." in page_text(response)
    assert snapshot(app, number) == before


def test_a_correction_to_the_same_value_is_refused(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    before = snapshot(app, number)
    for same in ("180", " 180 ", "180 mL"):
        response = correct(app, client, number, "volume_ml", same, "Checked again.")
        assert response.status_code == 422, same
        assert "The new value is the same as the current one." in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.parametrize(("field", "value", "message"), [
    ("volume_ml", "abc", "Volume: enter a number such as 91.5, not 'abc'."),
    ("volume_ml", "-5", "Volume must be between 0 and 2000 mL."),
    ("volume_ml", "nan", "Volume: enter a number such as 91.5, not 'nan'."),
    ("volume_ml", "", "Enter a value for Volume."),
    ("coi_on_bag", "CH-A9999-26-000002", "COI on the bag label: 'CH-A9999-26-000002' is not a COI"),
    ("decision", "maybe", "Decision"),
])
def test_an_invalid_corrected_value_is_refused(app, make_batch, login, field, value, message):
    number = make_batch(until="enrichment")
    client = login("tech1")
    before = snapshot(app, number)
    response = correct(app, client, number, field, value, "Retyped.")
    assert response.status_code == 422
    assert message in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.requirements("PROC-3")
def test_correcting_into_an_out_of_limit_value_opens_a_deviation(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    response = correct(app, client, number, "volume_ml", "40", "Re-weighed: 40 mL.")
    assert response.status_code == 302
    with app.app_context():
        batch = get_batch(number)
        # The apheresis bag was made with the old volume: reconciling it is a deviation of its own
        # (tests/test_corrections_reach_containers.py).
        [deviation] = [d for d in batch.deviations if d.source == "limit"]
        assert [d.source for d in batch.deviations] == ["limit", "correction"]
        assert deviation.field_key == "volume_ml"
        assert deviation.status == "open"
        assert deviation.description == "Re-weighed: 40 mL."
        assert deviation.title == "Apheresis receipt (corrected): Volume 40 mL is below the limit of 50 mL."
        new = current_values(entries(number, "receipt")[0])["volume_ml"]
        assert new.out_of_limit is True
    page = page_text(client.get(f"/batches/{number}"))
    assert "Open deviations (2)" in page
    assert "Volume 40 mL is below the limit of 50 mL." in page


@pytest.mark.requirements("ALCOA-COMPLETE", "P11-10e")
def test_a_correction_to_a_verified_entry_voids_its_verification(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    assert receipt_state(client, number) == "verified"
    page = page_text(client.get(f"/batches/{number}"))
    assert "Signature no longer matches" not in page
    assert correct(app, client, number, "volume_ml", "185", "Transcription error.").status_code == 302
    page = page_text(client.get(f"/batches/{number}"))
    assert re.search(r"✖ <strong>Theo Second</strong> — verified", page)
    assert "Signature no longer matches: the entry changed after it was signed." in page
    assert "Awaiting verification by a second person." in page
    assert receipt_state(client, number) == "done"
    with app.app_context():
        [signature] = db.session.scalars(select(Signature).where(Signature.meaning == "verified")).all()
        entry = entries(number, "receipt")[0]
        assert signature.record_id == entry.id
        assert signature.content_sha256 != entry_sha256(entry)  # the old signature stays, not matching
    # tech2 verifies the corrected entry again
    assert verify(app, login("tech2"), number).status_code == 302
    assert receipt_state(client, number) == "verified"
    with app.app_context():
        signatures = db.session.scalars(select(Signature).where(Signature.meaning == "verified").order_by(Signature.id)).all()
        assert len(signatures) == 2
        assert signatures[1].content_sha256 == entry_sha256(entries(number, "receipt")[0])


@pytest.mark.requirements("P11-10g")
def test_a_role_that_may_not_correct_gets_403(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("qc1")
    url = f"/batches/{number}/entries/{receipt_id(app, number)}/fields/volume_ml/correct"
    before = snapshot(app, number)
    assert client.get(url).status_code == 403
    response = correct(app, client, number, "volume_ml", "185", "I think so.")
    assert response.status_code == 403
    assert "Only a lab technician may correct Apheresis receipt" in page_text(response)
    assert snapshot(app, number) == before


# --- verification ------------------------------------------------------------------------------


@pytest.mark.requirements("PROC-4", "A11-6")
def test_verification_by_a_second_person_signs_the_entry(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    assert receipt_state(client, number) == "done"
    form = client.get(f"/batches/{number}/entries/{receipt_id(app, number)}/verify")
    assert form.status_code == 200
    assert "Signing as <strong>Theo Second</strong> (tech2), meaning <strong>verified</strong>" in page_text(form)
    before = datetime.now(UTC)
    response = verify(app, client, number)
    assert response.status_code == 302
    with app.app_context():
        entry = entries(number, "receipt")[0]
        [signature] = db.session.scalars(select(Signature).where(Signature.meaning == "verified")).all()
        assert signature.signer.username == "tech2"
        assert signature.printed_name == "Theo Second"
        assert signature.meaning == "verified"
        assert (signature.record_type, signature.record_id, signature.batch_id) == (
            "step_entry", entry.id, entry.batch_id)
        assert signature.signed_at.tzinfo is not None
        assert before - timedelta(seconds=1) <= signature.signed_at <= datetime.now(UTC)
        assert signature.content_sha256 == entry_sha256(entry)
        assert re.fullmatch(r"[0-9a-f]{64}", signature.content_sha256)
        signed = format_datetime(signature.signed_at, ZoneInfo(app.config["TIMEZONE"]))  # the one date-time form
    page = page_text(client.get(f"/batches/{number}"))
    assert f"✔ <strong>Theo Second</strong> — verified — {signed}" in page
    assert "Apheresis receipt verified and signed by Theo Second." in page
    assert receipt_state(client, number) == "verified"


@pytest.mark.requirements("PROC-13")
def test_self_verification_is_refused(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech1")
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "/verify" not in page  # no button for the performer
    before = snapshot(app, number)
    response = verify(app, client, number)
    assert response.status_code == 403
    assert "You recorded or corrected this entry: a different person must verify it" in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.requirements("ALCOA-COMPLETE", "P11-10e")
def test_correcting_a_value_makes_the_corrector_an_author_too(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    tech2 = login("tech2")
    assert correct(app, tech2, number, "volume_ml", "185", "Transcription error.").status_code == 302
    page = tech2.get(f"/batches/{number}").get_data(as_text=True)
    assert "/verify" not in page
    before = snapshot(app, number)
    response = verify(app, tech2, number)
    assert response.status_code == 403
    assert "You recorded or corrected this entry: a different person must verify it" in page_text(response)
    assert snapshot(app, number) == before
    # a third person may (a supervisor acts as a technician)
    assert verify(app, login("super1"), number).status_code == 302
    with app.app_context():
        [signature] = db.session.scalars(select(Signature).where(Signature.meaning == "verified")).all()
        assert signature.printed_name == "Sam Supervisor"


@pytest.mark.requirements("PROC-4", "A11-6")
@pytest.mark.parametrize(("password", "status", "message"), [
    ("wrong-password", 403, "The password is wrong: nothing was signed."),
    ("", 422, "Enter your password to sign."),
])
def test_a_wrong_or_empty_password_signs_nothing(app, make_batch, login, password, status, message):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    before = snapshot(app, number)
    response = verify(app, client, number, password=password)
    assert response.status_code == status
    assert message in page_text(response)
    after = snapshot(app, number)
    if password:  # a refused attempt is kept in the audit trail (21 CFR 11.300(d)), nothing else
        assert after.pop("AuditEvent") > before.pop("AuditEvent")
    assert after == before
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(select(Signature).where(Signature.meaning == "verified").subquery())) == 0


@pytest.mark.requirements("PROC-4", "A11-6")
def test_an_entry_is_verified_once(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    assert verify(app, login("tech2"), number).status_code == 302
    for username in ("tech2", "super1"):
        client = login(username)
        before = snapshot(app, number)
        response = verify(app, client, number)
        assert response.status_code == 409
        assert "This entry is already verified." in page_text(response)
        assert snapshot(app, number) == before


@pytest.mark.requirements("P11-10g")
@pytest.mark.parametrize("username", ["qc1", "auditor1", "admin"])
def test_a_role_that_may_not_verify_gets_403(app, make_batch, login, username):
    number = make_batch(until="enrichment", verify=False)
    client = login(username)
    before = snapshot(app, number)
    assert client.get(f"/batches/{number}/entries/{receipt_id(app, number)}/verify").status_code == 403
    response = verify(app, client, number)
    assert response.status_code == 403
    assert "Only a lab technician may verify Apheresis receipt" in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.requirements("PROC-4", "A11-6")
def test_a_step_without_verification_cannot_be_verified(app, make_batch, login):
    number = make_batch(until="activation")
    client = login("tech2")
    before = snapshot(app, number)
    response = verify(app, client, number, step_key="enrichment")
    assert response.status_code == 409
    assert "T-cell enrichment does not need a second-person verification." in page_text(response)
    assert snapshot(app, number) == before

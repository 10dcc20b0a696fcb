"""The audit trail: every write commits with its audit entries in one transaction, and history
is never rewritten."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from lab import audit
from lab.exceptions import ImmutableRecordError
from lab.extensions import db
from lab.models import AuditEvent, Batch, Deviation, MaterialLot, Patient, Signature, StepEntry, StepValue
from lab.models.base import simulated_clock
from lab.services.patients import PatientInput, register_patient
from lab.services.signatures import Credentials
from lab.services.steps import correct_value, record_step
from tests.factories import PASSWORD, entries, get_batch, post_step, signature, step_values, user

pytestmark = pytest.mark.requirements("P11-10e", "A11-9", "A11-12.4", "ALCOA-ATTRIBUTABLE", "ALCOA-COMPLETE")


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def events(action: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(db.session.scalars(query))


def test_recording_a_step_writes_its_audit_entries(app, make_batch, login):
    number = make_batch(until="receipt")
    client = login("tech1")
    before = datetime.now(UTC)
    response = post_step(app, client, number, "receipt")
    assert response.status_code == 302
    after = datetime.now(UTC)
    with app.app_context():
        batch = get_batch(number)
        [entry] = entries(number, "receipt")
        found = events("step.record")
        assert found, "no audit entries for the recorded step"
        assert {e.actor_username for e in found} == {"tech1"}
        assert {e.actor_id for e in found} == {user("tech1").id}
        assert {e.batch_id for e in found} == {batch.id}
        assert {e.reason for e in found} == {None}
        for event in found:
            assert event.occurred_at.tzinfo is not None
            assert event.occurred_at.utcoffset() == timedelta(0)
            assert before - timedelta(seconds=2) <= event.occurred_at <= after + timedelta(seconds=2)
        assert {e.table_name for e in found} == {"step_entries", "step_values", "batches", "containers", "signatures"}

        [entry_row] = [e for e in found if e.table_name == "step_entries"]
        assert (entry_row.operation, entry_row.row_id, entry_row.field, entry_row.old_value) == (
            "insert", str(entry.id), None, None)
        content = json.loads(entry_row.new_value)
        assert content["step_key"] == "receipt"
        assert content["performed_by_id"] == str(user("tech1").id)

        value_rows = [e for e in found if e.table_name == "step_values"]
        assert len(value_rows) == len(entry.values) == 8
        assert {e.operation for e in value_rows} == {"insert"}
        assert {e.row_id for e in value_rows} == {str(v.id) for v in entry.values}
        volume = next(json.loads(e.new_value) for e in value_rows if json.loads(e.new_value)["field_key"] == "volume_ml")
        assert (volume["text"], volume["unit"], volume["out_of_limit"]) == ("180", "mL", "false")

        batch_rows = [e for e in found if e.table_name == "batches"]
        assert [(e.operation, e.row_id, e.field, e.old_value, e.new_value) for e in batch_rows] == [
            ("update", str(batch.id), "state", "scheduled", "in_process")]


def test_an_out_of_limit_entry_audits_its_deviation_with_the_comment(app, make_batch, login):
    number = make_batch(until="receipt")
    response = post_step(app, login("tech1"), number, "receipt", volume_ml="40", comment="Small collection.")
    assert response.status_code == 302
    with app.app_context():
        found = events("step.record")
        assert {e.reason for e in found} == {"Small collection."}
        [deviation] = [e for e in found if e.table_name == "deviations"]
        assert json.loads(deviation.new_value)["field_key"] == "volume_ml"
        assert json.loads(deviation.new_value)["status"] == "open"


def test_a_correction_is_audited_with_its_reason(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    with app.app_context():
        entry = entries(number, "receipt")[0]
        old = next(v for v in entry.values if v.field_key == "volume_ml")
        entry_id, old_id, version = entry.id, old.id, get_batch(number).version
    response = client.post(f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct",
                           data={"value": "185", "reason": "Scale print-out reads 185 mL.", "batch_version": version,
                                 **signature("tech1")})
    assert response.status_code == 302
    with app.app_context():
        found = events("step.correct")
        assert found
        assert {e.reason for e in found} == {"Scale print-out reads 185 mL."}
        assert {e.actor_username for e in found} == {"tech1"}
        [value_row] = [e for e in found if e.table_name == "step_values"]
        content = json.loads(value_row.new_value)
        assert (content["text"], content["supersedes_id"], content["reason"]) == (
            "185", str(old_id), "Scale print-out reads 185 mL.")
        assert value_row.batch_id == get_batch(number).id
        # the old value was not updated: no update entry for step_values
        assert not [e for e in events() if e.table_name == "step_values" and e.operation == "update"]


def test_a_verification_is_audited(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    with app.app_context():
        entry_id, version = entries(number, "receipt")[0].id, get_batch(number).version
    response = client.post(f"/batches/{number}/entries/{entry_id}/verify",
                           data={"username": "tech2", "password": PASSWORD, "batch_version": version})
    assert response.status_code == 302
    with app.app_context():
        found = events("step.verify")
        [signature] = [e for e in found if e.table_name == "signatures"]
        content = json.loads(signature.new_value)
        assert (content["meaning"], content["printed_name"], content["record_id"]) == (
            "verified", "Theo Second", str(entry_id))
        assert {e.actor_username for e in found} == {"tech2"}


def test_refused_requests_leave_no_audit_entries(app, make_batch, login):
    number = make_batch(until="receipt")
    other = make_batch(until="enrichment", verify=False, ref="SLE-02")
    client = login("tech1")
    with app.app_context():
        before = count(AuditEvent)
        other_entry, other_version = entries(other, "receipt")[0].id, get_batch(other).version
    refusals = [
        post_step(app, client, number, "receipt", volume_ml="-5"),  # invalid value
        post_step(app, client, number, "receipt", volume_ml="40"),  # out of limit without a comment
        post_step(app, client, number, "harvest"),  # out of order
        post_step(app, client, number, "receipt", coi_on_bag="CH-A9999-26-000009"),  # not a COI
        client.post(f"/batches/{other}/entries/{other_entry}/verify",  # self-verification
                    data={"password": PASSWORD, "batch_version": other_version}),
        client.post(f"/batches/{other}/entries/{other_entry}/fields/volume_ml/correct",  # no reason
                    data={"value": "185", "reason": "", "batch_version": other_version}),
        client.post("/patients/new", data={"patient_ref": "SLE-03", "initials": "A1", "date_of_birth": "1980-01-01",
                                           "weight_kg": "70", "indication": "SLE"}),
        client.post("/patients/SLE-01/batches"),  # already has an open batch
    ]
    assert [r.status_code for r in refusals] == [422, 422, 409, 422, 403, 422, 422, 409]
    with app.app_context():
        assert count(AuditEvent) == before
    tech2 = login("tech2")
    with app.app_context():
        before = count(AuditEvent)  # signing in records the time of the login
    response = tech2.post(f"/batches/{other}/entries/{other_entry}/verify",
                          data={**signature("tech2", "wrong"), "batch_version": other_version})
    assert response.status_code == 403
    with app.app_context():  # only the refused signing attempt is kept (21 CFR 11.300(d))
        assert {e.action for e in events()[before:]} == {"signature.refused"}


def test_the_audit_entries_roll_back_with_the_change(app, make_batch):
    number = make_batch(until="receipt")
    with app.app_context():
        batch = get_batch(number)
        before = (count(StepEntry), count(StepValue), count(AuditEvent), batch.state, batch.version)
        raw = step_values("receipt", when=datetime.now(UTC), batch=batch)
        record_step(batch, "receipt", raw, comment="", expected_version=batch.version, actor=user("tech1"),
                    credentials=Credentials(PASSWORD))
        # flushed, not committed: the rows and their audit entries are in the same transaction
        assert count(StepEntry) == before[0] + 1
        assert count(AuditEvent) > before[2]
        if db.engine.dialect.name == "postgresql":  # another connection sees none of it yet
            with db.engine.connect() as other:
                assert other.scalar(text("SELECT count(*) FROM audit_events")) == before[2]
                assert other.scalar(text("SELECT count(*) FROM step_entries")) == before[0]
        db.session.rollback()
    with app.app_context():
        batch = get_batch(number)
        assert (count(StepEntry), count(StepValue), count(AuditEvent), batch.state, batch.version) == before
        assert events("step.record") == []


def test_a_failed_correction_leaves_neither_value_nor_audit_entry(app, make_batch):
    number = make_batch(until="enrichment")
    with app.app_context():
        batch = get_batch(number)
        entry = entries(number, "receipt")[0]
        before = (count(StepValue), count(AuditEvent))
        correct_value(batch, entry, "volume_ml", "185", reason="Typo.", expected_version=batch.version,
                      actor=user("tech1"), credentials=Credentials(PASSWORD))
        assert count(StepValue) == before[0] + 1
        db.session.rollback()
        assert (count(StepValue), count(AuditEvent)) == before
        assert events("step.correct") == []


# --- history is never rewritten -------------------------------------------------------------------


@pytest.fixture
def recorded(app: Flask, make_batch: Any) -> str:
    """A batch whose receipt is recorded and verified (so it has a signature)."""
    return make_batch(until="enrichment")


def test_step_values_cannot_be_updated_or_deleted(app, recorded):
    with app.app_context():
        value = entries(recorded, "receipt")[0].values[0]
        with pytest.raises(ImmutableRecordError, match="append-only"), audit.action("test.tamper", actor=user("tech1")):
            value.text = "999"  # refused even inside an action
        db.session.rollback()
        value = entries(recorded, "receipt")[0].values[0]
        with pytest.raises(ImmutableRecordError, match="never deleted"), audit.action("test.tamper", actor=user("tech1")):
            db.session.delete(value)
        db.session.rollback()
        value = entries(recorded, "receipt")[0].values[0]
        value.out_of_limit = True
        with pytest.raises(ImmutableRecordError, match="append-only"):
            db.session.flush()
        db.session.rollback()
        assert entries(recorded, "receipt")[0].values[0].text != "999"


def test_step_entries_cannot_be_updated_or_deleted(app, recorded):
    with app.app_context():
        entry = entries(recorded, "receipt")[0]
        entry.comment = "rewritten"
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        entry = entries(recorded, "receipt")[0]
        entry.performed_at = entry.performed_at - timedelta(hours=1)
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        db.session.delete(entries(recorded, "receipt")[0])
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        assert entries(recorded, "receipt")[0].comment is None


def test_signatures_cannot_be_updated_or_deleted(app, recorded):
    with app.app_context():
        signature = db.session.scalars(select(Signature)).first()
        assert signature is not None
        original = signature.printed_name
        signature.printed_name = "Somebody Else"
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        db.session.delete(db.session.scalars(select(Signature)).first())
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        assert db.session.scalars(select(Signature)).first().printed_name == original


def test_audited_rows_and_audit_entries_are_never_deleted(app, recorded):
    with app.app_context():
        for row in (get_batch(recorded), db.session.scalars(select(Patient)).first(),
                    db.session.scalars(select(AuditEvent)).first()):
            db.session.delete(row)
            with pytest.raises(ImmutableRecordError):
                db.session.flush()
            db.session.rollback()
        event = db.session.scalars(select(AuditEvent)).first()
        event.new_value = "{}"
        with pytest.raises(ImmutableRecordError):
            db.session.flush()
        db.session.rollback()
        assert count(Batch) == 1


def test_an_audited_change_outside_an_action_is_refused(app, recorded):
    with app.app_context():
        before = count(AuditEvent)
        batch = get_batch(recorded)
        batch.state = "released"
        with pytest.raises(RuntimeError, match=r"outside audit\.action"):
            db.session.flush()
        db.session.rollback()
        assert get_batch(recorded).state == "in_process"
        db.session.add(MaterialLot(code="NEW-0001", material="medium", name="Medium", lot_number="0001",
                                   supplier="Nobody", expiry_date=date(2030, 1, 1)))
        with pytest.raises(RuntimeError, match=r"outside audit\.action"):
            db.session.flush()
        db.session.rollback()
        with pytest.raises(RuntimeError, match=r"outside audit\.action"):
            register_patient(PatientInput("SLE-09", "AB", date(1980, 1, 1), 70.0, "SLE"), actor=user("tech1"))
            db.session.add(Deviation(number="DEV-X", batch_id=batch.id, source="limit", title="x",
                                     opened_by_id=user("tech1").id))
            db.session.flush()
        db.session.rollback()
        assert count(AuditEvent) == before
        assert count(MaterialLot) == 12  # the demo's lots
        assert db.session.scalar(select(Patient.id).where(Patient.patient_ref == "SLE-09")) is None


def _lot(code: str) -> MaterialLot:
    return MaterialLot(code=code, material="medium", name="Medium", lot_number=code, supplier="Nobody",
                       expiry_date=date(2030, 1, 1))


def test_an_action_on_the_simulated_clock_takes_its_time_and_says_it_is_demo_data(app, users):
    """seed-demo's history: entries at the simulated time, their reason marking them demo data;
    the same actions on the real clock are neither backdated nor marked."""
    with app.app_context():
        past = datetime.now(UTC) - timedelta(days=5)
        with simulated_clock(past) as clock:
            with audit.action("test.demo", actor=None):
                db.session.add(_lot("DEMO-1"))
            clock.set(past + timedelta(hours=2))
            with audit.action("test.demo", actor=user("tech1"), reason="Label smudged"):
                db.session.add(_lot("DEMO-2"))
        before = datetime.now(UTC)
        with audit.action("test.real", actor=None, reason="Label smudged"):
            db.session.add(_lot("REAL-1"))
        db.session.commit()
        first, second = events("test.demo")
        [real] = events("test.real")
        assert (first.occurred_at, first.reason) == (past, audit.DEMO_REASON)
        assert (second.occurred_at, second.reason) == (past + timedelta(hours=2), "Label smudged" + audit.DEMO_MARK)
        assert real.occurred_at >= before
        assert real.reason == "Label smudged"
        lots = {lot.code: lot.created_at for lot in db.session.scalars(select(MaterialLot))}
        assert (lots["DEMO-1"], lots["DEMO-2"]) == (past, past + timedelta(hours=2))
        assert lots["REAL-1"] >= before

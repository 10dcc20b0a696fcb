"""``flask --app lab verify-audit``: quiet when the trail and the signatures are what the
application wrote; exit 1 naming the first broken entry when someone edited, deleted or
inserted rows in the database behind its back (as a database superuser can)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import func, insert, select, text

from lab.audit_chain import append, entry_hash
from lab.extensions import db
from lab.models import AuditEvent, Signature, StepValue
from lab.services.audit_verify import verify_chain
from lab.services.signatures import Credentials
from lab.services.steps import correct_value
from tests.conftest import ON_POSTGRES
from tests.factories import PASSWORD, entries, get_batch, user
from tests.quality import close_all_deviations, record_results, release

pytestmark = pytest.mark.requirements("P11-10a", "P11-70")


def verify(app: Flask) -> Result:
    return app.test_cli_runner().invoke(args=["verify-audit"])


def tamper(app: Flask, *statements: str, **params: Any) -> None:
    """Run SQL behind the application's back, as a database superuser can: on PostgreSQL with
    triggers and foreign keys off for the transaction (replica role), on SQLite after dropping
    the triggers, with foreign keys off until it commits (a pragma, set before it begins)."""
    with app.app_context():
        if ON_POSTGRES:
            db.session.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            db.session.execute(text("PRAGMA foreign_keys = OFF"))
            db.session.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            db.session.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        for statement in statements:
            db.session.execute(text(statement), params)
        db.session.commit()
        if not ON_POSTGRES:
            db.session.execute(text("PRAGMA foreign_keys = ON"))
            db.session.commit()


def last_entry(app: Flask) -> dict[str, Any]:
    with app.app_context():
        return dict(db.session.execute(select(AuditEvent.__table__).order_by(AuditEvent.id.desc())
                                       .limit(1)).mappings().one())


@pytest.fixture
def released(app: Flask, make_batch: Callable[..., str]) -> str:
    """A batch recorded, verified, tested and released: a trail of a few hundred entries and
    signatures of every kind of record."""
    number = make_batch()
    record_results(app, number)
    close_all_deviations(app, number)
    release(app, number)
    return number


def test_an_untouched_trail_is_intact(app: Flask, released: str) -> None:
    result = verify(app)
    assert result.exit_code == 0, result.output
    last = last_entry(app)
    assert f"Audit trail: {last['id']} entries, last entry {last['id']}, sha256 {last['hash']}: chain intact." \
        in result.stdout
    with app.app_context():
        signatures = db.session.scalar(select(func.count()).select_from(Signature))
    assert f"Signatures: {signatures} checked, {signatures} match their records, 0 no longer match" in result.stdout
    assert "Intact: no sign of a change made behind the application." in result.stdout
    assert result.stderr == ""


def test_signatures_a_signed_correction_superseded_are_information(app: Flask,
                                                                  make_batch: Callable[..., str]) -> None:
    number = make_batch(until="enrichment")
    with app.app_context():
        batch = get_batch(number)
        entry = entries(number, "receipt")[0]
        signed_before = db.session.scalar(select(func.count()).select_from(Signature)
                                          .where(Signature.record_type == "step_entry",
                                                 Signature.record_id == entry.id))
        correct_value(batch, entry, "volume_ml", "185", reason="Scale print-out reads 185 mL.",
                      expected_version=batch.version, actor=user("tech1"), credentials=Credentials(PASSWORD))
        db.session.commit()
    result = verify(app)
    assert result.exit_code == 0, result.output
    assert signed_before == 2  # performed and verified: both no longer match the corrected entry
    assert "2 no longer match because a later signed correction changed their record (expected" in result.stdout
    assert "Intact" in result.stdout


def test_an_edited_entry_is_named(app: Flask, released: str) -> None:
    tamper(app, "UPDATE audit_events SET new_value = 'nothing to see' WHERE id = 10")
    result = verify(app)
    assert result.exit_code == 1
    assert "TAMPERED: Entry 10: its content does not match its hash: edited or inserted in the database." \
        in result.stderr
    assert "Not intact: Entry 10:" in result.stderr
    assert "chain broken." in result.stdout
    assert "Intact:" not in result.stdout


def test_an_edited_entry_given_a_fresh_hash_breaks_the_next_link(app: Flask, released: str) -> None:
    with app.app_context():
        row = dict(db.session.execute(select(AuditEvent.__table__).where(AuditEvent.id == 10)).mappings().one())
    forged = entry_hash({**row, "reason": "Approved by phone."})
    tamper(app, "UPDATE audit_events SET reason = 'Approved by phone.', hash = :forged WHERE id = 10", forged=forged)
    result = verify(app)
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("TAMPERED: Entry 11: its link to entry 10 is broken: that entry was rewritten")


def test_a_deleted_entry_is_named(app: Flask, released: str) -> None:
    tamper(app, "DELETE FROM audit_events WHERE id = 10")
    result = verify(app)
    assert result.exit_code == 1
    assert ("TAMPERED: Entry 11: its link to entry 9 is broken, and entry 10 is missing: deleted in the database."
            in result.stderr)
    assert "Not intact: Entry 11:" in result.stderr


def test_entries_deleted_from_the_end_are_named(app: Flask, released: str) -> None:
    last = last_entry(app)["id"]
    tamper(app, "DELETE FROM audit_events WHERE id > :keep", keep=last - 3)
    result = verify(app)
    assert result.exit_code == 1
    assert (f"Entry {last}: missing. The trail ends at entry {last - 3}, but the application's last entry was "
            f"{last}: entries were deleted from its end.") in result.stderr


def test_the_first_entries_deleted_are_named(app: Flask, released: str) -> None:
    tamper(app, "DELETE FROM audit_events WHERE id < 3")
    result = verify(app)
    assert result.exit_code == 1
    assert ("Entry 3: it starts the trail, but does not link to the start of the chain: entries before it were "
            "deleted in the database.") in result.stderr


def _insert_after_last(app: Flask, *, forge_hash: bool) -> int:
    last = last_entry(app)
    row = {**last, "id": last["id"] + 1, "prev_hash": last["hash"], "action": "step.record",
           "new_value": '{"text": "backfilled"}', "reason": "Forgot to record it."}
    row["hash"] = entry_hash(row) if forge_hash else "0" * 64
    with app.app_context():
        db.session.execute(insert(AuditEvent), [row])  # inserting needs no trigger off: the trail is append-only
        db.session.commit()
    return int(row["id"])


def test_an_entry_inserted_with_any_hash_is_named(app: Flask, released: str) -> None:
    inserted = _insert_after_last(app, forge_hash=False)
    result = verify(app)
    assert result.exit_code == 1
    assert f"Not intact: Entry {inserted}: its content does not match its hash" in result.stderr


def test_an_entry_inserted_with_a_well_forged_hash_is_named(app: Flask, released: str) -> None:
    inserted = _insert_after_last(app, forge_hash=True)
    result = verify(app)
    assert result.exit_code == 1
    assert (f"Not intact: Entry {inserted}: added after the last entry the application wrote (entry "
            f"{inserted - 1}): inserted in the database.") in result.stderr


def test_an_entry_inserted_before_the_first_is_named(app: Flask, released: str) -> None:
    with app.app_context():
        first = dict(db.session.execute(select(AuditEvent.__table__).where(AuditEvent.id == 1)).mappings().one())
        row = {**first, "id": 0, "reason": "Inserted first."}
        row["hash"] = entry_hash(row)
        db.session.execute(insert(AuditEvent), [row])
        db.session.commit()
    result = verify(app)
    assert result.exit_code == 1
    assert "Not intact: Entry 1: its link to entry 0 is broken" in result.stderr


def test_a_rewritten_or_deleted_chain_head_is_named(app: Flask, released: str) -> None:
    last = last_entry(app)["id"]
    tamper(app, "UPDATE audit_chain_head SET last_hash = :other", other="f" * 64)
    result = verify(app)
    assert result.exit_code == 1
    assert f"Not intact: Entry {last}: its hash is not the one the application recorded" in result.stderr
    tamper(app, "DELETE FROM audit_chain_head")
    result = verify(app)
    assert result.exit_code == 1
    assert "Not intact: The chain head is missing: it was deleted in the database." in result.stderr


def test_a_signed_value_changed_in_the_database_is_named(app: Flask, released: str) -> None:
    with app.app_context():
        entry = entries(released, "receipt")[0]
        value = next(v for v in entry.values if v.field_key == "volume_ml")
        value_id, entry_id = value.id, entry.id
        signature_ids = db.session.scalars(select(Signature.id).where(Signature.record_type == "step_entry",
                                                                      Signature.record_id == entry_id)
                                           .order_by(Signature.id)).all()
    tamper(app, "UPDATE step_values SET text = '250' WHERE id = :value", value=value_id)
    result = verify(app)
    assert result.exit_code == 1
    assert "chain intact." in result.stdout  # the trail itself was not touched: the signatures tell
    for signature_id, meaning, name in zip(signature_ids, ("performed", "verified"),
                                           ("Tess Technician", "Theo Second"), strict=True):
        assert f"TAMPERED: Signature {signature_id} ({meaning}, {name}, " in result.stderr
    assert f"the step entry {entry_id} it signs has changed with no signed correction since" in result.stderr
    assert f"Not intact: Signature {signature_ids[0]} " in result.stderr


def first_decision_signature(app: Flask) -> tuple[int, int]:
    """The id of the first signature of a decision (a disposition), and the decision's id."""
    with app.app_context():
        signature = db.session.scalars(select(Signature).where(Signature.record_type == "disposition")).first()
        assert signature is not None
        return signature.id, signature.record_id


def test_a_signed_record_deleted_in_the_database_is_named(app: Flask, released: str) -> None:
    signature_id, record_id = first_decision_signature(app)
    tamper(app, "DELETE FROM dispositions WHERE id = :record", record=record_id)
    result = verify(app)
    assert result.exit_code == 1
    assert (f"Not intact: Signature {signature_id}: the disposition {record_id} it signs is not in its batch: "
            "deleted or moved in the database.") in result.stderr


def test_many_problems_are_counted_beyond_the_first_twenty(app: Flask, released: str) -> None:
    tamper(app, "UPDATE audit_events SET reason = 'x' WHERE id <= 30")
    result = verify(app)
    assert result.exit_code == 1
    assert len([line for line in result.stderr.splitlines() if line.startswith("TAMPERED:")]) == 20
    assert "... and 10 more." in result.stderr
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StepValue)) > 0


@pytest.mark.parametrize("statement", [
    "UPDATE step_entries SET performed_by_id = 999999 WHERE id = :entry",  # its signer's row gone
    "UPDATE step_entries SET batch_id = 999999 WHERE id = :entry",  # moved to a batch that is not there
])
def test_a_signed_record_whose_signer_or_batch_is_gone_is_named(app: Flask, released: str, statement: str) -> None:
    with app.app_context():
        entry_id = entries(released, "receipt")[0].id
    tamper(app, statement, entry=entry_id)
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert f"the step entry {entry_id} it signs" in result.stderr
    assert "Traceback" not in result.output


def test_a_release_whose_decider_is_gone_is_named_and_supports_no_state(app: Flask, released: str) -> None:
    signature_id, record_id = first_decision_signature(app)
    tamper(app, "UPDATE dispositions SET decided_by_id = 999999 WHERE id = :record", record=record_id)
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert (f"TAMPERED: Signature {signature_id}: the disposition {record_id} it signs names a signer or batch that "
            "is not there") in result.stderr
    assert f"TAMPERED: Batch {released}: it is released, but no release decision carries a valid" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_entries_at_any_fraction_of_a_second_verify_whatever_the_sessions_time_zone(app: Flask, users: Any,
                                                                                    zone: str) -> None:
    """The walk reads each database's usual text for ``occurred_at`` straight into the canonical
    text (PostgreSQL drops a fraction's trailing zeros, and writes the session's zone): times of
    every shape, read in UTC and in a zone half an hour off it, hash as they were written."""
    moments = [datetime(2026, 3, 1, 9, 30, 0, micro, tzinfo=UTC) for micro in (0, 5, 120000, 100000, 999999)]
    moments.append(datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=UTC))  # another day in Kolkata
    with app.app_context():
        append(db.session.connection(), [
            {"occurred_at": moment, "actor_id": None, "actor_username": "system", "action": "test.times",
             "operation": "insert", "table_name": "times", "row_id": str(n), "field": None, "old_value": None,
             "new_value": moment.isoformat(), "reason": None, "batch_id": None} for n, moment in enumerate(moments)])
        db.session.commit()
        if ON_POSTGRES:
            db.session.execute(text(f"SET TIME ZONE '{zone}'"))
        report = verify_chain(jobs=1)
        assert report.findings.problems == [] and report.entries >= len(moments)
        db.session.rollback()

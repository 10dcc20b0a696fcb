"""``verify-audit`` checks what signatures and decisions mean (issue 12): a change to any field of a
signed record a reader relies on, a signature deleted or rewritten, and a batch state that no signed
decision supports, each made directly in the database, exit 1 naming the record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import Disposition, QcResult, Signature
from lab.services.signatures import content_sha256, digest
from tests.factories import entries, get_batch, user
from tests.quality import released_with_deviation
from tests.test_verify_audit import tamper, verify

pytestmark = pytest.mark.requirements("P11-10a", "P11-70")


@pytest.fixture
def released_batch(app: Flask, make_batch: Callable[..., str]) -> str:
    number = make_batch()
    released_with_deviation(app, number)
    return number


def _receipt_volume(app: Flask, number: str) -> tuple[int, int, list[int]]:
    """(value id, entry id, ids of the entry's signatures) of the receipt's volume."""
    with app.app_context():
        entry = entries(number, "receipt")[0]
        value = next(v for v in entry.values if v.field_key == "volume_ml")
        signature_ids = db.session.scalars(select(Signature.id).where(Signature.record_type == "step_entry",
                                                                      Signature.record_id == entry.id)
                                           .order_by(Signature.id)).all()
        return value.id, entry.id, list(signature_ids)


@pytest.mark.parametrize("change", [
    "out_of_limit = NOT out_of_limit",
    "unit = 'L'",
    "limit_text = 'any volume'",
    "message = 'Within limits.'",
    "number = 2500",
], ids=["out-of-limit flag", "unit", "limit", "message", "number"])
def test_a_signed_value_field_changed_in_the_database_is_named(app: Flask, make_batch: Callable[..., str],
                                                               change: str) -> None:
    number = make_batch(until="enrichment")
    value_id, entry_id, signature_ids = _receipt_volume(app, number)
    assert len(signature_ids) == 2  # performed and verified
    tamper(app, f"UPDATE step_values SET {change} WHERE id = :value", value=value_id)
    result = verify(app)
    assert result.exit_code == 1, result.output
    for signature_id in signature_ids:
        assert f"TAMPERED: Signature {signature_id} (" in result.stderr
    assert f"the step entry {entry_id} it signs has changed with no signed correction since" in result.stderr


def test_signed_results_deviations_and_decisions_cover_every_field(app: Flask, released_batch: str) -> None:
    with app.app_context():
        batch = get_batch(released_batch)
        result_id = batch.results[0].id
        deviation_id = next(d.id for d in batch.deviations if not d.is_open)
        disposition_id = batch.dispositions[-1].id
    tamper(app, "UPDATE qc_results SET message = 'Meets specification.', is_late = NOT is_late WHERE id = :id",
           id=result_id)
    tamper(app, "UPDATE deviations SET field_key = 'other' WHERE id = :id", id=deviation_id)
    tamper(app, "UPDATE dispositions SET title = 'Conditional release' WHERE id = :id", id=disposition_id)
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert f"the qc result {result_id} it signs has changed" in result.stderr
    assert f"the deviation {deviation_id} it signs has changed" in result.stderr
    assert f"the disposition {disposition_id} it signs has changed" in result.stderr


def test_a_deleted_release_signature_is_named(app: Flask, released_batch: str) -> None:
    with app.app_context():
        signature_id = db.session.scalars(select(Signature.id)
                                          .where(Signature.meaning == "approved for release")).one()
    tamper(app, "DELETE FROM signatures WHERE id = :id", id=signature_id)
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert f"TAMPERED: Signature {signature_id} (approved for release, " in result.stderr
    assert "the audit trail records it was made" in result.stderr
    assert "missing: deleted in the database." in result.stderr
    assert (f"TAMPERED: Batch {released_batch}: it is released, but no release decision carries a valid signature "
            "'approved for release'") in result.stderr


@pytest.mark.parametrize("state", ["released", "shipped", "rejected"])
def test_a_batch_state_no_decision_supports_is_named(app: Flask, make_batch: Callable[..., str],
                                                     state: str) -> None:
    number = make_batch(until="enrichment")
    tamper(app, "UPDATE batches SET state = :state WHERE batch_number = :number", state=state, number=number)
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert f"Not intact: Batch {number}: it is {state}, but no " in result.stderr
    assert "in the database." in result.stderr


def test_a_signature_rewritten_to_match_a_tampered_record_is_named(app: Flask,
                                                                   make_batch: Callable[..., str]) -> None:
    """A superuser who also recomputes the signature's hash is caught by the trail's record of the signature."""
    number = make_batch(until="enrichment")
    value_id, entry_id, signature_ids = _receipt_volume(app, number)
    tamper(app, "UPDATE step_values SET unit = 'L' WHERE id = :value", value=value_id)
    with app.app_context():
        entry = entries(number, "receipt")[0]
        forged = digest(entry)
    tamper(app, "UPDATE signatures SET content_sha256 = :forged WHERE record_type = 'step_entry' "
                "AND record_id = :entry", forged=forged, entry=entry_id)
    tamper(app, "UPDATE signatures SET hash_scheme = 1 WHERE id = :id", id=signature_ids[0])
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert (f"TAMPERED: Signature {signature_ids[1]}: differs from what the audit trail recorded when it was made "
            "(entry ") in result.stderr
    assert "content_sha256 changed in the database" in result.stderr
    assert "content_sha256, hash_scheme changed in the database" in result.stderr


def test_signatures_made_before_the_full_hash_still_check(app: Flask, released_batch: str) -> None:
    """A deployed database holds signatures hashed the old way (scheme 1): they still match, and a change
    to what they covered is still caught."""
    with app.app_context():
        result = db.session.scalars(select(QcResult).order_by(QcResult.id)).first()
        disposition = db.session.scalars(select(Disposition)).first()
        assert result is not None and disposition is not None
        with audit.action("test.legacy", actor=None):  # what an upgraded database holds
            for record, record_type in ((result, "qc_result"), (disposition, "disposition")):
                db.session.add(Signature(batch_id=record.batch_id, record_type=record_type, record_id=record.id,
                                         signer_id=record.batch.created_by_id, printed_name="Old Signer",
                                         meaning="reviewed", signed_at=record.batch.created_at,
                                         content_sha256=digest(record, scheme=1), hash_scheme=1))
        db.session.commit()
        result_id = result.id
    assert verify(app).exit_code == 0, verify(app).output
    tamper(app, "UPDATE qc_results SET text = '99' WHERE id = :id", id=result_id)
    outcome = verify(app)
    assert outcome.exit_code == 1
    assert f"the qc result {result_id} it signs has changed" in outcome.stderr


def test_scheme_1_is_the_hash_signatures_were_made_with_before(app: Flask, make_batch: Callable[..., str]) -> None:
    """Old signatures check only if scheme 1 hashes exactly what the application hashed before issue 12."""
    number = make_batch(until="enrichment")
    with app.app_context():
        entry = entries(number, "receipt")[0]
        before = content_sha256({
            "record": "step_entry", "batch": number, "step": entry.step_key, "occurrence": entry.occurrence,
            "performed_by": entry.performed_by.username, "performed_at": entry.performed_at.isoformat(),
            "comment": entry.comment, "values": {v.field_key: v.text for v in entry.values},
        })
        assert digest(entry, scheme=1) == before
        assert digest(entry) != before
        signatures = db.session.scalars(select(Signature).where(Signature.record_id == entry.id,
                                                                Signature.record_type == "step_entry")).all()
        assert {(s.hash_scheme, s.content_sha256) for s in signatures} == {(2, digest(entry))}


def test_a_signature_inserted_in_the_database_is_named(app: Flask, make_batch: Callable[..., str]) -> None:
    """A forged signature whose hash matches its record (a copy of a valid one, as another signer)
    passes the signature check; the trail, which records every signature made, never saw it."""
    number = make_batch(until="enrichment", verify=False)
    *_, [performed] = _receipt_volume(app, number)
    tamper(app, "INSERT INTO signatures (batch_id, record_type, record_id, signer_id, printed_name, meaning, "
                "signed_at, content_sha256, hash_scheme) SELECT batch_id, record_type, record_id, :signer, "
                "'Quentin Assurance', 'verified', signed_at, content_sha256, hash_scheme FROM signatures WHERE id = :id",
           signer=user_id(app, "qa1"), id=performed)
    with app.app_context():
        forged = db.session.scalar(select(func.max(Signature.id)))
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert (f"TAMPERED: Signature {forged} (verified, Quentin Assurance, ") in result.stderr
    assert "the audit trail never recorded it being made: inserted in the database." in result.stderr
    assert f"Signature {performed} " not in result.stderr  # the genuine one is not named


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        return user(username).id

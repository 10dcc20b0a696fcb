"""Electronic signatures: re-authenticated, with meaning, linked to a hash of what was signed.

21 CFR 11.200(a): the first signature of a session takes both components (username and
password), later ones the password; the view knows which, this module checks them.
11.50: a signature keeps the signer, printed name, UTC time and meaning. 11.70: the hash
is over a canonical JSON of the signed record, so any later change to it (a correction)
leaves the signature visibly not matching. 11.300(d): a refused attempt is kept and counts
towards locking the account.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, SignatureError, SigningAttempt
from lab.extensions import db
from lab.models import (
    Batch,
    Deviation,
    Disposition,
    QcResult,
    Signature,
    SigningFailure,
    StepEntry,
    StepValue,
    User,
    utcnow,
)
from lab.models.patients import WeightCorrection
from lab.models.quality import SIGNATURE_HASH_SCHEME
from lab.services.sign_in import locked_user
from workflows.model import SIGNATURE_MEANINGS

#: Refused signing attempts in a row that lock the account until an administrator unlocks it.
LOCKOUT_AFTER = 5



@runtime_checkable
class SignedRecord(Protocol):
    """A record outside a batch's manufacturing record that is signed (a lot's release, an audit
    review, a process approval): it says what its signature covers. Its model is added to
    RECORD_TYPES under its ``signature_record_type``; its signatures carry no batch."""

    id: int
    signature_record_type: ClassVar[str]

    def signed_content(self) -> dict[str, Any]:
        """Every field of the record a reader relies on, as JSON-ready values."""
        ...


Signable = StepEntry | QcResult | Deviation | Disposition | WeightCorrection | SignedRecord
RECORD_TYPES: dict[type, str] = {StepEntry: "step_entry", QcResult: "qc_result", Deviation: "deviation",
                                 Disposition: "disposition", WeightCorrection: "weight_correction"}


def register_signed(model: type) -> type:
    """Class decorator for a SignedRecord model: its signatures are made, matched and verified
    (``verify-audit``) like a batch record's."""
    RECORD_TYPES[model] = model.signature_record_type  # type: ignore[attr-defined]
    return model
#: The contents a signature's hash can be over (``Signature.hash_scheme``): 1, what signatures were
#: made on until issue 12; 2 (SIGNATURE_HASH_SCHEME), every field of the record a reader relies on.
HASH_SCHEMES = (1, 2)


@dataclass(frozen=True)
class Credentials:
    """What the signer typed. ``username`` is None when this session has already signed
    (a later signing of a continuous session needs the password only)."""

    password: str
    username: str | None = None


#: The canonical JSON a signed record's hash covers (one encoder: ``json.dumps`` with options
#: builds one per call, and verify-audit hashes hundreds of thousands of records).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_sha256(content: dict[str, Any]) -> str:
    return hashlib.sha256(_CANONICAL.encode(content).encode("utf-8")).hexdigest()


def current_values(entry: StepEntry) -> dict[str, Any]:
    """field key -> the StepValue not superseded by a correction."""
    superseded = {v.supersedes_id for v in entry.values if v.supersedes_id is not None}
    return {v.field_key: v for v in entry.values if v.id not in superseded}


def entry_sha256(entry: StepEntry, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    """Hash of what a signer of ``entry`` attests to: its current values and their author;
    from scheme 2 each value with its unit, limits, out-of-limit flag and message too."""
    content: dict[str, Any] = {
        "record": "step_entry",
        "batch": entry.batch.batch_number,
        "step": entry.step_key,
        "occurrence": entry.occurrence,
        "performed_by": entry.performed_by.username,
        "performed_at": entry.performed_at.isoformat(),
        "comment": entry.comment,
    }
    current = current_values(entry)
    if scheme >= 2:
        content.update(scheme=2, values={key: _value_content(value) for key, value in current.items()})
    else:
        content["values"] = {key: value.text for key, value in current.items()}
    return content_sha256(content)


def _value_content(value: StepValue) -> dict[str, Any]:
    return {
        "text": value.text,
        "number": _number(value.number),
        "unit": value.unit,
        "limit": value.limit_text,
        "out_of_limit": bool(value.out_of_limit),
        "message": value.message,
        "lot": value.lot_id,
        "equipment": value.equipment_id,
        "recorded_by": value.recorded_by_id,
        "recorded_at": _time(value.recorded_at),
        "supersedes": value.supersedes_id,
        "reason": value.reason,
    }


def _number(number: float | None) -> str | None:
    """A stored number as text: the same whether the engine handed an int or the database a float."""
    return None if number is None else repr(float(number))


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def result_sha256(result: QcResult, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    content: dict[str, Any] = {
        "record": "qc_result",
        "batch": result.batch.batch_number,
        "test": result.test_key,
        "text": result.text,
        "unit": result.unit,
        "verdict": result.verdict,
        "final": result.is_final,
        "specification": result.spec_text,
        "comment": result.comment,
        "recorded_by": result.recorded_by.username,
        "recorded_at": result.recorded_at.isoformat(),
        "supersedes": result.supersedes_id,
        "reason": result.reason,
    }
    if scheme >= 2:
        content.update(scheme=2, number=_number(result.number), message=result.message, late=bool(result.is_late))
    return content_sha256(content)


def deviation_sha256(deviation: Deviation, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    """Hash of a deviation as QA closes it: what happened and its investigation; from scheme 2
    also what it is about, who opened, investigated and closed it, and when."""
    content: dict[str, Any] = {
        "record": "deviation",
        "number": deviation.number,
        "batch": deviation.batch.batch_number,
        "source": deviation.source,
        "title": deviation.title,
        "description": deviation.description,
        "classification": deviation.classification,
        "root_cause": deviation.root_cause,
        "impact": deviation.impact,
        "corrective_action": deviation.corrective_action,
        "preventive_action": deviation.preventive_action,
    }
    if scheme >= 2:
        content.update(scheme=2, entry=deviation.entry_id, field=deviation.field_key, result=deviation.result_id,
                       status=deviation.status, opened_at=_time(deviation.opened_at),
                       opened_by=deviation.opened_by_id, investigated_at=_time(deviation.investigated_at),
                       investigated_by=deviation.investigated_by_id, closed_at=_time(deviation.closed_at),
                       closed_by=deviation.closed_by_id)
    return content_sha256(content)


def record_sha256(batch: Batch) -> str:
    """Digest of a batch's record as it stands: every entry and every QC result."""
    return content_sha256({
        "batch": batch.batch_number,
        "entries": [entry_sha256(entry) for entry in batch.entries],
        "results": [result_sha256(result) for result in batch.results],
    })


def disposition_sha256(disposition: Disposition, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    content: dict[str, Any] = {
        "record": "disposition",
        "batch": disposition.batch.batch_number,
        "decision": disposition.decision,
        "state_before": disposition.state_before,
        "state_after": disposition.state_after,
        "reason": disposition.reason,
        "physician_name": disposition.physician_name,
        "physician_request": disposition.physician_request,
        "risk_assessment": disposition.risk_assessment,
        "physician_confirmation": disposition.physician_confirmation,
        "record_sha256": disposition.record_sha256,
        "decided_by": disposition.decided_by.username,
        "decided_at": disposition.decided_at.isoformat(),
    }
    if scheme >= 2:
        content.update(scheme=2, title=disposition.title)
    return content_sha256(content)


def weight_correction_sha256(correction: WeightCorrection, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    """Hash of what the signer of a weight correction attests to (21 CFR 11.70); scheme 2 adds
    the patient's id (its reference and COI are already there)."""
    content: dict[str, Any] = {
        "record": "weight_correction",
        "patient": correction.patient.patient_ref,
        "coi": correction.patient.coi,
        "old_weight_kg": f"{correction.old_weight_kg:.2f}",  # as stored (2 decimals), int or float alike
        "new_weight_kg": f"{correction.new_weight_kg:.2f}",
        "reason": correction.reason,
        "corrected_by": correction.corrected_by.username,
        "corrected_at": correction.corrected_at.isoformat(),
    }
    if scheme >= 2:
        content.update(scheme=2, patient_id=correction.patient_id)
    return content_sha256(content)


def digest(record: Signable, scheme: int = SIGNATURE_HASH_SCHEME) -> str:
    """The hash a signature of ``record`` made with ``scheme`` must carry to match its current
    content. Scheme 1 is the narrower content signatures were made on until issue 12: a
    signature keeps the scheme it was made with (``Signature.hash_scheme``), so those stored
    before still check, over what they covered."""
    if isinstance(record, StepEntry):
        return entry_sha256(record, scheme)
    if isinstance(record, QcResult):
        return result_sha256(record, scheme)
    if isinstance(record, Deviation):
        return deviation_sha256(record, scheme)
    if isinstance(record, WeightCorrection):
        return weight_correction_sha256(record, scheme)
    if isinstance(record, Disposition):
        return disposition_sha256(record, scheme)
    return content_sha256({"record": record.signature_record_type, **record.signed_content()})


def matches(signature: Signature, record: Signable) -> bool:
    """Whether ``signature`` still matches ``record``'s content, hashed as the signature was made."""
    return signature.content_sha256 == digest(record, signature.hash_scheme)


def reauthenticate(actor: User, credentials: Credentials, *, meaning: str, subject: str,
                   batch_id: int | None) -> None:
    """Check the signer's components before anything is written (21 CFR 11.200(a)).

    Raises InvalidInput for a missing component (nothing is recorded), SignatureError for
    a wrong password or someone else's username: its ``attempt`` is to be recorded with
    ``record_failed_attempt`` once the refused action is rolled back.
    """
    if not actor.is_active:
        raise SignatureError("Your account is locked or deactivated: nothing was signed.")
    if actor.password_must_change:
        # 11.300(b)/11.200(a)(3): a password an administrator chose is not the signer's own.
        raise SignatureError("Your password was set by an administrator: sign in and choose your own before "
                             "you sign. Nothing was signed.")
    if credentials.username is not None and not credentials.username.strip():
        raise InvalidInput("Enter your username and password to sign.", {
            "username": "Your first signature in this session needs your username as well as your "
                        "password (21 CFR 11.200(a))."})
    if not credentials.password:
        raise InvalidInput("Enter your password to sign.", {"password": "Enter your password to sign."})
    if credentials.username is not None and credentials.username.strip().lower() != actor.username:
        raise SignatureError(f"That username is not yours: you sign only as yourself ({actor.username}). "
                             "Nothing was signed.",
                             SigningAttempt(actor.id, batch_id, meaning, subject[:255], "username not the signer's"))
    if not actor.check_password(credentials.password):
        raise SignatureError("The password is wrong: nothing was signed.",
                             SigningAttempt(actor.id, batch_id, meaning, subject[:255], "wrong password"))


def record_failed_attempt(attempt: SigningAttempt, *, now: datetime | None = None) -> str:
    """Keep a refused attempt and count it; the LOCKOUT_AFTER-th in a row locks the account.

    Call in a fresh transaction, after the refused action was rolled back; the caller
    commits. Returns what to tell the signer about the lockout.
    """
    now = now or utcnow()
    user = locked_user(attempt.user_id)  # simultaneous refusals count one after another, none lost
    with audit.action("signature.refused", actor=user, reason=attempt.reason):
        db.session.add(SigningFailure(user_id=user.id, batch_id=attempt.batch_id, attempted_at=now,
                                      meaning=attempt.meaning, subject=attempt.subject, reason=attempt.reason))
        user.failed_signatures += 1
        if user.failed_signatures >= LOCKOUT_AFTER and user.locked_at is None:
            user.locked_at = now
            user.locked_until = None  # a signing lockout ends only when an administrator unlocks it
    if user.locked_at is not None:
        return (f"Your account is now locked after {LOCKOUT_AFTER} refused signing attempts in a row: "
                "an administrator must unlock it.")
    left = LOCKOUT_AFTER - user.failed_signatures
    return f"{left} more refused attempt{'s' if left > 1 else ''} will lock your account."


def sign(record: Signable, *, actor: User, meaning: str, now: datetime) -> Signature:
    """Append ``actor``'s signature of ``record``'s current content. Call inside
    ``audit.action``, after reauthenticate and after ``record`` was flushed."""
    if meaning not in SIGNATURE_MEANINGS:
        raise ValueError(f"unknown signature meaning {meaning!r}")
    if actor.failed_signatures:
        actor.failed_signatures = 0  # a valid signature ends a run of refused attempts
    signature = Signature(
        batch_id=record_batch_id(record),
        record_type=RECORD_TYPES[type(record)],
        record_id=record.id,
        signer_id=actor.id,
        printed_name=actor.full_name,
        meaning=meaning,
        signed_at=now,
        content_sha256=digest(record),
        hash_scheme=SIGNATURE_HASH_SCHEME,
    )
    db.session.add(signature)
    return signature


def record_batch_id(record: Signable) -> int | None:
    """The batch whose record ``record`` belongs to; None for a SignedRecord."""
    return None if isinstance(record, SignedRecord) else record.batch_id


def record_signatures(record: Signable) -> list[tuple[Signature, bool]]:
    """The signatures of one record, oldest first, each with whether it still matches."""
    found = db.session.scalars(select(Signature).where(Signature.record_type == RECORD_TYPES[type(record)],
                                                       Signature.record_id == record.id)
                               .order_by(Signature.id)).all()
    return [(s, s.content_sha256 == digest(record, s.hash_scheme)) for s in found]


def batch_signatures(batch: Batch) -> dict[tuple[str, int], list[Signature]]:
    """Every signature of ``batch``'s records, by (record type, record id), oldest first."""
    found: dict[tuple[str, int], list[Signature]] = defaultdict(list)
    for signature in db.session.scalars(select(Signature).where(Signature.batch_id == batch.id)
                                        .order_by(Signature.id)):
        found[(signature.record_type, signature.record_id)].append(signature)
    return found


def marked(record: Signable, signatures: dict[tuple[str, int], list[Signature]]) -> list[tuple[Signature, bool]]:
    """The signatures of ``record``, each with whether it still matches the record's content."""
    own = signatures.get((RECORD_TYPES[type(record)], record.id), [])
    hashes = {scheme: digest(record, scheme) for scheme in {s.hash_scheme for s in own}}
    return [(s, s.content_sha256 == hashes[s.hash_scheme]) for s in own]

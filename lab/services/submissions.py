"""Values sent by instruments and other systems, waiting for a person's signature (issue 16).

An API call never signs (21 CFR 11.50, 11.200: a signature needs its signer's password), so
what an instrument or a LIMS sends for a step entry or a QC result is kept as a
``Submission``: checked at once by the same engine and rules as the forms, an out-of-limit
value (or a result out of specification) opening its deviation at once so that QA sees it
before anyone signs. The values become a record only when a person who may record them opens
the submission in the browser (the step form or the QC result form, prefilled), completes
and checks them and signs (``recorded_from``). A submission may carry only some of a step's
fields: a cell counter gives the viable cells and the viability, the technician adds the bag
and the incubator when signing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from flask import url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.exceptions import InvalidInput, StepNotAllowed
from lab.extensions import db
from lab.models import ApiToken, Attachment, Batch, Deviation, QcResult, StepEntry, Submission, User, utcnow
from lab.permissions import ACTIONS, require, require_role
from lab.services import containers
from lab.services.api_read import iso_time
from lab.services.batches import with_batch_dose
from lab.services.deviations import open_deviation
from lab.services.progress import batch_progress, definition_for, entry_context
from lab.services.release_status import release_basis
from lab.services.results import checked_result, deviation_due, new_result_refusal
from lab.services.steps import MAX_COMMENT, clean_comment, lock_batch, resolve_codes
from workflows.engine import can_start, compute_derived, count_refusals, validate_entry
from workflows.engine_types import FieldValue
from workflows.model import ProcessDefinition, StepSpec
from workflows.release import FAIL

#: The longest value text kept (a list of scanned container codes is the longest a step takes).
MAX_VALUE = 2000
#: What a recording that starts from a submission is given: the deviations its values opened
#: that are still open, by (field or test key, canonical text) (record_step, record_result).
Opened = dict[tuple[str, str], Deviation]
Made = TypeVar("Made", StepEntry, QcResult)


@dataclass(frozen=True)
class Flag:
    """A submitted value out of its limit or specification: the field (a step's field or
    derived value, or the test), its canonical text and why, in words."""

    field: str
    text: str
    message: str


@dataclass(frozen=True)
class Checked:
    """Submitted values as the engine judged them: refused ones, and the flagged ones."""

    errors: dict[str, str]
    flags: list[Flag]


def submit_step(batch: Batch, step_key: str, values: Mapping[str, str], *, comment: str, actor: User,
                token: ApiToken | None, expected_version: int | None, attachment: Attachment | None = None,
                sample_id: str | None = None, measured_at: datetime | None = None,
                now: datetime | None = None) -> Submission:
    """Keep ``values`` (field key -> text, some of the fields of ``step_key``) sent by ``actor``
    through ``token`` (or a counter file uploaded in the browser, ``attachment``) for a person
    to sign; each out-of-limit value opens its deviation now.

    Raises KeyError (no such step), NotAllowed (``actor`` may not record the step),
    ConcurrentChangeError (``expected_version`` is stale), StepNotAllowed (the batch cannot
    take the step now) or InvalidInput (field key -> reason: an unknown or computed field, a
    value the engine refuses). Nothing is written on refusal.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    step = definition.step(step_key)
    require_role(actor, step.role, f"record {step.title}")
    comment = clean_comment(comment)
    lock_batch(batch, expected_version)
    refusal = can_start(definition, step_key, batch_progress(batch, definition), batch.state)
    if refusal:
        raise StepNotAllowed(refusal)
    texts, errors = _step_texts(batch, step, values)
    checked = check_step_values(batch, definition, step, texts, now=now)
    if errors or checked.errors:
        raise InvalidInput("The values were not accepted: see errors. Nothing was saved.",
                           {**checked.errors, **errors})
    with audit.action("submission.receive", actor=actor, reason=comment or None):
        submission = _new(batch, "step", step_key, texts, comment, actor, token, now, attachment=attachment,
                          sample_id=sample_id, measured_at=measured_at)
        for flag in checked.flags:
            open_deviation(batch, source="limit", title=f"{submission_name(submission)}: {step.title}: {flag.message}",
                           description=comment, field_key=flag.field, actor=actor, now=now, submission=submission)
    return submission


def submit_result(batch: Batch, test_key: str, value: str, *, comment: str, actor: User, token: ApiToken | None,
                  expected_version: int | None, now: datetime | None = None) -> Submission:
    """Keep the result ``value`` of release test ``test_key`` for a QC analyst to sign; a result
    out of specification (or far from the computed value) opens its deviation now.

    Raises as record_result does before signing: KeyError (no such test), NotAllowed,
    ConcurrentChangeError, StepNotAllowed, InvalidInput (on ``value`` or ``comment``).
    """
    now = now or utcnow()
    definition = definition_for(batch)
    test = definition.release_test(test_key)
    require(actor, "record_result", "record QC results")
    comment = clean_comment(comment)
    lock_batch(batch, expected_version)
    basis = release_basis(batch, test, definition)
    refusal = new_result_refusal(batch, definition, test, basis)
    if refusal:
        raise StepNotAllowed(refusal)
    check = checked_result(test, value, basis)
    with audit.action("submission.receive", actor=actor, reason=comment or None):
        submission = _new(batch, "result", test_key, {"value": value.strip()}, comment, actor, token, now)
        due = deviation_due(batch, definition, test, check, comment)
        if due:
            open_deviation(batch, source=due.source, title=f"{submission_name(submission)}: {due.title}",
                           description=due.description, actor=actor, now=now, submission=submission)
    return submission


def _new(batch: Batch, kind: str, key: str, values: dict[str, str], comment: str, actor: User,
         token: ApiToken | None, now: datetime, **source: Any) -> Submission:
    submission = Submission(batch=batch, kind=kind, key=key, values=values, comment=comment or None,
                            submitted_at=now, submitted_by_id=actor.id, token_id=token.id if token else None,
                            status="pending", **source)
    db.session.add(submission)
    db.session.flush()  # its id names the deviations it opens
    return submission


def _step_texts(batch: Batch, step: StepSpec, values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The submitted texts of fields a person types at ``step``, and why each other one is refused."""
    fields = {spec.key: spec for spec in step.fields}
    derived = {spec.key for spec in step.derived}
    errors: dict[str, str] = {}
    texts: dict[str, str] = {}
    for key, text in values.items():
        spec = fields.get(key)
        if key in derived:
            errors[key] = "Computed when the entry is saved: send the values it is computed from."
        elif spec is None:
            errors[key] = f"{step.title} has no field {key!r}; its fields are {', '.join(fields)}."
        elif spec.from_lot:
            errors[key] = f"Taken from the {step.field(spec.from_lot).label.lower()}'s certificate, not sent."
        elif spec.batch_dose and batch.target_dose is not None:
            errors[key] = "The batch's target dose, chosen when it was scheduled: it is not sent."
        elif not text.strip():
            errors[key] = "Empty: send a value, or leave the field out."
        elif len(text) > MAX_VALUE:
            errors[key] = f"Use at most {MAX_VALUE} characters."
        else:
            texts[key] = text.strip()
    if not values:
        errors["values"] = "Send at least one field's value."
    return texts, errors


def check_step_values(batch: Batch, definition: ProcessDefinition, step: StepSpec, texts: Mapping[str, str], *,
                      now: datetime) -> Checked:
    """Judge some of ``step``'s fields as the form would (type, range, limits, codes, order),
    and the derived values they give on their own; fields not sent are not judged."""
    raw = with_batch_dose(batch, step, texts)
    lots, equipment, _ = resolve_codes(step, raw)
    known = containers.resolve(batch, definition, step, raw)
    ctx = entry_context(batch, definition, now=now, lots=lots, equipment=equipment, containers=known)
    result = validate_entry(step, raw, ctx)
    sent = {key: value for key, value in result.values.items() if key in texts and key not in result.errors}
    typed = {key: value.value for key, value in result.values.items()
             if value.value is not None and key not in result.errors}
    derived = {key: value for key, value in compute_derived(step, typed, ctx).items() if value.value is not None}
    errors = {key: message for key, message in {**count_refusals(step, typed, derived), **result.errors}.items()
              if key in texts}
    return Checked(errors, [_flag(value) for value in (*sent.values(), *derived.values()) if value.out_of_limit])


def _flag(value: FieldValue) -> Flag:
    return Flag(value.key, value.text, value.message)


def flags_of(submission: Submission) -> list[Flag]:
    """The values of ``submission`` out of limit or specification, judged as when it came."""
    batch = submission.batch
    definition = definition_for(batch)
    if submission.kind == "step":
        step = definition.step(submission.key)
        return check_step_values(batch, definition, step, submission.values, now=submission.submitted_at).flags
    test = definition.release_test(submission.key)
    try:
        check = checked_result(test, submission.values.get("value", ""), release_basis(batch, test, definition))
    except InvalidInput:
        return []
    message = check.message if check.verdict == FAIL else check.discrepancy
    return [Flag(test.key, check.text, message)] if message else []


def submission_name(submission: Submission) -> str:
    """How deviations and pages name a submission; the title of each deviation it opens starts so."""
    return f"Submission {submission.id}"


def deviations_of(submission: Submission) -> list[Deviation]:
    """The deviations ``submission``'s values opened when it came."""
    return [d for d in submission.batch.deviations if d.submission_id == submission.id]


def _signers(submission: Submission) -> tuple[str, ...]:
    """The roles that record what ``submission`` holds: they sign it, or withdraw it."""
    if submission.kind == "result":
        return ACTIONS["record_result"]
    return (definition_for(submission.batch).step(submission.key).role,)


def may_sign(user: User, submission: Submission) -> bool:
    return user.can_act_as(*_signers(submission))


def require_signer(user: User, submission: Submission, what: str) -> None:
    """Raise NotAllowed unless ``user`` may record what ``submission`` holds."""
    require_role(user, _signers(submission), what)


#: The pending submissions listed for one user at most, oldest first; each batch's page lists its own.
PENDING_SHOWN = 50
#: Pending submissions read to find them, at most: an API client may send many that this user
#: may not sign (another role's steps), and a page must not read them all.
PENDING_READ = 1000


@dataclass(frozen=True)
class Pending:
    """The oldest pending submissions a user may sign, and whether more wait than are listed."""

    submissions: list[Submission]
    more: bool


def pending(user: User) -> Pending:
    """The oldest pending submissions ``user`` may sign, up to PENDING_SHOWN, among the oldest
    PENDING_READ of all, in a fixed number of queries."""
    batch = selectinload(Submission.batch)
    rows = db.session.scalars(
        select(Submission).where(Submission.status == "pending")
        .options(batch.selectinload(Batch.definition), batch.selectinload(Batch.patient),
                 selectinload(Submission.submitted_by), selectinload(Submission.token),
                 selectinload(Submission.attachment))
        .order_by(Submission.submitted_at, Submission.id).limit(PENDING_READ + 1)).all()
    signable = list(islice((s for s in rows[:PENDING_READ] if may_sign(user, s)), PENDING_SHOWN + 1))
    return Pending(signable[:PENDING_SHOWN], len(signable) > PENDING_SHOWN or len(rows) > PENDING_READ)


def pending_of(batch: Batch) -> list[Submission]:
    """The submissions of ``batch`` waiting for a signature, oldest first."""
    return list(db.session.scalars(select(Submission).where(Submission.batch_id == batch.id,
                                                            Submission.status == "pending")
                                   .order_by(Submission.submitted_at, Submission.id)))


def _refuse_used(submission: Submission) -> None:
    if submission.status != "pending":
        word = "recorded" if submission.status == "recorded" else "withdrawn"
        raise StepNotAllowed(f"{submission_name(submission)} was already {word}: it cannot be used again.")


def _claim(submission: Submission) -> None:
    """Lock ``submission`` (PostgreSQL: FOR UPDATE) and refuse one already used (409)."""
    db.session.execute(select(Submission).where(Submission.id == submission.id).with_for_update()
                       .execution_options(populate_existing=True)).scalar_one()
    _refuse_used(submission)


def usable(submission: Submission, batch: Batch, kind: str, key: str) -> None:
    """Refuse (409) a submission that is not pending, or is not of ``batch``'s ``kind`` ``key``."""
    if (submission.batch_id, submission.kind, submission.key) != (batch.id, kind, key):
        raise StepNotAllowed(f"{submission_name(submission)} is not for this form: open it from its own page.")
    _refuse_used(submission)


def recorded_from(submission: Submission | None, record: Callable[[Opened], Made], *, actor: User) -> Made:
    """Run ``record`` (record_step or record_result, signed by ``actor``) in one transaction with
    marking ``submission`` recorded: a used submission is refused (409) first; ``record`` is given
    the deviations the submission opened that are still open, so that a value recorded unchanged
    is named in its deviation rather than opening a second one."""
    if submission is None:
        return record({})
    _claim(submission)
    made = record(_still_open(submission))
    now = utcnow()
    with audit.action("submission.record", actor=actor):
        submission.status = "recorded"
        if isinstance(made, StepEntry):
            submission.entry = made
        else:
            submission.result = made
        submission.closed_by_id = actor.id
        submission.closed_at = now
    return made


def _still_open(submission: Submission) -> Opened:
    """The deviations ``submission`` opened that are still open, by (field or test key, canonical text)."""
    flagged = {flag.field: flag.text for flag in flags_of(submission)}
    opened: Opened = {}
    for deviation in deviations_of(submission):
        field = deviation.field_key if submission.kind == "step" else submission.key
        if deviation.is_open and field in flagged:
            opened[(field, flagged[field])] = deviation
    return opened


def withdraw(submission: Submission, *, reason: str, actor: User, now: datetime | None = None) -> None:
    """Withdraw a pending submission (sent in error, a wrong sample), giving a reason. The
    deviations it opened stay open for QA. Raises NotAllowed, StepNotAllowed or InvalidInput."""
    require_signer(actor, submission, "withdraw this submission")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("A reason is required.", {"reason": "Say why the values are withdrawn."})
    if len(reason) > MAX_COMMENT:
        raise InvalidInput("Reason too long.", {"reason": f"Use at most {MAX_COMMENT} characters."})
    _claim(submission)
    with audit.action("submission.withdraw", actor=actor, reason=reason):
        submission.status = "withdrawn"
        submission.closed_by_id = actor.id
        submission.closed_at = now or utcnow()
        submission.closed_reason = reason


def submission_json(submission: Submission) -> dict[str, Any]:
    """The API's Submission (see the OpenAPI document); call in a request (``sign_url`` is absolute)."""
    attachment = submission.attachment
    return {
        "id": submission.id, "batch_number": submission.batch.batch_number, "kind": submission.kind,
        "key": submission.key, "status": submission.status, "values": dict(submission.values),
        "flags": [{"field": flag.field, "message": flag.message} for flag in flags_of(submission)],
        "deviations": [d.number for d in deviations_of(submission)],
        "sample_id": submission.sample_id, "measured_at": iso_time(submission.measured_at),
        "file": {"filename": attachment.filename, "sha256": attachment.sha256, "size": attachment.size}
        if attachment else None,
        "submitted_by": submission.submitted_by.username, "submitted_at": iso_time(submission.submitted_at),
        "via": submission.token.label if submission.token else None,
        "url": f"/api/v1/submissions/{submission.id}",
        "sign_url": url_for("submissions.detail", submission_id=submission.id, _external=True),
    }

"""Recording, correcting and verifying step entries.

Each function is one unit of work: it locks the batch row and checks the version the
user's form was built from, asks the engine whether the entry is allowed and valid,
then writes the entry, its values, any deviations and the batch's new state inside one
``audit.action``. It flushes; the calling view commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from lab import audit
from lab.exceptions import (
    ConcurrentChangeError,
    InvalidInput,
    NotAllowed,
    StepNotAllowed,
)
from lab.extensions import db
from lab.models import (
    Batch,
    Deviation,
    Equipment,
    MaterialLot,
    StepEntry,
    StepValue,
    User,
    utcnow,
)
from lab.permissions import require_role
from lab.services import containers, lot_use
from lab.services.batch_state import automatic_state, move, touch
from lab.services.batches import with_batch_dose
from lab.services.containers import Figures, Scan
from lab.services.deviations import open_deviation
from lab.services.progress import (
    batch_progress,
    definition_for,
    entry_context,
    equipment_info,
    is_verified,
    lot_info,
    signatures_by_entry,
    typed_values,
)
from lab.services.release_status import was_released
from lab.services.signatures import Credentials, current_values, reauthenticate, sign
from workflows.engine import can_start, canonical_code, compute_derived, count_refusals, lot_uses, validate_entry
from workflows.engine_types import EntryResult, EquipmentInfo, FieldValue, LotInfo
from workflows.formatting import format_quantity
from workflows.model import FieldSpec, ProcessDefinition, StepSpec

MAX_COMMENT = 2000
#: States in which recorded values may still be corrected (the record is not yet closed).
CORRECTABLE_STATES = frozenset({"scheduled", "in_process", "qc_testing", "qa_review", "on_hold"})


class EntryRefused(InvalidInput):
    """The entry was not saved; ``result`` keeps the engine's flags for the form.

    ``scans`` are hand-off scans of containers this batch may not use: the caller keeps
    them in the custody trail (``containers.record_mismatches``) after rolling back.
    """

    def __init__(self, message: str, errors: dict[str, str], result: EntryResult | None,
                 scans: list[Scan] | None = None) -> None:
        super().__init__(message, errors)
        self.result = result
        self.scans = scans or []
        if self.scans:
            self.status = 409


def lock_batch(batch: Batch, expected_version: int | None) -> None:
    """Lock the batch row (PostgreSQL: FOR UPDATE) and refuse a form built on an older version."""
    db.session.execute(
        select(Batch).where(Batch.id == batch.id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    db.session.expire(batch, ["entries"])
    if expected_version is not None and batch.version != expected_version:
        raise ConcurrentChangeError(batch.updated_by.full_name, batch.updated_at, batch.updated_by_id)


def _conflict(batch_id: int) -> ConcurrentChangeError:
    """After a lost race the transaction is dead: roll back, then say who won.

    Takes the id, not the batch: the batch's attributes expired with the failed flush.
    """
    db.session.rollback()
    batch = db.session.get(Batch, batch_id)
    assert batch is not None
    return ConcurrentChangeError(batch.updated_by.full_name, batch.updated_at, batch.updated_by_id)


def resolve_codes(step: StepSpec, raw: Mapping[str, str]) -> tuple[
        dict[str, LotInfo | None], dict[str, EquipmentInfo | None], dict[str, int]]:
    """Look up the lot and equipment codes typed into ``step``'s fields.

    Returns what the engine needs (code -> info, None when unknown) and code -> row id.
    """
    lots: dict[str, LotInfo | None] = {}
    equipment: dict[str, EquipmentInfo | None] = {}
    ids: dict[str, int] = {}
    for spec in step.fields:
        code = canonical_code(raw.get(spec.key) or "")
        if not code or spec.type not in ("lot", "equipment"):
            continue
        if spec.type == "lot":
            lot = db.session.scalar(select(MaterialLot).where(MaterialLot.code == code))
            lots[code] = lot_info(lot) if lot else None
            if lot:
                ids[f"lot:{code}"] = lot.id
        else:
            item = db.session.scalar(select(Equipment).where(Equipment.code == code))
            equipment[code] = equipment_info(item) if item else None
            if item:
                ids[f"equipment:{code}"] = item.id
    return lots, equipment, ids


def clean_comment(comment: str) -> str:
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput("Comment too long.", {"comment": f"Use at most {MAX_COMMENT} characters."})
    return comment


def _new_value(spec_type: str, fv: FieldValue, ids: dict[str, int], **kwargs: object) -> StepValue:
    number = float(fv.value) if isinstance(fv.value, (int, float)) and not isinstance(fv.value, bool) else None
    return StepValue(
        field_key=fv.key,
        text=fv.text,
        number=number,
        unit=fv.unit,
        out_of_limit=fv.out_of_limit,
        limit_text=fv.limit_text[:64],
        message=fv.message[:255],
        lot_id=ids.get(f"lot:{fv.text}") if spec_type == "lot" else None,
        equipment_id=ids.get(f"equipment:{fv.text}") if spec_type == "equipment" else None,
        **kwargs,
    )


def _touch(batch: Batch, definition: ProcessDefinition, actor: User, now: datetime) -> None:
    """Mark the batch changed (bumping its version) and move it to the state the engine gives."""
    db.session.flush()
    move(batch, definition, automatic_state(batch, definition))
    touch(batch, actor, now)


def _refuse_closed_record(batch: Batch, definition: ProcessDefinition, words: str) -> None:
    """A batch's record closes with its release (or rejection), even if it is put on hold later."""
    if batch.state not in CORRECTABLE_STATES:
        raise StepNotAllowed(f"Batch {batch.batch_number} is {batch.state}: its record is {words}.")
    if was_released(batch, definition):
        raise StepNotAllowed(f"Batch {batch.batch_number} was released: its record is {words}. Open a deviation "
                             "to document what is wrong.")


def _subject(step: StepSpec, batch: Batch) -> str:
    """What a signature of an entry of ``step`` signs, in words (for a refused attempt)."""
    return f"{step.title} of batch {batch.batch_number}"


def record_step(batch: Batch, step_key: str, raw: Mapping[str, str], *, comment: str,
                expected_version: int | None, actor: User, credentials: Credentials,
                now: datetime | None = None, opened: Mapping[tuple[str, str], Deviation] | None = None) -> StepEntry:
    """Record one entry of ``step_key`` from the text typed on the form, signed by ``actor``
    as performed (21 CFR 11.50; ``credentials`` re-entered, 11.200).

    ``opened``: deviations already open for values of this entry (field key, canonical text),
    opened when an instrument submitted them (lab.services.submissions): such a value, recorded
    unchanged, names its entry in that deviation instead of opening a second one.

    Raises NotAllowed (role), StepNotAllowed (order, state), ConcurrentChangeError (the
    batch changed since the form was built), EntryRefused (invalid values, or a comment
    missing for an out-of-limit value), InvalidInput or SignatureError (credentials).
    Out-of-limit values are kept, flagged, and each opens a deviation.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    step = definition.step(step_key)
    require_role(actor, step.role, f"record {step.title}")
    lock_batch(batch, expected_version)
    refusal = can_start(definition, step_key, batch_progress(batch, definition), batch.state)
    if refusal:
        # SQLite has no row lock: a save that committed since lock_batch read the version
        # shows only now, as the step being taken. Say who took it, as a lost race.
        lock_batch(batch, expected_version)
        raise StepNotAllowed(refusal)
    comment = clean_comment(comment)
    raw = with_batch_dose(batch, step, raw)  # the dose chosen at scheduling, not typed again
    lots, equipment, ids = resolve_codes(step, raw)
    known = containers.resolve(batch, definition, step, raw)
    result = validate_entry(step, raw, entry_context(batch, definition, now=now, lots=lots, equipment=equipment,
                                                     containers=known))
    if result.errors:
        scans = containers.mismatches(batch, step, raw, result, known)
        message = ("STOP: a scanned container does not belong to this batch. Nothing was saved; the scan is "
                   "recorded in the custody trail." if scans else
                   "The entry was not saved: correct the fields marked below.")
        raise EntryRefused(message, result.errors, result, scans)
    if result.needs_comment and not comment:
        reasons = [fv.message for fv in result.exceptions] + ([result.window_message] if result.window_message else [])
        raise EntryRefused("A comment is required.",
                           {"comment": "Explain why the entry is acceptable: " + " ".join(reasons)}, result)
    reauthenticate(actor, credentials, meaning="performed", subject=_subject(step, batch), batch_id=batch.id)
    occurrence = sum(1 for e in batch.entries if e.step_key == step_key) + 1
    batch_id = batch.id
    try:
        with audit.action("step.record", actor=actor, reason=comment or None):
            entry = StepEntry(batch=batch, step_key=step_key, occurrence=occurrence,
                              performed_by=actor, performed_at=now, comment=comment or None)
            db.session.add(entry)
            for fv in result.values.values():
                if fv.value is None:  # an optional field left empty
                    continue
                entry.values.append(_new_value(step.field(fv.key).type, fv, ids,
                                               recorded_at=now, recorded_by_id=actor.id))
            for fv in result.exceptions:
                known = (opened or {}).get((fv.key, fv.text))
                if known is not None:
                    known.entry = entry
                    continue
                open_deviation(batch, source="limit", title=f"{step.title}: {fv.message}", description=comment,
                               entry=entry, field_key=fv.key, actor=actor, now=now)
            if result.window_message:
                open_deviation(batch, source="window", title=f"{step.title}: {result.window_message}",
                               description=comment, entry=entry, actor=actor, now=now)
            db.session.flush()
            containers.record_handoffs(batch, step, entry, result, actor=actor, now=now)
            containers.create_containers(batch, step, entry, result, actor=actor, now=now)
            lot_use.record_uses(batch, entry, lot_uses(step, result.values), ids, actor=actor, now=now)
            _touch(batch, definition, actor, now)
            sign(entry, actor=actor, meaning="performed", now=now)
    except (StaleDataError, IntegrityError):
        raise _conflict(batch_id) from None
    return entry


def correct_value(batch: Batch, entry: StepEntry, field_key: str, new_text: str, *, reason: str,
                  expected_version: int | None, actor: User, credentials: Credentials,
                  now: datetime | None = None) -> StepValue:
    """Supersede the current value of ``field_key`` in ``entry``; the old value stays on record.

    The new value is checked as the original was, at the time the entry was recorded. The
    corrector signs the corrected entry (meaning "corrected"); earlier signatures no longer
    match its content, so an entry that needs verification needs verifying again. What was
    computed from the value is recomputed (``recompute``): containers it made that no longer
    match open a deviation and are never changed. A value with which the step would make
    more containers than its definition allows is refused. Raises as record_step does.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    step = definition.step(entry.step_key)
    spec = step.field(field_key)
    require_role(actor, step.role, f"correct {step.title}")
    _refuse_closed_record(batch, definition, "closed to corrections")
    lock_batch(batch, expected_version)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("A reason is required.", {"reason": "Say why the value is corrected."})
    if len(reason) > MAX_COMMENT:
        raise InvalidInput("Reason too long.", {"reason": f"Use at most {MAX_COMMENT} characters."})
    if spec.batch_dose and batch.target_dose is not None:
        raise InvalidInput("This value cannot be corrected.", {"value": "The target dose is the batch's, chosen "
                           "when it was scheduled: it is not corrected at a step."})
    if spec.type in ("container", "containers"):
        raise InvalidInput("A scan cannot be corrected.", {"value": "A container scan is the custody record of a "
                           "hand-off and cannot be corrected: open a deviation to explain it instead."})
    if spec.from_lot or (spec.type == "lot" and (spec.uses or spec.uses_amount)) or any(
            f.uses == field_key for f in step.fields):
        raise InvalidInput("This value cannot be corrected.", {"value": lot_use.UNCORRECTABLE})
    current = current_values(entry)
    old = current.get(field_key)
    raw = {key: value.text for key, value in current.items()}
    raw[field_key] = new_text
    lots, equipment, ids = resolve_codes(step, {field_key: new_text})
    ctx = entry_context(batch, definition, now=entry.performed_at, exclude=entry, lots=lots, equipment=equipment)
    result = validate_entry(step, raw, ctx)
    if field_key in result.errors:
        raise EntryRefused("The correction was not saved.", {"value": result.errors[field_key]}, result)
    fv = result.values.get(field_key)
    if fv is None or fv.value is None:
        raise InvalidInput("Nothing to record.", {"value": "Enter the corrected value (a value cannot be blanked)."})
    if old is not None and fv.text == old.text:
        raise InvalidInput("No change.", {"value": "The new value is the same as the current one."})
    values = {**typed_values(step, entry), field_key: fv.value}
    refused = count_refusals(step, values, compute_derived(step, values, ctx))
    if refused:
        raise InvalidInput("The correction was not saved.", {"value": next(iter(refused.values()))})
    before = containers.batch_figures(batch, definition)
    reauthenticate(actor, credentials, meaning="corrected", subject=f"correction of {spec.label}, "
                   f"{_subject(step, batch)}", batch_id=batch.id)
    batch_id = batch.id
    change = (f"{spec.label} ({step.title}) corrected from {_value_words(spec, old.text if old else None)} "
              f"to {_value_words(spec, fv.text)} by {actor.full_name}")
    try:
        with audit.action("step.correct", actor=actor, reason=reason):
            value = _new_value(spec.type, fv, ids, entry=entry, recorded_at=now, recorded_by_id=actor.id,
                               supersedes_id=old.id if old else None, reason=reason)
            db.session.add(value)
            db.session.flush()
            if fv.out_of_limit and not _has_open_deviation(entry, fv.key):
                open_deviation(batch, source="limit", title=f"{step.title} (corrected): {fv.message}",
                               description=reason, entry=entry, field_key=fv.key, actor=actor, now=now)
            recompute(batch, definition, before, corrected=entry, change=change, reason=reason, actor=actor, now=now)
            _touch(batch, definition, actor, now)
            sign(entry, actor=actor, meaning="corrected", now=now)
    except (StaleDataError, IntegrityError):
        raise _conflict(batch_id) from None
    return value


def recompute(batch: Batch, definition: ProcessDefinition, before: Figures, *, corrected: StepEntry | None,
              change: str, reason: str, actor: User, now: datetime) -> None:
    """After a correction (of a value, or of the patient's weight): recompute every entry of
    ``batch`` and act on what changed, inside the correction's ``audit.action``.

    A derived value out of limit opens a deviation as a recorded one does (in the corrected
    entry always, elsewhere when the correction changed it), unless one is open for it.
    Containers made from values that no longer give them open a deviation naming each one
    (containers.reconcile). ``before`` is ``batch_figures`` from before the correction.
    """
    after = containers.batch_figures(batch, definition)
    for entry in batch.entries:
        step = definition.step(entry.step_key)
        earlier = before.derived.get(entry.id, {})
        for item in after.derived[entry.id].values():
            was = earlier.get(item.key)
            changed = entry is corrected or was is None or was.text != item.text
            if not item.out_of_limit or not changed or _has_open_deviation(entry, item.key):
                continue
            how = "corrected" if entry is corrected else "recomputed after a correction"
            open_deviation(batch, source="limit", title=f"{step.title} ({how}): {item.message}",
                           description=reason if entry is corrected else f"{change}, for this reason: {reason}",
                           entry=entry, field_key=item.key, actor=actor, now=now)
    containers.reconcile(batch, definition, before, after, change=change, reason=reason, actor=actor, now=now)


def _value_words(spec: FieldSpec, text: str | None) -> str:
    """A value as the correction's deviation names it: numbers in the one notation, with the unit."""
    if text is None:
        return "(empty)"
    return format_quantity(text, spec.unit, None) if spec.type == "number" else text


def _has_open_deviation(entry: StepEntry, field_key: str) -> bool:
    return any(d.entry_id == entry.id and d.field_key == field_key and d.status == "open"
               for d in entry.batch.deviations)


def entry_authors(entry: StepEntry) -> frozenset[int]:
    """The users who recorded ``entry`` or corrected one of its values: none of them may verify it."""
    return frozenset({entry.performed_by_id} | {v.recorded_by_id for v in current_values(entry).values()})


def self_verification(entry: StepEntry, actor: User) -> str | None:
    """Why ``actor`` may not verify ``entry`` (they recorded or corrected it), or None."""
    if actor.id in entry_authors(entry):
        return "You recorded or corrected this entry: a different person must verify it (21 CFR 211.188(b)(11))."
    return None


def verify_entry(batch: Batch, entry: StepEntry, *, credentials: Credentials, expected_version: int | None,
                 actor: User, now: datetime | None = None) -> None:
    """Sign ``entry`` as verified by ``actor``, who must be someone else than its authors.

    Raises NotAllowed (role, self-verification), StepNotAllowed (nothing to verify, or the
    record is closed), InvalidInput or SignatureError (credentials) or
    ConcurrentChangeError. The credentials are checked before anything is written.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    step = definition.step(entry.step_key)
    if not step.verify:
        raise StepNotAllowed(f"{step.title} does not need a second-person verification.")
    require_role(actor, step.verifier_role, f"verify {step.title}")
    refusal = self_verification(entry, actor)
    if refusal:
        raise NotAllowed(refusal)
    _refuse_closed_record(batch, definition, "closed")
    lock_batch(batch, expected_version)
    if is_verified(entry, signatures_by_entry(batch).get(entry.id, [])):
        raise StepNotAllowed("This entry is already verified.")
    reauthenticate(actor, credentials, meaning="verified", subject=_subject(step, batch), batch_id=batch.id)
    batch_id = batch.id
    try:
        with audit.action("step.verify", actor=actor):
            sign(entry, actor=actor, meaning="verified", now=now)
            _touch(batch, definition, actor, now)
    except StaleDataError:
        raise _conflict(batch_id) from None

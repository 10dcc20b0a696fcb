"""The API's read side as JSON-ready dicts: a page of batches, one batch in full, entries of the
audit trail, a patient (pseudonymous).

A batch in full is what its page shows, from the same services (``progress.batch_overview``,
``release_status.quality_record``), plus the digest of its executed batch record as ``/verify``
knows it (``record_issue.snapshot``: the canonical record, no PDF drawn). Times are ISO 8601 in
UTC with ``Z``; numbers are also given as the text recorded, which the record keeps.

Pages of batches are keyset-paged on (updated_at, id), newest change first, with a cursor signed by
the app's secret key (as the batch list's paging links), so an altered cursor is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import url_for
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import contains_eager

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, Patient, ProcessDefinitionRecord, Signature, StepValue, Submission, User
from lab.services.batch_list import BadCursor, choices, read_signed_cursor, signed_cursor
from lab.services.progress import BatchOverview, EntryView, ValueView, batch_overview
from lab.services.record_issue import snapshot
from lab.services.release_status import QualityRecord, TestRow, quality_record
from workflows.engine_types import FieldValue
from workflows.formatting import format_number

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
BATCH_FILTERS = ("state", "product", "updated_since")
_SALT = "celltrail.api.batches.cursor"


def iso_time(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 in UTC with ``Z`` and microseconds (so it can be sent back as a filter)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def person(user: User) -> dict[str, str]:
    return {"username": user.username, "name": user.full_name}


def batch_url(batch_number: str) -> str:
    return url_for("api.batch", batch_number=batch_number)


# -- the list of batches ---------------------------------------------------------------------

@dataclass(frozen=True)
class BatchQuery:
    state: str = ""
    product: str = ""
    updated_since: datetime | None = None


def parse_batch_query(args: Mapping[str, str]) -> BatchQuery:
    """Check the list's filters; raises InvalidInput (422) naming each one at fault."""
    known = choices()
    errors: dict[str, str] = {}
    state, product, since = (args.get(name, "") for name in BATCH_FILTERS)
    if state and state not in dict(known.states):
        errors["state"] = f"No batch state is called {state[:40]!r}; the states are {', '.join(dict(known.states))}."
    if product and product not in dict(known.products):
        errors["product"] = (f"No product (process key) is called {product[:40]!r}; the products are "
                             f"{', '.join(dict(known.products)) or 'none yet'}.")
    moment = None
    if since:
        try:
            moment = datetime.fromisoformat(since) if len(since) <= 40 else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            errors["updated_since"] = (f"{since[:40]!r} is not an ISO 8601 date-time with its UTC offset; "
                                       "send for example 2026-11-25T14:03:00Z.")
    if errors:
        raise InvalidInput("The filter was not understood: see errors.", errors)
    return BatchQuery(state, product, moment)


def _cursor(batch: Batch) -> str:
    return signed_cursor(_SALT, iso_time(batch.updated_at), batch.id)


def _position(text: str) -> tuple[datetime, int] | None:
    """(updated_at, id) of the last batch of the previous page; raises BadCursor (400) when altered."""
    if not text:
        return None
    refused = BadCursor("The cursor was altered or cut short.",
                        {"cursor": "Not a cursor this API gave: send next_cursor as it came, or start without one."})
    leading, when, batch_id = read_signed_cursor(_SALT, text, refused)
    if leading:
        raise refused
    return when, batch_id


def batch_summaries(query: BatchQuery, cursor: str = "", *, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """A page of batches matching ``query``, newest change first, after ``cursor``: one query."""
    position = _position(cursor)
    found = (select(Batch).join(Batch.patient).join(Batch.definition)
             .options(contains_eager(Batch.patient),  # the definition's key and version, not its 33 KB text
                      contains_eager(Batch.definition).load_only(ProcessDefinitionRecord.key,
                                                                 ProcessDefinitionRecord.version))
             .order_by(Batch.updated_at.desc(), Batch.id.desc()))
    if query.state:
        found = found.where(Batch.state == query.state)
    if query.product:
        found = found.where(ProcessDefinitionRecord.key == query.product)
    if query.updated_since is not None:
        found = found.where(Batch.updated_at >= query.updated_since)
    if position is not None:
        when, batch_id = position
        found = found.where(or_(Batch.updated_at < when, and_(Batch.updated_at == when, Batch.id < batch_id)))
    batches = list(db.session.scalars(found.limit(limit + 1)))
    more = len(batches) > limit
    batches = batches[:limit]
    return {"items": [batch_summary(b) for b in batches], "next_cursor": _cursor(batches[-1]) if more else None}


def batch_summary(batch: Batch) -> dict[str, Any]:
    return {"batch_number": batch.batch_number, "coi": batch.patient.coi, "state": batch.state,
            "product": batch.definition.key, "process_version": batch.definition.version,
            "patient_ref": batch.patient.patient_ref, "updated_at": iso_time(batch.updated_at),
            "version": batch.version, "url": batch_url(batch.batch_number)}


# -- one batch in full -----------------------------------------------------------------------

def batch_detail(batch: Batch) -> dict[str, Any]:
    """Everything the batch page shows of ``batch``, and its record's current digest."""
    overview = batch_overview(batch)
    definition = overview.definition
    quality = quality_record(batch, definition)
    return {
        **batch_summary(batch),
        "state_title": definition.states.get(batch.state, batch.state),
        "process_title": definition.title,
        "process_sha256": definition.sha256,
        "started_at": iso_time(batch.created_at),
        "started_by": person(batch.created_by),
        "steps": [{"key": view.spec.key, "title": view.spec.title, "state": view.state.value,
                   "verify": view.spec.verify, "entries": [_entry(entry) for entry in view.entries]}
                  for view in overview.steps],
        **_containers(overview),
        "release_tests": [_test(row) for row in quality.panel],
        **_quality(quality),
        "record_digest": snapshot(batch).digest,
        "pending_submissions": _pending(batch),
    }


def _signatures(signatures: list[tuple[Signature, bool]]) -> list[dict[str, Any]]:
    return [{"printed_name": s.printed_name, "meaning": s.meaning, "signed_at": iso_time(s.signed_at),
             "valid": valid} for s, valid in signatures]


def _entry(view: EntryView) -> dict[str, Any]:
    entry = view.entry
    return {"id": entry.id, "occurrence": entry.occurrence, "performed_by": person(entry.performed_by),
            "performed_at": iso_time(entry.performed_at), "comment": entry.comment,
            "values": [_value(value, value.current) for value in view.values if value.current is not None],
            "derived": [_derived(value) for value in view.derived.values()],
            "signatures": _signatures(view.signatures), "verified_by": view.verified_by,
            "awaiting_verification": view.awaiting_verification}


def _value(view: ValueView, current: StepValue) -> dict[str, Any]:
    versions = {v.id: v for v in (*view.history, current)}
    return {"field": view.spec.key, "label": view.spec.label, "text": current.text, "number": current.number,
            "unit": current.unit, "limit": current.limit_text, "out_of_limit": current.out_of_limit,
            "message": current.message or None, "lot": current.lot.code if current.lot else None,
            "equipment": current.equipment.code if current.equipment else None,
            "recorded_by": person(current.recorded_by), "recorded_at": iso_time(current.recorded_at),
            "corrections": [_correction(v, versions) for v in versions.values() if v.is_correction]}


def _correction(value: StepValue, versions: dict[int, StepValue]) -> dict[str, Any]:
    old = versions.get(value.supersedes_id) if value.supersedes_id is not None else None
    return {"old_value": old.text if old else None, "new_value": value.text, "reason": value.reason,
            "corrected_by": person(value.recorded_by), "corrected_at": iso_time(value.recorded_at)}


def _derived(value: FieldValue) -> dict[str, Any]:
    number = value.value if isinstance(value.value, (int, float)) and not isinstance(value.value, bool) else None
    text = format_number(number) if number is not None else value.text  # as the printed record writes it
    return {"key": value.key, "label": value.label, "text": text, "number": number, "unit": value.unit,
            "limit": value.limit_text, "out_of_limit": value.out_of_limit, "message": value.message or None}


def _containers(overview: BatchOverview) -> dict[str, Any]:
    return {
        "containers": [{"code": v.container.code, "kind": v.container.kind, "title": v.title,
                        "status": v.container.status, "location": v.container.location,
                        "volume_ml": v.container.volume_ml, "labels_printed": v.printed, "reprints": v.reprinted}
                       for v in overview.containers],
        "custody": [{"occurred_at": iso_time(e.occurred_at), "event": e.event,
                     "container": e.container.code if e.container else None, "scanned": e.scanned_code,
                     "step": e.step_key, "from_location": e.from_location, "to_location": e.to_location,
                     "matched": e.matched, "message": e.message or None, "by": person(e.actor)}
                    for e in overview.custody],
    }


def _test(row: TestRow) -> dict[str, Any]:
    return {"key": row.test.key, "title": row.test.title, "method": row.test.method,
            "specification": row.specification, "status": row.status, "results": [
                {"id": r.id, "value": r.text, "number": r.number, "unit": r.unit, "specification": r.spec_text,
                 "verdict": r.verdict, "in_specification": {"pass": True, "fail": False}.get(r.verdict),
                 "final": r.is_final, "message": r.message or None, "comment": r.comment,
                 "recorded_by": person(r.recorded_by), "recorded_at": iso_time(r.recorded_at), "late": r.is_late,
                 "reason": r.reason, "supersedes": r.supersedes_id, "current": r is row.current,
                 "superseded": r.id in row.superseded, "differs_from_record": row.flags.get(r.id),
                 "signatures": _signatures(signed)}
                for r, signed in row.history]}


def _quality(quality: QualityRecord) -> dict[str, Any]:
    return {
        "deviations": [{"number": d.number, "title": d.title, "state": d.status, "source": d.source,
                        "opened_at": iso_time(d.opened_at), "closed_at": iso_time(d.closed_at)}
                       for d, _ in quality.deviations],
        "decisions": [{"decision": d.decision, "title": d.title, "state_before": d.state_before,
                       "state_after": d.state_after, "reason": d.reason, "decided_by": person(d.decided_by),
                       "decided_at": iso_time(d.decided_at), "signatures": _signatures(signed)}
                      for d, signed in quality.decisions],
    }


def _pending(batch: Batch) -> list[dict[str, Any]]:
    """The batch's submissions still waiting for a person's signature, oldest first."""
    found = db.session.execute(select(Submission.id, Submission.kind, Submission.key)
                               .where(Submission.batch_id == batch.id, Submission.status == "pending")
                               .order_by(Submission.id))
    return [{"id": s.id, "kind": s.kind, "key": s.key, "url": url_for("api.submission", submission_id=s.id)}
            for s in found]


# -- the audit trail -------------------------------------------------------------------------

def audit_entry(row: Row[Any]) -> dict[str, Any]:
    """One entry of the trail as stored (``audit_trail.page``'s rows), values as recorded."""
    return {"id": row.id, "occurred_at": iso_time(row.occurred_at),
            "actor": {"id": row.actor_id, "username": row.actor_username}, "action": row.action,
            "operation": row.operation, "table": row.table_name, "row_id": row.row_id, "field": row.field,
            "old_value": row.old_value, "new_value": row.new_value, "reason": row.reason,
            "batch_id": row.batch_id, "batch_number": row.batch_number, "via": row.via,
            "hash": row.hash, "prev_hash": row.prev_hash}


# -- a patient -------------------------------------------------------------------------------

def patient_json(patient: Patient) -> dict[str, Any]:
    """The patient's pseudonymous data: no initials or date of birth (they identify a person
    outside the lab), only what an integrator needs to follow the patient's batches."""
    site = patient.treating_site
    return {"coi": patient.coi, "patient_ref": patient.patient_ref, "indication": patient.indication,
            "weight_kg": patient.weight_kg, "registered_at": iso_time(patient.registered_at),
            "treating_site": {"code": site.code, "name": site.name} if site else None,
            "batches": [{"batch_number": b.batch_number, "state": b.state, "url": batch_url(b.batch_number)}
                        for b in patient.batches]}

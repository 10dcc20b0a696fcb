"""Deviations: opened by the system or by hand, classified and investigated, closed by QA
with an electronic signature. A closed deviation never changes again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.exceptions import InvalidInput, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Deviation, QcResult, StepEntry, Submission, User, utcnow
from lab.models.quality import CLASSIFICATIONS
from lab.permissions import require
from lab.services.sequences import next_deviation_number
from lab.services.signatures import Credentials, reauthenticate, sign

#: What opens a deviation, in words.
SOURCES = {
    "limit": "Value out of limit",
    "window": "Step outside its time window",
    "oos": "Result out of specification",
    "custody": "Custody mismatch",
    "correction": "Correction changes containers already made",
    "manual": "Reported by hand",
    "recall": "Material lot recalled",
}
MAX_TEXT = 4000
INVESTIGATION_FIELDS = {
    "classification": "Classification",
    "root_cause": "Root cause",
    "impact": "Impact",
    "corrective_action": "Corrective action",
    "preventive_action": "Preventive action",
}


@dataclass(frozen=True)
class Investigation:
    """What the investigator writes; every field is needed before QA can close."""

    classification: str
    root_cause: str
    impact: str
    corrective_action: str
    preventive_action: str


@dataclass(frozen=True)
class DeviationFilter:
    """The filters of the deviation list; an empty value does not filter."""

    batch_number: str = ""
    status: str = ""
    classification: str = ""
    source: str = ""


def open_deviation(batch: Batch, *, source: str, title: str, actor: User, now: datetime, description: str = "",
                   entry: StepEntry | None = None, field_key: str | None = None,
                   result: QcResult | None = None, submission: Submission | None = None) -> Deviation:
    """Open a deviation of ``batch`` from ``source`` (a key of SOURCES), numbered DEV-<year>-<n>;
    ``submission``: the values that opened it came from an instrument or a LIMS, not signed yet.

    For services that detect a departure (an out-of-limit value, an OOS result, a custody
    mismatch). Call inside the caller's ``audit.action``; it flushes nothing.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown deviation source {source!r}")
    deviation = Deviation(number=next_deviation_number(now), batch=batch, entry=entry, field_key=field_key,
                          result=result, source=source, title=title[:255], description=description,
                          opened_at=now, opened_by_id=actor.id,
                          submission_id=submission.id if submission is not None else None)
    db.session.add(deviation)
    return deviation


def report_deviation(batch: Batch, *, title: str, description: str, actor: User,
                     now: datetime | None = None) -> Deviation:
    """Open a deviation by hand. Raises NotAllowed (role) or InvalidInput naming the field."""
    require(actor, "report_deviation", "report a deviation")
    now = now or utcnow()
    title = " ".join(title.split())
    errors = {}
    if not 5 <= len(title) <= 255:
        errors["title"] = "Say in 5 to 255 characters what departed from the process."
    if not description.strip():
        errors["description"] = "Describe what happened, when and what was done at once."
    elif len(description) > MAX_TEXT:
        errors["description"] = f"Use at most {MAX_TEXT} characters."
    if errors:
        raise InvalidInput("The deviation was not opened.", errors)
    with audit.action("deviation.open", actor=actor):
        return open_deviation(batch, source="manual", title=title, description=description.strip(),
                              actor=actor, now=now)


def record_investigation(deviation: Deviation, data: Investigation, *, actor: User,
                         now: datetime | None = None) -> None:
    """Classify and investigate an open deviation; earlier wording stays in the audit trail.

    Fields may be filled over several saves; closing needs them all. Raises NotAllowed,
    StepNotAllowed (closed) or InvalidInput.
    """
    require(actor, "investigate_deviation", "investigate a deviation")
    now = now or utcnow()
    _lock(deviation)
    if not deviation.is_open:
        raise StepNotAllowed(f"Deviation {deviation.number} is closed: its investigation can no longer change.")
    values = {key: getattr(data, key).strip() for key in INVESTIGATION_FIELDS}
    errors = {key: f"Use at most {MAX_TEXT} characters." for key, value in values.items() if len(value) > MAX_TEXT}
    if values["classification"] and values["classification"] not in CLASSIFICATIONS:
        errors["classification"] = f"Choose {', '.join(CLASSIFICATIONS)}."
    if errors:
        raise InvalidInput("The investigation was not saved.", errors)
    changed = {key: value or None for key, value in values.items() if (value or None) != getattr(deviation, key)}
    if not changed:
        raise InvalidInput("Nothing changed: the investigation already reads as given.")
    with audit.action("deviation.investigate", actor=actor):
        for key, value in changed.items():
            setattr(deviation, key, value)
        deviation.investigated_at = now
        deviation.investigated_by_id = actor.id


def close_deviation(deviation: Deviation, *, actor: User, credentials: Credentials,
                    now: datetime | None = None) -> None:
    """Close an investigated deviation with QA's signature (meaning "reviewed").

    Raises NotAllowed (not QA), StepNotAllowed (already closed), InvalidInput (an
    investigation field is empty) or SignatureError. Nothing is written on refusal.
    """
    require(actor, "close_deviation", "close a deviation")
    now = now or utcnow()
    _lock(deviation)
    if not deviation.is_open:
        raise StepNotAllowed(f"Deviation {deviation.number} is already closed.")
    missing = {key: f"{label} is needed before the deviation can be closed."
               for key, label in INVESTIGATION_FIELDS.items() if not getattr(deviation, key)}
    if missing:
        raise InvalidInput("The deviation cannot be closed before its investigation is complete: "
                           + ", ".join(INVESTIGATION_FIELDS[k].lower() for k in missing) + " missing.", missing)
    reauthenticate(actor, credentials, meaning="reviewed", subject=f"closing deviation {deviation.number}",
                   batch_id=deviation.batch_id)
    with audit.action("deviation.close", actor=actor):
        deviation.status = "closed"
        deviation.closed_at = now
        deviation.closed_by_id = actor.id
        db.session.flush()
        sign(deviation, actor=actor, meaning="reviewed", now=now)


def find_deviations(filters: DeviationFilter) -> list[Deviation]:
    """Deviations across batches, newest first. Raises InvalidInput for an unknown filter value."""
    errors = {}
    if filters.status and filters.status not in ("open", "closed"):
        errors["status"] = "Status is open or closed."
    if filters.classification and filters.classification not in (*CLASSIFICATIONS, "unclassified"):
        errors["classification"] = f"Classification is one of {', '.join(CLASSIFICATIONS)} or unclassified."
    if filters.source and filters.source not in SOURCES:
        errors["source"] = f"Source is one of {', '.join(SOURCES)}."
    if errors:
        raise InvalidInput("Unknown filter.", errors)
    return list(db.session.scalars(_query(filters)))


def _query(filters: DeviationFilter) -> Select[Deviation]:
    query = (select(Deviation).join(Deviation.batch)
             .options(selectinload(Deviation.batch).selectinload(Batch.patient), selectinload(Deviation.opened_by))
             .order_by(Deviation.opened_at.desc(), Deviation.id.desc()).limit(500))
    if filters.batch_number:
        query = query.where(Batch.batch_number == filters.batch_number.strip().upper())
    if filters.status:
        query = query.where(Deviation.status == filters.status)
    if filters.classification == "unclassified":
        query = query.where(Deviation.classification.is_(None))
    elif filters.classification:
        query = query.where(Deviation.classification == filters.classification)
    if filters.source:
        query = query.where(Deviation.source == filters.source)
    return query


def _lock(deviation: Deviation) -> None:
    """Serialize changes to one deviation (PostgreSQL: FOR UPDATE) and see its latest state."""
    db.session.execute(select(Deviation).where(Deviation.id == deviation.id).with_for_update()
                       .execution_options(populate_existing=True)).scalar_one()

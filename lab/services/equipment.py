"""The equipment register and its logbook (21 CFR 211.63, 211.67, 211.68, 211.182).

Supervisors and QA register instruments: each gets a code with a check character (``E-...``)
and a label. Whoever calibrates, cleans, maintains or qualifies one writes its logbook, with
the certificate attached: a passing calibration moves the calibration due date, a failed one
takes the instrument out of service; a qualification sets its qualification status. A
supervisor or QA takes an instrument out of service with a reason; only QA puts it back,
signing (meaning "returned to service"). Steps refuse equipment that is out of service, not
qualified or past its calibration date (workflows.engine). Every write is audited; a refused
one writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, Equipment, EquipmentLogEntry, ProcessDefinitionRecord, StepEntry, StepValue, User, utcnow
from lab.models.equipment import QUALIFICATIONS, RESULTS, WORK_KINDS
from lab.permissions import require
from lab.services.attachments import store
from lab.services.progress import lab_timezone
from lab.services.sequences import next_code
from lab.services.signatures import Credentials, reauthenticate, record_signatures, register_signed, sign
from lab.workflow_registry import pinned_definition, workflow_dir
from labels.item_label import ItemLabel, ItemLine, render_item_label
from workflows.codes import CheckCharacterError, CodeError, CodeKind, parse_code
from workflows.definition import load_directory
from workflows.engine import canonical_code

register_signed(EquipmentLogEntry)

MAX_NAME = 128
MAX_SHORT = 64
MAX_TEXT = 2000
#: A calibration interval longer than this is a typing error (a year typed as 2207).
MAX_INTERVAL_DAYS = 10 * 366
#: Equipment due for calibration within this many days is highlighted.
DUE_SOON_DAYS = 30
#: Where-used rows shown on an instrument's page (newest first).
MAX_WHERE_USED = 500
RETURN_MEANING = "returned to service"


@dataclass(frozen=True)
class EquipmentInput:
    """A registration as typed."""

    name: str
    kind: str
    serial_number: str
    location: str
    qualification: str
    calibration_due: date | None


@dataclass(frozen=True)
class LogInput:
    """A logbook entry as typed; ``certificate`` is the uploaded file (stream, filename) or None."""

    kind: str
    performed_on: date | None
    performed_by: str
    what: str
    result: str
    next_due: date | None
    certificate: tuple[IO[bytes], str | None] | None = None


@dataclass(frozen=True)
class Usage:
    """One recording of an instrument at a batch step (where-used)."""

    batch_number: str
    step_key: str
    step_title: str
    recorded_at: datetime
    operator: str
    corrected: bool


def today(now: datetime) -> date:
    return now.astimezone(lab_timezone()).date()


def equipment_kinds() -> list[str]:
    """The equipment kinds steps ask for (from the process definitions) and those already registered."""
    try:
        definitions = list(load_directory(workflow_dir()).values())
    except ValueError:  # a broken file on disk (check-workflows names it): the stored versions still count
        definitions = []
    for record in db.session.scalars(select(ProcessDefinitionRecord)):
        try:
            definitions.append(pinned_definition(record.sha256, record.source_text, record.source_name))
        except ValueError:  # a stored draft that does not parse asks for no equipment
            continue
    kinds = {spec.equipment for definition in definitions for step in definition.steps for spec in step.fields
             if spec.type == "equipment" and spec.equipment}
    kinds |= set(db.session.scalars(select(Equipment.kind).distinct()).all())
    return sorted(kinds)


def find(code: str) -> Equipment | None:
    """The instrument a typed or scanned code names (any case, with or without hyphens)."""
    text = (code or "").strip()
    if not text or len(text) > 64:
        return None
    return db.session.scalar(select(Equipment).where(Equipment.code == canonical_code(text)))


def code_error(code: str) -> str:
    """Why ``code`` names no instrument (``find`` returned None): a wrong check character, or unknown."""
    text = (code or "").strip()
    try:
        parse_code(text, CodeKind.EQUIPMENT)
    except CheckCharacterError as error:
        return str(error)
    except CodeError:
        pass
    return f"No equipment {text.upper()[:64]!r} is registered in this lab."


def _clean(value: str | None, field: str, limit: int, errors: dict[str, str], missing: str | None) -> str:
    text = " ".join((value or "").split()) if limit <= MAX_NAME else (value or "").strip()
    if not text and missing:
        errors[field] = missing
    elif len(text) > limit:
        errors[field] = f"Use at most {limit} characters."
    elif text and not text.replace("\n", " ").replace("\r", " ").replace("\t", " ").isprintable():
        errors[field] = "Remove the control characters."
    return text


def register_equipment(data: EquipmentInput, *, actor: User, now: datetime | None = None) -> Equipment:
    """Register an instrument under a new code with a check character.

    Raises NotAllowed (not a supervisor or QA) or InvalidInput naming the field (missing name,
    unknown kind, serial number already registered for the same kind, calibration due in the
    past); nothing is written then.
    """
    now = now or utcnow()
    require(actor, "register_equipment", "register equipment")
    errors: dict[str, str] = {}
    name = _clean(data.name, "name", MAX_NAME, errors, "Enter the instrument's name (e.g. CO2 incubator #3).")
    serial = _clean(data.serial_number, "serial_number", MAX_SHORT, errors, "Enter the manufacturer's serial number.")
    location = _clean(data.location, "location", MAX_NAME, errors, "Say where the instrument stands.")
    kind = (data.kind or "").strip()
    if kind not in equipment_kinds():
        errors["kind"] = "Choose the kind of equipment the process steps ask for."
    if data.qualification not in QUALIFICATIONS:
        errors["qualification"] = "Choose qualified or not qualified."
    if data.calibration_due is not None:
        if data.calibration_due < today(now):
            errors["calibration_due"] = (f"The calibration due date cannot be in the past (today is "
                                         f"{today(now).isoformat()}): record the calibration in the logbook instead.")
        elif data.calibration_due > today(now) + timedelta(days=MAX_INTERVAL_DAYS):
            errors["calibration_due"] = "That is more than ten years ahead: check the year."
    if serial and "serial_number" not in errors and "kind" not in errors:
        other = db.session.scalar(select(Equipment).where(Equipment.kind == kind, Equipment.serial_number == serial))
        if other is not None:
            errors["serial_number"] = (f"Serial number {serial} is already registered for {other.name} "
                                       f"({other.code}), of the same kind.")
    if errors:
        raise InvalidInput("The equipment was not registered.", errors)
    with audit.action("equipment.register", actor=actor):
        item = Equipment(code=next_code(CodeKind.EQUIPMENT, now), kind=kind, name=name, serial_number=serial,
                         location=location, qualification=data.qualification, calibration_due=data.calibration_due,
                         active=True, created_at=now, registered_by_id=actor.id)
        db.session.add(item)
    return item


def _log_errors(item: Equipment, data: LogInput, now: datetime) -> tuple[dict[str, str], str, str]:
    errors: dict[str, str] = {}
    performed_by = _clean(data.performed_by, "performed_by", MAX_NAME, errors,
                          "Say who did the work (your name, or the service engineer's as on the certificate).")
    what = _clean(data.what, "what", MAX_TEXT, errors, "Say what was done (e.g. temperature and CO2 verified "
                                                         "against the reference probe).")
    if data.kind not in WORK_KINDS:
        errors["kind"] = "Choose calibration, maintenance, cleaning or qualification."
    if data.result not in RESULTS:
        errors["result"] = "Choose pass or fail."
    day = today(now)
    if data.performed_on is None:
        errors["performed_on"] = "Enter the day the work was done."
    elif data.performed_on > day:
        errors["performed_on"] = f"The work cannot be recorded before it is done: {data.performed_on.isoformat()} " \
                                 f"is in the future (today is {day.isoformat()})."
    elif data.performed_on < item.created_at.astimezone(lab_timezone()).date() - timedelta(days=MAX_INTERVAL_DAYS):
        errors["performed_on"] = "That is more than ten years before the instrument was registered: check the year."
    if data.next_due is not None:
        if data.performed_on is not None and data.next_due <= data.performed_on:
            errors["next_due"] = (f"The next due date must come after the day the work was done "
                                  f"({data.performed_on.isoformat()}).")
        elif data.next_due > day + timedelta(days=MAX_INTERVAL_DAYS):
            errors["next_due"] = "That is more than ten years ahead: check the year."
    elif data.kind == "calibration" and data.result == "pass":
        errors["next_due"] = "A passed calibration needs the date the next one is due."
    return errors, performed_by, what


def record_log_entry(item: Equipment, data: LogInput, *, actor: User, now: datetime | None = None) -> EquipmentLogEntry:
    """Append one calibration, maintenance, cleaning or qualification entry to ``item``'s logbook.

    A passed calibration sets the calibration due date to ``next_due``; a failed one takes the
    instrument out of service. A qualification sets the qualification status. Raises
    NotAllowed or InvalidInput naming the field (a date in the future, next due before the
    work, a certificate that is not a PDF or image or too large); nothing is written then.
    """
    now = now or utcnow()
    require(actor, "record_equipment_log", "write in an equipment logbook")
    errors, performed_by, what = _log_errors(item, data, now)
    if errors:
        raise InvalidInput("The logbook entry was not recorded.", errors)
    with audit.action(f"equipment.{data.kind}", actor=actor):
        attachment = None
        if data.certificate is not None:
            stream, filename = data.certificate
            attachment = store(stream, filename, field="certificate", actor=actor, now=now)
            db.session.flush()
        entry = EquipmentLogEntry(equipment=item, kind=data.kind, performed_on=data.performed_on,
                                  performed_by=performed_by, what=what, result=data.result, next_due=data.next_due,
                                  attachment=attachment, recorded_at=now, recorded_by_id=actor.id)
        db.session.add(entry)
        if data.kind == "calibration" and data.result == "pass":
            item.calibration_due = data.next_due
        elif data.kind == "calibration" and item.active:
            item.active = False
            item.out_of_service_reason = f"calibration failed on {data.performed_on}"
        if data.kind == "qualification":
            item.qualification = "qualified" if data.result == "pass" else "not_qualified"
        db.session.flush()
    return entry


def _reason(reason: str | None, what: str) -> str:
    errors: dict[str, str] = {}
    text = _clean(reason, "reason", MAX_TEXT, errors, what)
    if errors:
        raise InvalidInput("Nothing was changed.", errors)
    return text


def take_out_of_service(item: Equipment, reason: str, *, actor: User,
                        now: datetime | None = None) -> EquipmentLogEntry:
    """Take ``item`` out of service for ``reason``; steps refuse it from now on (logged)."""
    now = now or utcnow()
    require(actor, "take_equipment_out_of_service", "take equipment out of service")
    text = _reason(reason, "Say why the instrument is taken out of service.")
    if not item.active:
        raise InvalidInput("The instrument is already out of service.", {
            "reason": f"{item.name} is already out of service ({item.out_of_service_reason or 'no reason given'})."})
    with audit.action("equipment.out_of_service", actor=actor, reason=text):
        entry = EquipmentLogEntry(equipment=item, kind="out_of_service", performed_on=today(now),
                                  performed_by=actor.full_name, what=text, recorded_at=now, recorded_by_id=actor.id)
        db.session.add(entry)
        item.active = False
        item.out_of_service_reason = text[:500]
        db.session.flush()
    return entry


def return_to_service(item: Equipment, reason: str, *, actor: User, credentials: Credentials,
                      now: datetime | None = None) -> EquipmentLogEntry:
    """QA puts ``item`` back in service, signing (meaning "returned to service") an entry that
    says why. Raises NotAllowed (not QA), InvalidInput or SignatureError; nothing is written then
    (the caller keeps a refused signature's attempt)."""
    now = now or utcnow()
    require(actor, "return_equipment_to_service", "put equipment back in service")
    text = _reason(reason, "Say why the instrument may be used again (e.g. repaired and calibrated, "
                           "certificate in the logbook).")
    if item.active:
        raise InvalidInput("The instrument is in service.", {"reason": f"{item.name} is already in service."})
    reauthenticate(actor, credentials, meaning=RETURN_MEANING, subject=f"return of {item.name} {item.code} to service",
                   batch_id=None)
    with audit.action("equipment.returned_to_service", actor=actor, reason=text):
        entry = EquipmentLogEntry(equipment=item, kind="returned_to_service", performed_on=today(now),
                                  performed_by=actor.full_name, what=text, recorded_at=now, recorded_by_id=actor.id)
        db.session.add(entry)
        item.active = True
        item.out_of_service_reason = None
        db.session.flush()
        sign(entry, actor=actor, meaning=RETURN_MEANING, now=now)
    return entry


def logbook(item: Equipment) -> list[tuple[EquipmentLogEntry, list]]:
    """``item``'s logbook, newest first, each entry with its signatures (and whether each still matches)."""
    entries = db.session.scalars(select(EquipmentLogEntry).where(EquipmentLogEntry.equipment_id == item.id)
                                 .options(selectinload(EquipmentLogEntry.attachment),
                                          selectinload(EquipmentLogEntry.recorded_by))
                                 .order_by(EquipmentLogEntry.id.desc())).all()
    return [(entry, record_signatures(entry) if entry.kind == "returned_to_service" else []) for entry in entries]


def where_used(item: Equipment, limit: int = MAX_WHERE_USED) -> list[Usage]:
    """Every batch step that recorded ``item``, newest first (a value later corrected is marked)."""
    from lab.services.progress import definition_for

    rows = db.session.execute(
        select(StepValue, StepEntry, Batch).join(StepEntry, StepValue.entry_id == StepEntry.id)
        .join(Batch, StepEntry.batch_id == Batch.id).where(StepValue.equipment_id == item.id)
        .options(selectinload(StepValue.recorded_by)).order_by(StepValue.recorded_at.desc(), StepValue.id.desc())
        .limit(limit)).all()
    superseded = set(db.session.scalars(select(StepValue.supersedes_id).where(
        StepValue.supersedes_id.in_([value.id for value, _, _ in rows]))).all()) if rows else set()
    usages = []
    titles: dict[int, dict[str, str]] = {}
    for value, entry, batch in rows:
        if batch.id not in titles:
            titles[batch.id] = {step.key: step.title for step in definition_for(batch).steps}
        usages.append(Usage(batch.batch_number, entry.step_key, titles[batch.id].get(entry.step_key, entry.step_key),
                            value.recorded_at, value.recorded_by.full_name, value.id in superseded))
    return usages


def calibration_state(item: Equipment, now: datetime) -> str:
    """``overdue``, ``due_soon`` (within 30 days), ``ok`` or ``none`` (no calibration date)."""
    if item.calibration_due is None:
        return "none"
    day = today(now)
    if item.calibration_due < day:
        return "overdue"
    return "due_soon" if item.calibration_due <= day + timedelta(days=DUE_SOON_DAYS) else "ok"


def needing_attention(now: datetime | None = None, limit: int = 200) -> list[tuple[Equipment, str]]:
    """Equipment a supervisor or QA must act on, with why: out of service, not qualified,
    calibration overdue or due within 30 days (for the dashboard)."""
    now = now or utcnow()
    horizon = today(now) + timedelta(days=DUE_SOON_DAYS)
    rows = db.session.scalars(select(Equipment).where(
        (Equipment.active.is_(False)) | (Equipment.qualification != "qualified") | (Equipment.calibration_due <= horizon))
        .order_by(Equipment.calibration_due, Equipment.id).limit(limit)).all()
    found = []
    for item in rows:
        state = calibration_state(item, now)
        why = ("out of service" if not item.active else "not qualified" if not item.is_qualified
               else f"calibration overdue since {item.calibration_due}" if state == "overdue"
               else f"calibration due {item.calibration_due}")
        found.append((item, why))
    return found


def label_pdf(item: Equipment, now: datetime | None = None) -> bytes:
    """The instrument's label: its code as text and QR, name, serial number, location, calibration due, status."""
    now = now or utcnow()
    due = item.calibration_due.isoformat() if item.calibration_due else "not required"
    lines = [ItemLine("Type", item.kind_title), ItemLine("Serial no.", item.serial_number or "—"),
             ItemLine("Location", item.location or "—"), ItemLine("Calibration due", due, bold=True),
             ItemLine("Status", item.status_text, bold=True)]
    return render_item_label(ItemLabel(title="Equipment", code=item.code, name=item.name,
                                       printed_at=now.astimezone(lab_timezone()), lines=tuple(lines)))

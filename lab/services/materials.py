"""Material items and lots (21 CFR 211.80-211.89, 211.184; DOMAIN §6; JOURNEYS 5).

A lot is received into quarantine with its supplier's certificate and gets its own code
with a check character. QC records the incoming check; QA releases or rejects the lot,
signing; QA can recall a released lot, which puts every open batch that used it on hold
with a deviation naming the lot. Steps take what they use from a lot's balance
(lab.services.lot_use); ``where_used`` finds every batch and step that used a lot.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.models import (
    Batch,
    Disposition,
    Download,
    LotCheck,
    LotConsumption,
    LotDecision,
    MaterialItem,
    MaterialLot,
    StepEntry,
    StepValue,
    User,
    utcnow,
)
from lab.models.inventory import LOT_DECISIONS
from lab.permissions import require
from lab.services import attachments
from lab.services.batch_state import move, touch
from lab.services.deviations import open_deviation
from lab.services.progress import definition_for, lot_info
from lab.services.release_status import was_released
from lab.services.sequences import next_code
from lab.services.signatures import Credentials, reauthenticate, record_sha256, register_signed, sign
from lab.services.steps import lock_batch
from workflows.codes import CodeKind
from workflows.engine import canonical_code, lot_unusable
from workflows.formatting import format_number, format_quantity
from workflows.model import ProcessDefinition

register_signed(LotDecision)

SLUG = re.compile(r"[a-z][a-z0-9_]{1,63}")
MAX_TEXT = 2000
#: Bounds of what a lab receives (a box of vials, a drum of buffer): anything above is a typing error.
MAX_QUANTITY = 1_000_000
MAX_CONTAINERS = 1000
MAX_TITER = 1e12
#: Label prints listed in a lot's history (the trail keeps every one).
MAX_LABEL_PRINTS = 100
EARLIEST = date(2000, 1, 1)


@dataclass(frozen=True)
class ItemInput:
    name: str
    material: str
    supplier: str
    catalogue_number: str
    storage: str
    unit: str
    needs_qc: bool = True


@dataclass(frozen=True)
class LotInput:
    """What the receiving technician typed (as text: the service parses and names each fault)."""

    item_id: str
    lot_number: str
    expiry_date: str
    quantity: str
    container_count: str
    received_on: str
    titer: str = ""


@dataclass(frozen=True)
class CheckInput:
    identity_ok: bool
    condition_ok: bool
    certificate_ok: bool
    comment: str = ""


@dataclass(frozen=True)
class Use:
    """One use of a lot, for the where-used list: the batch, the step and what was taken."""

    batch: Batch
    entry: StepEntry
    step_title: str
    field_label: str
    quantity: float | None
    unit: str
    released: bool
    superseded: bool  # the lot code was later corrected away from this lot


@dataclass(frozen=True)
class HistoryEvent:
    when: datetime
    who: str
    what: str


@dataclass(frozen=True)
class RecallOutcome:
    decision: LotDecision
    held: list[Batch]  # open batches put on hold (each with a deviation)
    released: list[Batch]  # released batches that used the lot, for QA's decision


def _line(text: str, field: str, label: str, errors: dict[str, str], *, limit: int, required: bool = True) -> str:
    """One line of text, with runs of spaces collapsed; a fault goes into ``errors``."""
    value = " ".join(text.split())
    if required and not value:
        errors[field] = f"Enter the {label}."
    elif len(value) > limit:
        errors[field] = f"Use at most {limit} characters."
    elif not value.isprintable():
        errors[field] = "Use printable characters only."
    return value


def _number(text: str, field: str, label: str, errors: dict[str, str], *, maximum: float,
            whole: bool = False) -> float | None:
    text = text.strip()
    if not text:
        errors[field] = f"Enter the {label}."
        return None
    try:
        value = float(text)
    except ValueError:
        errors[field] = f"{label.capitalize()}: {text[:40]!r} is not a number."
        return None
    if not math.isfinite(value) or value <= 0:
        errors[field] = f"{label.capitalize()} must be more than 0."
    elif value > maximum:
        errors[field] = f"{label.capitalize()} {text[:20]} is more than {maximum:,.0f}: check it."
    elif whole and value != int(value):
        errors[field] = f"{label.capitalize()} is a whole number."
    else:
        return value
    return None


def _date(text: str, field: str, label: str, errors: dict[str, str]) -> date | None:
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        errors[field] = f"Enter the {label} as a date (YYYY-MM-DD)."
        return None
    if value < EARLIEST:
        errors[field] = f"The {label} is before the year 2000: check it."
        return None
    return value


# --- the catalogue -----------------------------------------------------------------------------

def create_item(data: ItemInput, *, actor: User, now: datetime | None = None) -> MaterialItem:
    """Add an item to the catalogue (QA or a supervisor). InvalidInput names each faulty field."""
    require(actor, "manage_material_items", "add a material item")
    now = now or utcnow()
    errors: dict[str, str] = {}
    name = _line(data.name, "name", "item name", errors, limit=128)
    material = data.material.strip().lower()
    if not SLUG.fullmatch(material):
        errors["material"] = ("Use the material kind the process definition names: lower-case letters, digits and "
                              "underscores, e.g. transact or lentiviral_vector.")
    supplier = _line(data.supplier, "supplier", "supplier", errors, limit=128)
    catalogue = _line(data.catalogue_number, "catalogue_number", "catalogue number", errors, limit=64)
    storage = _line(data.storage, "storage", "storage condition", errors, limit=128)
    unit = _line(data.unit, "unit", "unit lots are counted in (mL, vials, sets)", errors, limit=16)
    if name and "name" not in errors and db.session.scalar(select(MaterialItem.id).where(MaterialItem.name == name)):
        errors["name"] = f"{name} is already in the catalogue."
    if errors:
        raise InvalidInput("The item was not added.", errors)
    with audit.action("material.item_create", actor=actor):
        item = MaterialItem(name=name, material=material, supplier=supplier, catalogue_number=catalogue,
                            storage=storage, unit=unit, needs_qc=data.needs_qc, created_at=now,
                            created_by_id=actor.id)
        db.session.add(item)
    return item


def items() -> list[MaterialItem]:
    return list(db.session.scalars(select(MaterialItem).order_by(MaterialItem.name)))


# --- receiving ---------------------------------------------------------------------------------

def receive_lot(data: LotInput, certificate: IO[bytes] | None, filename: str | None, *, actor: User,
                now: datetime | None = None) -> MaterialLot:
    """Receive a lot into quarantine with its certificate of analysis; it gets its own code.

    Raises NotAllowed (role) or InvalidInput naming each faulty field (an unknown item, a lot
    number already received for the item, a quantity that is not positive or is absurd, an
    expiry not after the receipt date, a receipt date in the future, a missing certificate or a
    file that is not a PDF or image or is too large). Nothing is written then.
    """
    require(actor, "receive_lot", "receive a material lot")
    now = now or utcnow()
    errors: dict[str, str] = {}
    item = None
    if data.item_id.strip().isdigit():
        item = db.session.get(MaterialItem, int(data.item_id))
    if item is None:
        errors["item_id"] = "Choose the item received from the catalogue."
    lot_number = _line(data.lot_number, "lot_number", "supplier's lot number", errors, limit=64)
    if item is not None and lot_number and "lot_number" not in errors and db.session.scalar(
            select(MaterialLot.code).where(MaterialLot.item_id == item.id, MaterialLot.lot_number == lot_number)):
        errors["lot_number"] = f"Lot {lot_number} of {item.name} was already received."
    quantity = _number(data.quantity, "quantity", "quantity received", errors, maximum=MAX_QUANTITY)
    count = _number(data.container_count, "container_count", "number of containers", errors,
                    maximum=MAX_CONTAINERS, whole=True)
    received_on = _date(data.received_on, "received_on", "date received", errors)
    expiry = _date(data.expiry_date, "expiry_date", "expiry date", errors)
    if received_on is not None and received_on > now.date():
        errors["received_on"] = "The date received cannot be in the future."
    if received_on is not None and expiry is not None and expiry <= received_on:
        errors["expiry_date"] = (f"The expiry date {expiry.isoformat()} is not after the date received "
                                 f"{received_on.isoformat()}: check the supplier's label.")
    titer = None
    if data.titer.strip():
        titer = _number(data.titer, "titer", "titer", errors, maximum=MAX_TITER)
    if certificate is None or not filename:
        errors["certificate"] = "Attach the supplier's certificate of analysis (PDF, PNG or JPEG)."
    if errors:
        raise InvalidInput("The lot was not received.", errors)
    assert item is not None and quantity is not None and count is not None and certificate is not None
    assert received_on is not None and expiry is not None
    with audit.action("material.lot_receive", actor=actor):
        stored = attachments.store(certificate, filename, field="certificate", actor=actor, now=now)
        lot = MaterialLot(code=next_code(CodeKind.LOT, now), item=item, material=item.material, name=item.name,
                          supplier=item.supplier, lot_number=lot_number, expiry_date=expiry, status="quarantined",
                          quantity_received=quantity, balance=quantity, unit=item.unit, container_count=int(count),
                          received_on=received_on, received_by_id=actor.id, certificate=stored, titer=titer,
                          created_at=now)
        db.session.add(lot)
    return lot


def find_lot(text: str) -> MaterialLot | None:
    """The lot whose code is ``text`` (typed without hyphens or in lower case too), or None."""
    if not text or len(text) > 64:
        return None
    return db.session.scalar(select(MaterialLot).where(MaterialLot.code == canonical_code(text)))


def lots() -> list[MaterialLot]:
    return list(db.session.scalars(select(MaterialLot).options(selectinload(MaterialLot.item))
                                    .order_by(MaterialLot.material, MaterialLot.id)))


def unusable_reason(lot: MaterialLot, today: date) -> str:
    """Why a step would refuse the lot whatever amount it asks for ("" when usable): the engine's rule."""
    return lot_unusable(lot_info(lot), today)


# --- incoming QC and QA's decisions -----------------------------------------------------------

def record_check(lot: MaterialLot, data: CheckInput, *, actor: User, now: datetime | None = None) -> LotCheck:
    """QC's incoming check of a quarantined lot; a failed point needs a comment."""
    require(actor, "check_lot", "record the incoming check of a lot")
    now = now or utcnow()
    if lot.status != "quarantined":
        raise InvalidInput("The check was not recorded.", {"identity_ok": f"Lot {lot.code} is {lot.status}: only a "
                                                                          "quarantined lot is checked."})
    comment = data.comment.strip()
    passed = data.identity_ok and data.condition_ok and data.certificate_ok
    if len(comment) > MAX_TEXT:
        raise InvalidInput("The check was not recorded.", {"comment": f"Use at most {MAX_TEXT} characters."})
    if not passed and not comment:
        raise InvalidInput("The check was not recorded.", {"comment": "Say what was found wrong."})
    with audit.action("material.lot_check", actor=actor, reason=comment or None):
        check = LotCheck(lot=lot, identity_ok=data.identity_ok, condition_ok=data.condition_ok,
                         certificate_ok=data.certificate_ok, result="pass" if passed else "fail", comment=comment,
                         checked_at=now, checked_by_id=actor.id)
        db.session.add(check)
    return check


def _lock(lot: MaterialLot) -> None:
    db.session.execute(select(MaterialLot).where(MaterialLot.id == lot.id).with_for_update()
                       .execution_options(populate_existing=True))


def decide_lot(lot: MaterialLot, decision: str, *, reason: str, actor: User, credentials: Credentials,
               now: datetime | None = None) -> LotDecision:
    """QA releases ("released") or rejects ("rejected") a quarantined lot, signing with the meaning
    "released for use" or "rejected". Release needs a passed incoming check when the item asks for
    one, an unexpired lot, and a QA officer other than the person who received it."""
    require(actor, "decide_lot", "release or reject a material lot")
    now = now or utcnow()
    if decision not in ("released", "rejected"):
        raise InvalidInput("Unknown decision.", {"decision": "Choose release or reject."})
    reason = reason.strip()
    _lock(lot)
    if lot.status != "quarantined":
        raise InvalidInput("Nothing was decided.", {"decision": f"Lot {lot.code} is {lot.status}, not in "
                                                                "quarantine: its disposition is already decided."})
    if lot.received_by_id == actor.id:
        raise NotAllowed(f"You received lot {lot.code}: its release must be decided by someone else "
                         "(a second person).")
    errors: dict[str, str] = {}
    if len(reason) > MAX_TEXT:
        errors["reason"] = f"Use at most {MAX_TEXT} characters."
    if decision == "rejected" and not reason:
        errors["reason"] = "Say why the lot is rejected."
    if decision == "released":
        last = lot.checks[-1] if lot.checks else None
        if last is not None and last.result == "fail":
            errors["decision"] = (f"The incoming check of lot {lot.code} failed ({last.comment}): reject the lot, "
                                  "or have QC check it again.")
        elif last is None and (lot.item is None or lot.item.needs_qc):
            errors["decision"] = (f"Lot {lot.code} has no incoming QC check yet: QC must record it before the lot "
                                  "is released.")
        elif lot.expiry_date < now.date():
            errors["decision"] = f"Lot {lot.code} expired on {lot.expiry_date.isoformat()}: it cannot be released."
    if errors:
        raise InvalidInput("Nothing was decided.", errors)
    meaning = LOT_DECISIONS[decision]
    reauthenticate(actor, credentials, meaning=meaning, subject=f"lot {lot.code} ({lot.name})", batch_id=None)
    with audit.action(f"material.lot_{decision}", actor=actor, reason=reason or None):
        record = LotDecision(lot=lot, decision=decision, reason=reason, decided_at=now, decided_by_id=actor.id)
        db.session.add(record)
        lot.status = decision
        db.session.flush()
        sign(record, actor=actor, meaning=meaning, now=now)
    return record


# --- where-used and recall --------------------------------------------------------------------

def where_used(lot: MaterialLot) -> list[Use]:
    """Every step entry that recorded ``lot`` (by its code), oldest first, with what it took."""
    values = list(db.session.scalars(
        select(StepValue).where(StepValue.lot_id == lot.id).order_by(StepValue.id)
        .options(selectinload(StepValue.entry).selectinload(StepEntry.batch))))
    taken = {(c.entry_id, c.field_key): c for c in db.session.scalars(
        select(LotConsumption).where(LotConsumption.lot_id == lot.id))}
    superseding = {v.supersedes_id for v in db.session.scalars(
        select(StepValue).where(StepValue.supersedes_id.in_([v.id for v in values])))} if values else set()
    uses: list[Use] = []
    seen: set[tuple[int, str]] = set()
    definitions: dict[int, ProcessDefinition] = {}
    for value in values:
        entry = value.entry
        if (entry.id, value.field_key) in seen:
            continue
        seen.add((entry.id, value.field_key))
        batch = entry.batch
        if batch.id not in definitions:
            definitions[batch.id] = definition_for(batch)
        definition = definitions[batch.id]
        step = definition.step(entry.step_key)
        label = next((f.label for f in step.fields if f.key == value.field_key), value.field_key)
        use = taken.get((entry.id, value.field_key))
        uses.append(Use(batch, entry, step.title, label, use.quantity if use else None, use.unit if use else "",
                        was_released(batch, definition), value.id in superseding))
    return uses


def history(lot: MaterialLot) -> list[HistoryEvent]:
    """The lot's own record in time order: receipt, checks, decisions, label prints and each use."""
    events = [HistoryEvent(lot.created_at, lot.received_by.full_name if lot.received_by else "",
                           f"Received: {format_quantity(lot.quantity_received or 0, lot.unit)} in "
                           f"{lot.container_count or 0} container(s), into quarantine")]
    for check in lot.checks:
        events.append(HistoryEvent(check.checked_at, check.checked_by.full_name,
                                   f"Incoming QC check: {check.result}" + (f" ({check.comment})" if check.comment
                                                                           else "")))
    for decision in lot.decisions:
        events.append(HistoryEvent(decision.decided_at, decision.decided_by.full_name,
                                   f"{decision.meaning.capitalize()} (signed)"
                                   + (f": {decision.reason}" if decision.reason else "")))
    for printed in db.session.scalars(select(Download).where(Download.kind == "lot_label", Download.detail == lot.code)
                                      .options(selectinload(Download.downloaded_by)).order_by(Download.id)
                                      .limit(MAX_LABEL_PRINTS)):
        events.append(HistoryEvent(printed.downloaded_at, printed.downloaded_by.full_name if printed.downloaded_by
                                   else "command line", "Label printed"))
    for use in lot.uses:
        events.append(HistoryEvent(use.recorded_at, use.recorded_by.full_name,
                                   f"Used {format_quantity(use.quantity, use.unit)} for batch {use.batch.batch_number}"
                                   f"; {format_quantity(use.balance_after, use.unit)} left"))
    return sorted(events, key=lambda e: e.when)


def recall_lot(lot: MaterialLot, *, reason: str, actor: User, credentials: Credentials,
               now: datetime | None = None) -> RecallOutcome:
    """QA recalls a released lot, signing (meaning "recalled"). Every open batch that used it is
    put on hold (a signed hold, as QA's "hold" decision records it) with a deviation naming the
    lot; released batches that used it are returned for QA's decision, not changed."""
    require(actor, "decide_lot", "recall a material lot")
    now = now or utcnow()
    reason = reason.strip()
    if not reason:
        raise InvalidInput("The lot was not recalled.", {"reason": "Say why the lot is recalled (e.g. the "
                                                                   "supplier's recall notice)."})
    if len(reason) > MAX_TEXT:
        raise InvalidInput("The lot was not recalled.", {"reason": f"Use at most {MAX_TEXT} characters."})
    _lock(lot)
    if lot.status != "released":
        raise InvalidInput("The lot was not recalled.", {"reason": f"Lot {lot.code} is {lot.status}: only a "
                                                                   "released lot is recalled."})
    batches: dict[int, tuple[Batch, bool]] = {}
    for use in where_used(lot):
        if use.batch.id not in batches:
            batches[use.batch.id] = (use.batch, use.released)
    for batch, _ in batches.values():
        lock_batch(batch, None)
    reauthenticate(actor, credentials, meaning="recalled", subject=f"recall of lot {lot.code} ({lot.name})",
                   batch_id=None)
    held, released = [], []
    with audit.action("material.lot_recall", actor=actor, reason=reason):
        record = LotDecision(lot=lot, decision="recalled", reason=reason, decided_at=now, decided_by_id=actor.id)
        db.session.add(record)
        lot.status = "recalled"
        db.session.flush()
        sign(record, actor=actor, meaning="recalled", now=now)
        for batch, was in batches.values():
            if was:
                released.append(batch)
                continue
            if _hold_for_recall(batch, lot, reason, actor=actor, now=now):
                held.append(batch)
    return RecallOutcome(record, held, released)


def _hold_for_recall(batch: Batch, lot: MaterialLot, reason: str, *, actor: User, now: datetime) -> bool:
    """Open a deviation naming the lot and put the batch on hold if its state allows a hold.
    False for a closed batch (rejected): nothing is done to it."""
    definition = definition_for(batch)
    hold = next((d for d in definition.decisions if d.key == "hold"), None)
    if hold is None or hold.target is None or (batch.state not in hold.source and batch.state != hold.target):
        return False
    target = hold.target
    title = f"Material lot {lot.code} ({lot.name}, lot {lot.lot_number}) recalled"
    open_deviation(batch, source="recall", title=title, description=f"{title}: {reason}", actor=actor, now=now)
    if batch.state != target:
        disposition = Disposition(batch=batch, decision=hold.key, title=hold.title, state_before=batch.state,
                                  state_after=target, record_sha256=record_sha256(batch), decided_at=now,
                                  decided_by=actor, reason=f"{title}: {reason}")
        db.session.add(disposition)
        db.session.flush()
        sign(disposition, actor=actor, meaning=hold.meaning, now=now)
        move(batch, definition, target)
    touch(batch, actor, now)
    return True


# --- label and export -------------------------------------------------------------------------

def label_pdf(lot: MaterialLot, now: datetime | None = None) -> bytes:
    """The lot's label: its code as text and QR, item, supplier lot, expiry, storage and status."""
    from labels.item_label import ItemLabel, ItemLine, render_item_label

    lines = [ItemLine("Supplier lot", lot.lot_number), ItemLine("Expiry", lot.expiry_date.isoformat(), bold=True),
             ItemLine("Received", f"{lot.received_on.isoformat() if lot.received_on else '—'}, "
                                  f"{format_quantity(lot.quantity_received or 0, lot.unit)}"),
             ItemLine("Status", lot.status.upper(), bold=True)]
    if lot.item is not None:
        lines.insert(2, ItemLine("Storage", lot.item.storage))
    return render_item_label(ItemLabel(title="Material lot", code=lot.code, name=lot.name, printed_at=now or utcnow(),
                                       lines=lines))


WHERE_USED_HEADER = ("lot", "batch", "batch_state", "released", "step", "field", "entry", "recorded_at",
                     "recorded_by", "quantity", "unit", "superseded")


def where_used_rows(lot: MaterialLot) -> list[tuple[str, ...]]:
    """``where_used`` as CSV rows (WHERE_USED_HEADER), times in UTC ISO 8601."""
    return [(lot.code, use.batch.batch_number, use.batch.state, "yes" if use.released else "no", use.step_title,
             use.field_label, str(use.entry.occurrence), use.entry.performed_at.isoformat(),
             use.entry.performed_by.full_name, "" if use.quantity is None else format_number(use.quantity), use.unit,
             "yes" if use.superseded else "no") for use in where_used(lot)]

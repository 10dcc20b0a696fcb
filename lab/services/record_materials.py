"""The lots and equipment a batch used, for its executed record (issue 13, item 6): each lot
with its release (and any later recall or rejection) and the quantity this batch took from it,
each instrument with its calibration status on the day it was used.

Like the rest of the record, read from the database only: the calibration status is the
logbook's as of the day of use, not today's, so an unchanged batch prints the same.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import aliased, contains_eager, selectinload

from lab.extensions import db
from lab.models import Batch, Equipment, MaterialLot, StepEntry, StepValue
from lab.models.inventory import LotConsumption, LotDecision
from labels.record_data import EquipmentUsed, LotUsed
from workflows.formatting import format_quantity, format_utc
from workflows.model import ProcessDefinition


def materials_used(batch: Batch, definition: ProcessDefinition) -> tuple[tuple[LotUsed, ...], tuple[EquipmentUsed, ...]]:
    """The lots and equipment named by ``batch``'s current values (a value corrected away names
    nothing the batch used), in the order first used."""
    correction = aliased(StepValue)
    current = db.session.scalars(
        select(StepValue).join(StepValue.entry).where(
            StepEntry.batch_id == batch.id, or_(StepValue.lot_id.is_not(None), StepValue.equipment_id.is_not(None)),
            ~exists().where(correction.supersedes_id == StepValue.id))
        .options(contains_eager(StepValue.entry),
                 selectinload(StepValue.lot).selectinload(MaterialLot.decisions).selectinload(LotDecision.decided_by),
                 selectinload(StepValue.equipment).selectinload(Equipment.log))
        .order_by(StepValue.recorded_at, StepValue.id)).all()
    taken: dict[int, list[LotConsumption]] = defaultdict(list)
    for use in db.session.scalars(select(LotConsumption).where(LotConsumption.batch_id == batch.id)
                                  .order_by(LotConsumption.id)):
        taken[use.lot_id].append(use)
    lots: dict[int, MaterialLot] = {}
    lot_steps: dict[int, list[str]] = defaultdict(list)
    equipment: dict[int, Equipment] = {}
    uses: dict[int, list[tuple[str, date]]] = defaultdict(list)
    for value in current:
        step = definition.step(value.entry.step_key).title
        if value.lot is not None:
            lots[value.lot.id] = value.lot
            lot_steps[value.lot.id].append(step)
        if value.equipment is not None:
            equipment[value.equipment.id] = value.equipment
            uses[value.equipment.id].append((step, value.recorded_at.date()))
    return (tuple(_lot(lot, lot_steps[lot_id], taken.get(lot_id, [])) for lot_id, lot in lots.items()),
            tuple(_instrument(item, uses[item_id]) for item_id, item in equipment.items()))


def _lot(lot: MaterialLot, steps: list[str], uses: list[LotConsumption]) -> LotUsed:
    release = next((d for d in lot.decisions if d.decision == "released"), None)
    status = (f"released for use by {release.decided_by.full_name} at {format_utc(release.decided_at)}"
              if release is not None else "no release decision recorded")
    later = [d for d in lot.decisions if d.decision in ("recalled", "rejected") and d is not release]
    status += "".join(f"; {d.decision.upper()} by {d.decided_by.full_name} at {format_utc(d.decided_at)}"
                      f"{': ' + d.reason if d.reason else ''}" for d in later)
    by_unit: dict[str, float] = defaultdict(float)
    for use in uses:
        by_unit[use.unit] += use.quantity
    quantity = ", ".join(format_quantity(amount, unit) for unit, amount in by_unit.items()) or "not counted"
    return LotUsed(code=lot.code, name=lot.name, lot_number=lot.lot_number, supplier=lot.supplier,
                   expiry=lot.expiry_date, status=status, quantity=quantity, steps=tuple(dict.fromkeys(steps)))


def _instrument(item: Equipment, uses: list[tuple[str, date]]) -> EquipmentUsed:
    steps = list(dict.fromkeys(step for step, _ in uses))
    periods: dict[str, list[date]] = defaultdict(list)
    for day in sorted({day for _, day in uses}):
        periods[calibration_at(item, day)].append(day)
    calibration = "; ".join(f"{status}; used {_days(days)}" for status, days in periods.items())
    return EquipmentUsed(code=item.code, name=item.name, steps=tuple(steps), calibration=calibration)


def _days(days: list[date]) -> str:
    if len(days) == 1:
        return days[0].isoformat()
    return f"{days[0].isoformat()} to {days[-1].isoformat()} ({len(days)} days)"


def calibration_at(item: Equipment, day: date) -> str:
    """The instrument's calibration status on ``day``, from its logbook: the last passed
    calibration done by then, and whether its next due date had passed."""
    done = [e for e in item.log if e.kind == "calibration" and e.result == "pass" and e.performed_on <= day]
    if not done:
        if item.calibration_due is None:
            return "no calibration required"
        return f"no calibration in the logbook before use (due date as registered {item.calibration_due.isoformat()})"
    last = max(done, key=lambda e: (e.performed_on, e.id))
    due = last.next_due.isoformat() if last.next_due else "not set"
    overdue = "OVERDUE: " if last.next_due is not None and last.next_due < day else ""
    return f"{overdue}calibrated {last.performed_on.isoformat()}, due {due}"

"""What a step entry uses of material lots: each use lowers the lot's balance and is kept
(LotConsumption) so that every batch and step that used a lot can be found (where-used)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, LotConsumption, MaterialLot, StepEntry, User
from workflows.formatting import format_quantity

#: Why a lot, the amount taken from it, or a value taken from it is not corrected in the entry.
UNCORRECTABLE = ("This value moved material out of a lot's balance (or was taken from the lot): it cannot be "
                 "corrected here. Open a deviation to document what is wrong; QA adjusts the lot's record.")


def record_uses(batch: Batch, entry: StepEntry, uses: list[tuple[str, str, float]], ids: dict[str, int], *,
                actor: User, now: datetime) -> list[LotConsumption]:
    """Take each (lot field, lot code, amount) of ``uses`` from its lot's balance, inside the
    caller's ``audit.action``. The lot rows are locked (FOR UPDATE on PostgreSQL) and their
    balances checked again, so two entries racing for the last of a lot cannot both have it;
    InvalidInput names the field when the balance no longer suffices."""
    made = []
    for field_key, code, amount in uses:
        lot_id = ids.get(f"lot:{code}")
        if lot_id is None:
            continue
        lot = db.session.execute(select(MaterialLot).where(MaterialLot.id == lot_id).with_for_update()
                                 .execution_options(populate_existing=True)).scalar_one()
        if lot.balance is None:
            continue  # a lot registered before balances were kept: nothing to count down
        if amount > lot.balance + 1e-9:
            raise InvalidInput("The entry was not saved.", {field_key: (
                f"Lot {code} has only {format_quantity(lot.balance, lot.unit)} left; this entry uses "
                f"{format_quantity(amount, lot.unit)}.")})
        lot.balance = max(0.0, round(lot.balance - amount, 9))
        use = LotConsumption(lot_id=lot.id, batch_id=batch.id, entry=entry, field_key=field_key, quantity=amount,
                             unit=lot.unit or "", balance_after=lot.balance, recorded_at=now, recorded_by_id=actor.id)
        db.session.add(use)
        made.append(use)
    return made

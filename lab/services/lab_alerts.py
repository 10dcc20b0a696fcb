"""What supervisors, QC and QA must act on outside the batches (issue 13, item 4): lots waiting
for their incoming check or for QA's decision, lots and equipment expiring or due within 30 days,
equipment out of service, and process versions waiting for approval.

Read only; one query per list whatever the size of the lab, each list bounded (LIMIT, oldest
or soonest first) with the number left off counted, so a lab with thousands of lots still gets
a dashboard in the same few queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Generic, TypeVar

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import joinedload, selectinload

from lab.extensions import db
from lab.models import Equipment, MaterialLot, User
from lab.models.inventory import LotCheck, MaterialItem
from lab.models.processes import ProcessVersion
from lab.services.equipment import DUE_SOON_DAYS, needing_attention, today

#: Roles the dashboard shows these lists to: whoever answers for materials, instruments and documents.
WATCHERS = ("supervisor", "qc_analyst", "qa_officer")
LIMIT = 20
T = TypeVar("T")


@dataclass(frozen=True)
class Listed(Generic[T]):
    """The first LIMIT rows of a list and how many there are in all."""

    rows: list[T] = field(default_factory=list)
    total: int = 0

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass(frozen=True)
class LabAlerts:
    today: date
    lots_to_check: Listed[MaterialLot]
    lots_to_decide: Listed[MaterialLot]
    lots_expiring: Listed[MaterialLot]
    #: Out of service, not qualified, calibration overdue or due within 30 days: each with why.
    equipment: list[tuple[Equipment, str]]
    drafts: Listed[ProcessVersion]

    @property
    def empty(self) -> bool:
        return not self.equipment and not any(
            listed.total for listed in (self.lots_to_check, self.lots_to_decide, self.lots_expiring, self.drafts))

    @property
    def equipment_cut(self) -> bool:
        """Whether more equipment needs attention than the LIMIT listed."""
        return len(self.equipment) >= LIMIT


def first_rows(query: Select[tuple[T]], limit: int = LIMIT) -> Listed[T]:
    """The first ``limit`` rows of ``query`` and, only when they fill the limit, a count of all."""
    return _counted(query.limit(limit), limit)


def _counted(limited: Select[tuple[T]], limit: int, params: Mapping[str, object] | None = None) -> Listed[T]:
    """The rows of ``limited`` (with ``params``), a query of at most ``limit`` rows, and, only when
    they fill the limit, a count of all it would have without."""
    rows = list(db.session.scalars(limited, params).unique())
    if len(rows) < limit:
        return Listed(rows, len(rows))
    every = limited.limit(None).order_by(None).subquery()
    return Listed(rows, db.session.scalar(select(func.count()).select_from(every), params) or 0)


def lab_alerts(user: User, now: datetime) -> LabAlerts | None:
    """The lists for ``user``'s role, or None for a role that does not watch them."""
    if user.role not in WATCHERS:
        return None
    day = today(now)
    lists = _lists()
    return LabAlerts(
        today=day,
        lots_to_check=_counted(lists.lots_to_check, LIMIT),
        lots_to_decide=_counted(lists.lots_to_decide, LIMIT),
        lots_expiring=_counted(lists.lots_expiring, LIMIT, {"horizon": day + timedelta(days=DUE_SOON_DAYS)}),
        equipment=needing_attention(now, limit=LIMIT),
        drafts=_counted(lists.drafts, LIMIT),
    )


@dataclass(frozen=True)
class _Lists:
    lots_to_check: Select[tuple[MaterialLot]]
    lots_to_decide: Select[tuple[MaterialLot]]
    lots_expiring: Select[tuple[MaterialLot]]  # expiring by the date bound as "horizon"
    drafts: Select[tuple[ProcessVersion]]


@lru_cache(maxsize=1)  # the same statements on every dashboard: they took longer to build than to run
def _lists() -> _Lists:
    """Each list's first LIMIT rows."""
    quarantined = select(MaterialLot).where(MaterialLot.status == "quarantined").order_by(MaterialLot.id)
    checked = select(LotCheck.id).where(LotCheck.lot_id == MaterialLot.id).exists()
    needs_check = MaterialLot.item.has(MaterialItem.needs_qc) | MaterialLot.item_id.is_(None)
    in_stock = MaterialLot.balance.is_(None) | (MaterialLot.balance > 0)
    return _Lists(
        lots_to_check=quarantined.where(~checked, needs_check).limit(LIMIT),
        lots_to_decide=quarantined.where(checked | ~needs_check)
        .options(selectinload(MaterialLot.checks)).limit(LIMIT),  # the page names the last check's result
        lots_expiring=select(MaterialLot).where(MaterialLot.status == "released", in_stock,
                                                MaterialLot.expiry_date <= bindparam("horizon"))
        .order_by(MaterialLot.expiry_date, MaterialLot.id).limit(LIMIT),
        drafts=select(ProcessVersion).where(ProcessVersion.approved_at.is_(None))
        .options(joinedload(ProcessVersion.uploaded_by)).order_by(ProcessVersion.uploaded_at, ProcessVersion.id)
        .limit(LIMIT),
    )

"""What supervisors, QC and QA must act on outside the batches (issue 13, item 4): lots waiting
for their incoming check or for QA's decision, lots and equipment expiring or due within 30 days,
equipment out of service, and process versions waiting for approval.

Read only; one query per list whatever the size of the lab, each list bounded (LIMIT, oldest
or soonest first) with the number left off counted, so a lab with thousands of lots still gets
a dashboard in the same few queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, bindparam, func, literal, select, union_all
from sqlalchemy.orm import joinedload

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
    #: lot id -> the result of its latest incoming check, for the lots listed ("pass" or "fail").
    last_checks: dict[int, str] = field(default_factory=dict)

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
    limited = query.limit(limit)
    return _total(list(db.session.scalars(limited).unique()), limited, limit)


def _total(rows: list[T], limited: Select[tuple[T]], limit: int, params: Mapping[str, object] | None = None
           ) -> Listed[T]:
    """``rows``, those of ``limited`` (with ``params``), a query of at most ``limit`` rows, and,
    only when they fill the limit, a count of all it would have without."""
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
    (to_check, to_decide, expiring), last_checks = _lots(lists, {"horizon": day + timedelta(days=DUE_SOON_DAYS)})
    drafts = list(db.session.scalars(lists.drafts).unique())
    return LabAlerts(
        today=day,
        lots_to_check=to_check,
        lots_to_decide=to_decide,
        lots_expiring=expiring,
        equipment=needing_attention(now, limit=LIMIT),
        drafts=_total(drafts, lists.drafts, LIMIT),
        last_checks=last_checks,
    )


def _lots(lists: _Lists, params: Mapping[str, object]) -> tuple[list[Listed[MaterialLot]], dict[int, str]]:
    """The lists of lots (in the order of ``lists.lots``), read in one statement, and the latest
    check's result of each lot listed."""
    found: list[list[MaterialLot]] = [[] for _ in lists.lots]
    last_checks: dict[int, str] = {}
    for lot, place, last_check in db.session.execute(lists.listed_lots, params):
        found[place].append(lot)
        if last_check is not None:
            last_checks[lot.id] = last_check
    for rows, order in zip(found, _LOT_ORDERS, strict=True):
        rows.sort(key=order)
    return [_total(rows, query, LIMIT, params) for rows, query in zip(found, lists.lots, strict=True)], last_checks


#: The order of each list of lots (as its statement's ORDER BY), to put the rows read together back in.
_LOT_ORDERS: tuple[Callable[[MaterialLot], Any], ...] = (
    lambda lot: lot.id, lambda lot: lot.id, lambda lot: (lot.expiry_date, lot.id))


@dataclass(frozen=True)
class _Lists:
    #: Lots waiting for their incoming check, for QA's decision, and released lots expiring by
    #: the date bound as "horizon": each list's first LIMIT rows.
    lots: tuple[Select[tuple[MaterialLot]], ...]
    #: The rows of the three lists in one statement (one round trip, not three): each lot with its
    #: list's place in ``lots`` and the result of its latest check.
    listed_lots: Select[tuple[MaterialLot, int, str | None]]
    drafts: Select[tuple[ProcessVersion]]


@lru_cache(maxsize=1)  # the same statements on every dashboard: they took longer to build than to run
def _lists() -> _Lists:
    """Each list's first LIMIT rows."""
    quarantined = select(MaterialLot).where(MaterialLot.status == "quarantined").order_by(MaterialLot.id)
    checked = select(LotCheck.id).where(LotCheck.lot_id == MaterialLot.id).exists()
    needs_check = MaterialLot.item.has(MaterialItem.needs_qc) | MaterialLot.item_id.is_(None)
    in_stock = MaterialLot.balance.is_(None) | (MaterialLot.balance > 0)
    lots = (
        quarantined.where(~checked, needs_check).limit(LIMIT),
        quarantined.where(checked | ~needs_check).limit(LIMIT),
        select(MaterialLot).where(MaterialLot.status == "released", in_stock,
                                  MaterialLot.expiry_date <= bindparam("horizon"))
        .order_by(MaterialLot.expiry_date, MaterialLot.id).limit(LIMIT),
    )
    # Each list's ids as a subquery of its own: SQLite takes no ORDER BY or LIMIT in a UNION's parts.
    tagged = union_all(*(select(listed.with_only_columns(MaterialLot.id.label("lot_id"),
                                                        literal(place).label("place")).subquery())
                         for place, listed in enumerate(lots))).subquery()
    last_check = (select(LotCheck.result).where(LotCheck.lot_id == MaterialLot.id)
                  .order_by(LotCheck.id.desc()).limit(1).scalar_subquery())
    return _Lists(
        lots=lots,
        listed_lots=select(MaterialLot, tagged.c.place, last_check).join(tagged, tagged.c.lot_id == MaterialLot.id),
        drafts=select(ProcessVersion).where(ProcessVersion.approved_at.is_(None))
        .options(joinedload(ProcessVersion.uploaded_by)).order_by(ProcessVersion.uploaded_at, ProcessVersion.id)
        .limit(LIMIT),
    )

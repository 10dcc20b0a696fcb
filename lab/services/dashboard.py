"""What the dashboard shows: every batch with its state, current step and vein-to-vein clock,
and the signed-in user's own work. Read only, a fixed number of queries whatever the number
of batches (tests/test_dashboard.py counts them)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Batch, Patient, User, utcnow
from lab.models.batches import CLOSED_STATES
from lab.services.batch_summary import (
    CACHE_SIZE,
    AwaitingVerification,
    BatchSummary,
    Listed,
    Listing,
    listed,
    summaries,
)
from lab.services.chain import ChainPosition, positions
from lab.services.record_marks import PerMark, cache
from workflows.model import StepSpec
from workflows.timing import Timing, WindowStatus, duration_words, judge, next_window

#: Batches no longer being made or tested: they leave the main list for "recently closed".
LIST_LIMIT = 200
#: The latest closed batches shown under "Recently closed" (and whose releases are recent).
CLOSED_SHOWN = 20
#: Open batches drawn on the dashboard: every one whose step window is due or overdue, then the
#: first of the others in the list's order up to this many. The batch list (/batches) has them all.
ROWS_SHOWN = 50
#: Tasks of each kind drawn under "My work"; the others are counted.
TASKS_SHOWN = 20
#: The open batches, newest first, and the latest closed ones.
OPEN = Listing(Batch.is_open(), Batch.created_at, LIST_LIMIT)
RECENTLY_CLOSED = Listing(Batch.state.in_(CLOSED_STATES), Batch.created_at, CLOSED_SHOWN)


@dataclass(frozen=True)
class Clock:
    """A batch against time. ``since_collection`` runs until the batch is closed."""

    collection_end: datetime | None
    since_collection: timedelta | None
    stage: str  # the current step's title, or the state's title past manufacturing
    stage_since: datetime
    in_stage: timedelta
    window: WindowStatus | None

    @property
    def overdue(self) -> bool:
        return self.window is not None and self.window.timing is Timing.OVERDUE

    @property
    def vein_to_vein(self) -> str:
        return duration_words(self.since_collection) if self.since_collection is not None else ""

    @property
    def in_stage_words(self) -> str:
        return duration_words(self.in_stage)


@dataclass(frozen=True)
class BatchRow:
    batch: Listed
    summary: BatchSummary
    clock: Clock

    @property
    def state(self) -> str:
        return self.summary.state

    @property
    def open_deviations(self) -> int:
        return len(self.summary.open_deviations)


@dataclass(frozen=True)
class StepTask:
    """A step the user may record now."""

    batch: Listed
    step: StepSpec
    add: bool  # another entry of a repeatable step


@dataclass(frozen=True)
class VerifyTask:
    batch: Listed
    entry: AwaitingVerification


@dataclass(frozen=True)
class RecentRelease:
    batch_number: str
    title: str
    decided_by: str
    decided_at: datetime


@dataclass
class MyWork:
    perform: list[StepTask] = field(default_factory=list)
    verify: list[VerifyTask] = field(default_factory=list)
    tests_due: list[tuple[Listed, tuple[str, ...]]] = field(default_factory=list)
    recent_releases: list[RecentRelease] = field(default_factory=list)


@dataclass
class Dashboard:
    rows: list[BatchRow]  # open batches shown (ROWS_SHOWN), by state then longest vein-to-vein first
    in_progress: int  # open batches listed, shown or not
    closed: list[BatchRow]
    #: batch id -> its vein-to-vein time, for closed batches whose patient's chain closed at infusion
    infused: dict[int, str]
    by_state: list[tuple[str, str, int]]  # (state, title, number of open batches)
    work: MyWork
    now: datetime


def dashboard(user: User, *, now: datetime | None = None) -> Dashboard:
    """The open batches (and the latest closed ones) with their clocks, and ``user``'s work:
    three queries once the listed batches' summaries are kept (lab/services/batch_summary.py)."""
    now = now or utcnow()
    batches = listed(OPEN) + listed(RECENTLY_CLOSED)
    summary = summaries({b.id: b.mark for b in batches})
    rows, closed, work, roles = [], [], MyWork(), user.roles
    counts: dict[str, int] = defaultdict(int)
    for batch in batches:
        row = BatchRow(batch, summary[batch.id], _clock(summary[batch.id], now))
        if row.state in CLOSED_STATES:
            closed.append(row)
        else:
            rows.append(row)
            counts[row.state] += 1
        _add_work(work, roles, user.id, batch, row.summary, now)
    order = list(rows[0].summary.definition.states) if rows else []
    rows.sort(key=lambda r: (_position(order, r.state), -(r.clock.since_collection or timedelta()).total_seconds()))
    by_state = [(state, title, counts[state]) for state, title in _state_titles(rows).items()]
    by_state.sort(key=lambda s: _position(order, s[0]))
    work.recent_releases = sorted(
        (RecentRelease(row.batch.batch_number, r.title, r.decided_by, r.decided_at)
         for row in closed for r in row.summary.releases),
        key=lambda r: r.decided_at, reverse=True)[:10]
    return Dashboard(_shown(rows), len(rows), closed, _infused(closed), by_state, work, now)


def _shown(rows: list[BatchRow]) -> list[BatchRow]:
    """The rows drawn: those due or overdue, and the first others up to ROWS_SHOWN, in their order."""
    pressing = {id(row) for row in rows if row.clock.window is not None and row.clock.window.timing is not Timing.EARLY}
    room = ROWS_SHOWN - len(pressing)
    shown = []
    for row in rows:
        if id(row) in pressing:
            shown.append(row)
        elif room > 0:
            shown.append(row)
            room -= 1
    return shown


def _infused(closed: list[BatchRow]) -> dict[int, str]:
    """batch id -> vein-to-vein time, for the closed batches whose patient's chain closed at infusion.

    A patient's chain follows their newest batch and is derived from its record alone, so its
    vein-to-vein time is kept under that batch's mark; a closed batch that is no longer its
    patient's newest has none."""
    if not closed:
        return {}
    newest = dict(db.session.execute(select(Batch.patient_id, func.max(Batch.id))
                                     .where(Batch.patient_id.in_({row.batch.patient_id for row in closed}))
                                     .group_by(Batch.patient_id)).all())
    rows = [row for row in closed if newest[row.batch.patient_id] == row.batch.id]
    kept: PerMark[str] = cache("chain_vein_to_vein", CACHE_SIZE)  # "" while not infused
    found = {row.batch.id: kept.peek(row.batch.id, row.summary.mark) for row in rows}
    missing = {row.batch.patient_id: row for row in rows if found[row.batch.id] is None}
    if missing:
        patients = db.session.scalars(select(Patient).where(Patient.id.in_(missing))).all()
        for chain in positions(patients):
            row = missing[chain.patient.id]
            if chain.batch is not None and chain.batch.id == row.batch.id:
                found[row.batch.id] = kept.get(row.batch.id, row.summary.mark, partial(_infused_words, chain))
    return {batch_id: words for batch_id, words in found.items() if words}


def _infused_words(chain: ChainPosition) -> str:
    return duration_words(chain.vein_to_vein) if chain.vein_to_vein is not None else ""


def _position(order: list[str], state: str) -> int:
    return order.index(state) if state in order else len(order)


def _state_titles(rows: list[BatchRow]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for row in rows:
        titles.setdefault(row.state, row.summary.state_title)
    return titles


def _clock(summary: BatchSummary, now: datetime) -> Clock:
    end = summary.closed_at if summary.state in CLOSED_STATES else now
    since = None if summary.collection_end is None else end - summary.collection_end
    window = (next_window(summary.definition, summary.states, summary.first_recorded, now)
              if summary.recording else None)
    return Clock(summary.collection_end, since, summary.stage, summary.stage_since, now - summary.stage_since, window)


def _too_early(step: StepSpec, summary: BatchSummary, now: datetime) -> bool:
    """A step whose window has not opened yet is nobody's work today (harvest on day 7)."""
    window = step.window
    first_recorded = summary.first_recorded
    return (window is not None and window.after in first_recorded
            and judge(window, first_recorded[window.after], now)[1] is Timing.EARLY)


def _add_work(work: MyWork, roles: frozenset[str], user_id: int, batch: Listed, summary: BatchSummary,
              now: datetime) -> None:
    """Add what a user acting as ``roles`` may do on ``batch`` now to ``work``."""
    for step, add in summary.startable:
        if step.role in roles and not _too_early(step, summary, now):
            work.perform.append(StepTask(batch, step, add))
    for entry in summary.awaiting:
        if entry.step.verifier_role in roles and user_id not in entry.authors:
            work.verify.append(VerifyTask(batch, entry))
    rules = summary.definition.release
    # Results may be entered during manufacturing (in-process samples), but they are due once
    # the product is made: a batch still in its steps is not QC's work yet.
    if ("qc_analyst" in roles and rules is not None and summary.state in rules.result_states
            and not summary.recording and summary.tests_pending):
        work.tests_due.append((batch, summary.tests_pending))

"""What the dashboard shows: every batch with its state, current step and vein-to-vein clock,
and the signed-in user's own work. Read only, a fixed number of queries whatever the number
of batches (tests/test_dashboard.py counts them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache, partial

from sqlalchemy import Select, bindparam, func, select

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
    three queries once the listed batches' summaries are kept (lab/services/batch_summary.py).

    Every open batch is judged against its time window (the drawn rows are chosen by it), but
    only the rows drawn get their clocks."""
    now = now or utcnow()
    batches = listed(OPEN) + listed(RECENTLY_CLOSED)
    summary = summaries({b.id: b.mark for b in batches})
    work, roles = MyWork(), user.roles
    opened: list[_Judged] = []
    closed: list[BatchRow] = []
    for batch in batches:
        found = summary[batch.id]
        if found.state in CLOSED_STATES:
            closed.append(BatchRow(batch, found, _clock(found, now, _window(found, now))))
        else:
            opened.append((batch, found, _window(found, now)))
        _add_work(work, roles, user.id, batch, found, now)
    _order(opened, now)
    work.recent_releases = sorted(
        (RecentRelease(row.batch.batch_number, r.title, r.decided_by, r.decided_at)
         for row in closed for r in row.summary.releases),
        key=lambda r: r.decided_at, reverse=True)[:10]
    rows = [BatchRow(batch, found, _clock(found, now, window)) for batch, found, window in _shown(opened)]
    return Dashboard(rows, len(opened), closed, _infused(closed), _by_state(opened), work, now)


#: An open batch with its window judged at the request's moment (None: no window counting).
_Judged = tuple[Listed, BatchSummary, WindowStatus | None]


def _window(summary: BatchSummary, now: datetime) -> WindowStatus | None:
    return next_window(summary.definition, summary.states, summary.first_recorded, now) if summary.recording else None


def _order(opened: list[_Judged], now: datetime) -> None:
    """In the order of the states of the newest batch's process, then longest vein-to-vein first
    (a batch not received yet as if collected now); the newest first among equals."""
    if not opened:
        return
    position = {state: i for i, state in enumerate(opened[0][1].definition.states)}
    last = len(position)
    opened.sort(key=lambda judged: (position.get(judged[1].state, last), judged[1].collection_end or now))


def _by_state(opened: list[_Judged]) -> list[tuple[str, str, int]]:
    """(state, title, number of batches) in the order of the ordered batches."""
    counts: dict[str, int] = {}
    titles: dict[str, str] = {}
    for _, found, _ in opened:
        if found.state in counts:
            counts[found.state] += 1
        else:
            counts[found.state], titles[found.state] = 1, found.state_title
    return [(state, titles[state], n) for state, n in counts.items()]


def _shown(opened: list[_Judged]) -> list[_Judged]:
    """The batches drawn: those due or overdue, and the first others up to ROWS_SHOWN, in their order."""
    room = ROWS_SHOWN - sum(1 for _, _, window in opened if _pressing(window))
    shown = []
    for judged in opened:
        if _pressing(judged[2]):
            shown.append(judged)
        elif room > 0:
            shown.append(judged)
            room -= 1
    return shown


def _pressing(window: WindowStatus | None) -> bool:
    return window is not None and window.timing is not Timing.EARLY


def _infused(closed: list[BatchRow]) -> dict[int, str]:
    """batch id -> vein-to-vein time, for the closed batches whose patient's chain closed at infusion.

    A patient's chain follows their newest batch and is derived from its record alone, so its
    vein-to-vein time is kept under that batch's mark; a closed batch that is no longer its
    patient's newest has none."""
    if not closed:
        return {}
    newest = dict(db.session.execute(_newest_batches(), {"patients": list({row.batch.patient_id for row in closed})}).all())
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


@lru_cache(maxsize=1)  # the same statement on every dashboard: it took longer to build than to run
def _newest_batches() -> Select[tuple[int, int]]:
    """patient id -> the id of their newest batch, for the patients bound as "patients"."""
    return (select(Batch.patient_id, func.max(Batch.id))
            .where(Batch.patient_id.in_(bindparam("patients", expanding=True))).group_by(Batch.patient_id))


def _infused_words(chain: ChainPosition) -> str:
    return duration_words(chain.vein_to_vein) if chain.vein_to_vein is not None else ""


def _clock(summary: BatchSummary, now: datetime, window: WindowStatus | None) -> Clock:
    end = summary.closed_at if summary.state in CLOSED_STATES else now
    since = None if summary.collection_end is None else end - summary.collection_end
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

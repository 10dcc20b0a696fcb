"""What the dashboard shows: every batch with its state, current step and vein-to-vein clock,
and the signed-in user's own work. Read only, a fixed number of queries whatever the number
of batches (tests/test_dashboard.py counts them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import Batch, Disposition, Patient, QcResult, Signature, StepEntry, User, utcnow
from lab.services.chain import positions
from lab.services.progress import batch_progress, definition_for, entry_signatures, is_verified
from lab.services.release_status import as_current, current_results
from lab.services.signatures import current_values
from lab.services.steps import self_verification
from workflows.engine import can_start, step_states, typed_value
from workflows.engine_types import StepProgress
from workflows.model import ProcessDefinition, StepSpec, StepState
from workflows.release import pending
from workflows.timing import Timing, WindowStatus, current_step, duration_words, judge, next_window

#: Batches no longer being made or tested: they leave the main list for "recently closed".
CLOSED_STATES = ("released", "rejected", "shipped")
#: The field that holds the end of collection: vein-to-vein time starts there (DOMAIN §1.2).
COLLECTION_END = "collection_end"
LIST_LIMIT = 200


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
    batch: Batch
    definition: ProcessDefinition
    clock: Clock
    open_deviations: int


@dataclass(frozen=True)
class StepTask:
    """A step the user may record now."""

    batch: Batch
    step: StepSpec
    add: bool  # another entry of a repeatable step


@dataclass(frozen=True)
class VerifyTask:
    batch: Batch
    step: StepSpec
    entry: StepEntry


@dataclass
class MyWork:
    perform: list[StepTask] = field(default_factory=list)
    verify: list[VerifyTask] = field(default_factory=list)
    tests_due: list[tuple[Batch, list[str]]] = field(default_factory=list)
    recent_releases: list[Disposition] = field(default_factory=list)


@dataclass
class Dashboard:
    rows: list[BatchRow]  # open batches, by state then longest vein-to-vein first
    closed: list[BatchRow]
    #: batch id -> its vein-to-vein time, for closed batches whose patient's chain closed at infusion
    infused: dict[int, str]
    by_state: list[tuple[str, str, int]]  # (state, title, number of open batches)
    work: MyWork
    now: datetime


def dashboard(user: User, *, now: datetime | None = None) -> Dashboard:
    now = now or utcnow()
    closed_last = case((Batch.state.in_(CLOSED_STATES), 1), else_=0)
    batches = list(db.session.scalars(
        select(Batch)
        .options(selectinload(Batch.patient).selectinload(Patient.batches), selectinload(Batch.definition),
                 selectinload(Batch.deviations), selectinload(Batch.entries).selectinload(StepEntry.values),
                 selectinload(Batch.entries).selectinload(StepEntry.performed_by),
                 selectinload(Batch.results).selectinload(QcResult.recorded_by),
                 selectinload(Batch.dispositions).selectinload(Disposition.decided_by))
        .order_by(closed_last, Batch.created_at.desc())
        .limit(LIST_LIMIT)))
    signatures = entry_signatures([b.id for b in batches])
    rows, closed, work = [], [], MyWork()
    counts: dict[str, int] = defaultdict(int)
    for batch in batches:
        definition = definition_for(batch)
        progress = batch_progress(batch, definition, signatures)
        first_recorded = _first_recorded(batch)
        row = BatchRow(batch, definition,
                       _clock(batch, definition, step_states(definition, progress), first_recorded, now),
                       sum(d.is_open for d in batch.deviations))
        if batch.state in CLOSED_STATES:
            closed.append(row)
        else:
            rows.append(row)
            counts[batch.state] += 1
        _add_work(work, user, batch, definition, progress, signatures, first_recorded, now)
    order = list(rows[0].definition.states) if rows else []
    rows.sort(key=lambda r: (_position(order, r.batch.state), -(r.clock.since_collection or timedelta()).total_seconds()))
    by_state = [(state, title, counts[state]) for state, title in _state_titles(rows).items()]
    by_state.sort(key=lambda s: _position(order, s[0]))
    work.recent_releases = sorted(
        (d for row in closed for d in row.batch.dispositions
         if row.definition.release and d.state_after in row.definition.release.released_states),
        key=lambda d: d.decided_at, reverse=True)[:10]
    closed = closed[:20]
    chains = positions([row.batch.patient for row in closed])
    infused = {chain.batch.id: duration_words(chain.vein_to_vein) for chain in chains
               if chain.batch is not None and chain.vein_to_vein is not None}
    return Dashboard(rows, closed, infused, by_state, work, now)


def _position(order: list[str], state: str) -> int:
    return order.index(state) if state in order else len(order)


def _state_titles(rows: list[BatchRow]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for row in rows:
        titles.setdefault(row.batch.state, row.definition.states.get(row.batch.state, row.batch.state))
    return titles


def _first_recorded(batch: Batch) -> dict[str, datetime]:
    """step key -> when its first entry was performed (windows count from there)."""
    found: dict[str, datetime] = {}
    for entry in batch.entries:
        found.setdefault(entry.step_key, entry.performed_at)
    return found


def _clock(batch: Batch, definition: ProcessDefinition, states: Mapping[str, StepState],
           first_recorded: Mapping[str, datetime], now: datetime) -> Clock:
    last_recorded: dict[str, datetime] = {}
    collection_end: datetime | None = None
    for entry in batch.entries:
        last_recorded[entry.step_key] = entry.performed_at
        value = current_values(entry).get(COLLECTION_END)
        if value is not None and collection_end is None:
            stored = typed_value(definition.step(entry.step_key).field(COLLECTION_END), value.text)
            collection_end = stored if isinstance(stored, datetime) else None
    step = current_step(definition, states)
    if step is not None and batch.state in definition.recording_states:
        earlier = [last_recorded[s.key] for s in definition.steps[:definition.index(step.key)] if s.key in last_recorded]
        stage = step.title
        stage_since = max(earlier, default=batch.created_at)
    else:
        stage = definition.states.get(batch.state, batch.state)
        stage_since = _state_since(batch)
    end = _closed_at(batch) if batch.state in CLOSED_STATES else now
    window = next_window(definition, states, first_recorded, now) if batch.state in definition.recording_states else None
    return Clock(collection_end, None if collection_end is None else end - collection_end, stage, stage_since,
                 now - stage_since, window)


def _state_since(batch: Batch) -> datetime:
    """When the batch entered its current state past manufacturing: its latest decision,
    result or entry, whichever came last."""
    moments = [batch.created_at]
    moments += [e.performed_at for e in batch.entries]
    moments += [r.recorded_at for r in batch.results]
    moments += [d.decided_at for d in batch.dispositions]
    return max(moments)


def _closed_at(batch: Batch) -> datetime:
    decisions = [d.decided_at for d in batch.dispositions if d.state_after == batch.state]
    return max(decisions, default=batch.updated_at)


def _too_early(step: StepSpec, first_recorded: Mapping[str, datetime], now: datetime) -> bool:
    """A step whose window has not opened yet is nobody's work today (harvest on day 7)."""
    window = step.window
    return (window is not None and window.after in first_recorded
            and judge(window, first_recorded[window.after], now)[1] is Timing.EARLY)


def _add_work(work: MyWork, user: User, batch: Batch, definition: ProcessDefinition, progress: Mapping[str, StepProgress],
              signatures: dict[int, list[Signature]], first_recorded: Mapping[str, datetime], now: datetime) -> None:
    if batch.state in definition.recording_states:
        for step in definition.steps:
            if (user.can_act_as(step.role) and can_start(definition, step.key, progress, batch.state) is None
                    and not _too_early(step, first_recorded, now)):
                work.perform.append(StepTask(batch, step, add=step.repeatable and step.key in progress))
    for entry in batch.entries:
        step = definition.step(entry.step_key)
        if not step.verify or not user.can_act_as(step.verifier_role):
            continue
        if self_verification(entry, user) is None and not is_verified(entry, signatures.get(entry.id, [])):
            work.verify.append(VerifyTask(batch, step, entry))
    rules = definition.release
    # Results may be entered during manufacturing (in-process samples), but they are due once
    # the product is made: a batch still in its steps is not QC's work yet.
    if (user.can_act_as("qc_analyst") and rules is not None and batch.state in rules.result_states
            and batch.state not in definition.recording_states):
        results = {key: as_current(r) for key, r in current_results(batch).items()}
        due = [t.title for t in pending(definition, results)]
        if due:
            work.tests_due.append((batch, due))

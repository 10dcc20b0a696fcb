"""A batch's record summed up for the pages that list many batches at once (the dashboard, the
quality alerts, the batch list): where its steps stand, what waits for whom, its open deviations
and the release tests still to come.

A summary is plain frozen data (no ORM object), derived from the batch's record alone, so it is
kept per process under the batch's mark (lab/services/record_marks.py): a page asks for the marks
of the batches it lists in one query and loads in full only the batches whose record changed
since. What depends on the time (clocks, windows) or on the user (their own work) is worked out
from the summary on each request.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from typing import NamedTuple

from flask import current_app
from sqlalchemy import Select, select
from sqlalchemy.orm import QueryableAttribute, selectinload
from sqlalchemy.sql.elements import ColumnElement

from lab.extensions import db
from lab.models import Batch, Disposition, Patient, Signature, StepEntry
from lab.services.chain import collection_end_of
from lab.services.progress import batch_progress, definition_for, entry_signatures, is_verified
from lab.services.record_marks import Mark, PerMark, cache, mark_of, newest_entry
from lab.services.release_status import as_current, current_results
from lab.services.steps import entry_authors
from workflows.engine import can_start, step_states
from workflows.engine_types import StepProgress
from workflows.model import ProcessDefinition, StepSpec, StepState
from workflows.release import pending
from workflows.timing import current_step

#: Summaries kept per process: the dashboard's and the quality alerts' batches and a few pages of the list.
CACHE_SIZE = 5000
#: Patients whose reference and COI are kept per process (:func:`patient_names`).
PATIENTS_KEPT = 20_000


@dataclass(frozen=True)
class AwaitingVerification:
    """An entry whose current content no verification signature covers yet."""

    entry_id: int
    step: StepSpec
    occurrence: int
    performed_by: str  # full name
    performed_at: datetime
    authors: frozenset[int]  # who recorded or corrected it: none of them may verify it


@dataclass(frozen=True)
class OpenDeviation:
    number: str
    title: str


@dataclass(frozen=True)
class Release:
    """A decision that released the batch."""

    title: str
    decided_by: str  # full name
    decided_at: datetime


@dataclass(frozen=True)
class BatchSummary:
    batch_id: int
    mark: Mark  # the batch's mark this summary was derived at
    batch_number: str
    state: str
    held_from: str | None
    definition: ProcessDefinition
    states: Mapping[str, StepState]  # step key -> its state
    first_recorded: Mapping[str, datetime]  # step key -> when its first entry was performed
    current_step: StepSpec | None  # the step the batch waits for while steps are recorded
    #: When the batch entered its current stage: the last entry of an earlier step (or its start)
    #: while steps are recorded, else its latest decision, result or entry.
    stage_since: datetime
    collection_end: datetime | None
    closed_at: datetime  # its latest decision into its current state (or its last change)
    startable: tuple[tuple[StepSpec, bool], ...]  # steps that may be recorded now; True: another entry
    awaiting: tuple[AwaitingVerification, ...]
    open_deviations: tuple[OpenDeviation, ...]
    tests_pending: tuple[str, ...]  # titles of the release tests without a conclusive result
    releases: tuple[Release, ...]

    @property
    def recording(self) -> bool:
        """Whether the batch is in a state where its steps are recorded."""
        return self.state in self.definition.recording_states

    @property
    def state_title(self) -> str:
        return self.definition.states.get(self.state, self.state)

    @property
    def stage(self) -> str:
        """The current step's title while steps are recorded, else the state's title."""
        return self.current_step.title if self.current_step is not None and self.recording else self.state_title


class Listed(NamedTuple):  # a tuple: a page lists hundreds, made faster than a dataclass
    """What a page names a listed batch by."""

    id: int
    batch_number: str
    patient_id: int
    patient_ref: str
    coi: str
    mark: Mark  # read with the batch, before anything its summary is derived from


@dataclass(frozen=True, eq=False)  # compared by identity: its condition is an SQL expression
class Listing:
    """Batches a page lists: the first ``limit`` matching ``condition``, the latest ``by`` first."""

    condition: ColumnElement[bool]
    by: QueryableAttribute[datetime]  # Batch.created_at or Batch.updated_at: each has its index
    limit: int


def listed(listing: Listing) -> list[Listed]:
    """The batches of ``listing`` in its order, with their marks, in one light query (plain rows,
    no ORM object), and their patients' names (:func:`patient_names`)."""
    rows = db.session.execute(_listing_query(listing)).all()
    names = patient_names({patient_id for _, _, patient_id, _, _ in rows})
    return [Listed(batch_id, number, patient_id, *names[patient_id], mark_of(entry, version))
            for batch_id, number, patient_id, entry, version in rows]


@lru_cache(maxsize=8)  # a page's few listings: their statements took longer to build than to run
def _listing_query(listing: Listing) -> Select[tuple[int, str, int, int | None, int]]:
    return (select(Batch.id, Batch.batch_number, Batch.patient_id, newest_entry(Batch.id), Batch.version)
            .where(listing.condition).order_by(listing.by.desc()).limit(listing.limit))


def patient_names(patient_ids: Collection[int]) -> dict[int, tuple[str, str]]:
    """patient id -> (reference, COI), kept per app: both are fixed at registration (a change is
    refused: lab/models/patients.py), so a patient's are read once, by primary key, the first
    time a page lists one of their batches. Looked up in the listing's query instead, they cost
    PostgreSQL two index probes a row, about 1 ms for 200 batches, on every view."""
    kept: dict[int, tuple[str, str]] = current_app.extensions.setdefault("patient_names", {})
    if missing := [patient_id for patient_id in patient_ids if patient_id not in kept]:
        if len(kept) + len(missing) > PATIENTS_KEPT:
            kept.clear()
        kept.update((patient_id, (ref, coi)) for patient_id, ref, coi in db.session.execute(
            select(Patient.id, Patient.patient_ref, Patient.coi).where(Patient.id.in_(missing))))
    return {patient_id: kept[patient_id] for patient_id in patient_ids}


def summaries(current: Mapping[int, Mark]) -> dict[int, BatchSummary]:
    """batch id -> its summary at its mark in ``current`` (read before anything the summaries are
    derived from), in a fixed number of queries: none when every batch's summary is kept, else
    the records in full of the batches whose record changed since they were last summed up."""
    kept: PerMark[BatchSummary] = cache("batch_summaries", CACHE_SIZE)
    found = {batch_id: summary for batch_id, batch_mark in current.items()
             if (summary := kept.peek(batch_id, batch_mark)) is not None}
    missing = [batch_id for batch_id in current if batch_id not in found]
    if missing:
        batches = _load(missing)
        signatures = entry_signatures(missing)
        for batch in batches:
            found[batch.id] = kept.get(batch.id, current[batch.id], partial(summarize, batch, current[batch.id], signatures))
    return found


def _load(batch_ids: list[int]) -> list[Batch]:
    return list(db.session.scalars(
        select(Batch).where(Batch.id.in_(batch_ids))
        .options(selectinload(Batch.definition), selectinload(Batch.deviations),
                 selectinload(Batch.entries).selectinload(StepEntry.values),
                 selectinload(Batch.entries).selectinload(StepEntry.performed_by),
                 selectinload(Batch.results),
                 selectinload(Batch.dispositions).selectinload(Disposition.decided_by))))


def summarize(batch: Batch, batch_mark: Mark, signatures: dict[int, list[Signature]]) -> BatchSummary:
    """``batch``'s summary from its loaded record; ``signatures``: entry id -> its signatures."""
    definition = definition_for(batch)
    progress = batch_progress(batch, definition, signatures)
    states = step_states(definition, progress)
    step = current_step(definition, states)
    recording = batch.state in definition.recording_states
    results = {key: as_current(r) for key, r in current_results(batch).items()}
    released = definition.release.released_states if definition.release else ()
    return BatchSummary(
        batch_id=batch.id, mark=batch_mark, batch_number=batch.batch_number, state=batch.state, held_from=batch.held_from,
        definition=definition, states=states, first_recorded=_first_recorded(batch), current_step=step,
        stage_since=_stage_since(batch, definition, step) if recording and step is not None else _state_since(batch),
        collection_end=collection_end_of(batch),
        closed_at=max((d.decided_at for d in batch.dispositions if d.state_after == batch.state),
                      default=batch.updated_at),
        startable=_startable(definition, progress, batch.state) if recording else (),
        awaiting=_awaiting(batch, definition, signatures),
        open_deviations=tuple(OpenDeviation(d.number, d.title) for d in batch.deviations if d.is_open),
        tests_pending=tuple(t.title for t in pending(definition, results)),
        releases=tuple(Release(d.title, d.decided_by.full_name, d.decided_at) for d in batch.dispositions
                       if d.state_after in released),
    )


def _first_recorded(batch: Batch) -> dict[str, datetime]:
    """step key -> when its first entry was performed (windows count from there)."""
    found: dict[str, datetime] = {}
    for entry in batch.entries:
        found.setdefault(entry.step_key, entry.performed_at)
    return found


def _stage_since(batch: Batch, definition: ProcessDefinition, step: StepSpec) -> datetime:
    """When the current step became due: the last entry of an earlier step, or the batch's start."""
    last_recorded = {entry.step_key: entry.performed_at for entry in batch.entries}
    earlier = [last_recorded[s.key] for s in definition.steps[:definition.index(step.key)] if s.key in last_recorded]
    return max(earlier, default=batch.created_at)


def _state_since(batch: Batch) -> datetime:
    """When the batch entered its current state past manufacturing: its latest decision,
    result or entry, whichever came last."""
    moments = [batch.created_at]
    moments += [e.performed_at for e in batch.entries]
    moments += [r.recorded_at for r in batch.results]
    moments += [d.decided_at for d in batch.dispositions]
    return max(moments)


def _startable(definition: ProcessDefinition, progress: Mapping[str, StepProgress],
               state: str) -> tuple[tuple[StepSpec, bool], ...]:
    return tuple((step, step.repeatable and step.key in progress) for step in definition.steps
                 if can_start(definition, step.key, progress, state) is None)


def _awaiting(batch: Batch, definition: ProcessDefinition,
              signatures: Mapping[int, list[Signature]]) -> tuple[AwaitingVerification, ...]:
    found = []
    for entry in batch.entries:
        step = definition.step(entry.step_key)
        if step.verify and not is_verified(entry, signatures.get(entry.id, [])):
            found.append(AwaitingVerification(entry.id, step, entry.occurrence, entry.performed_by.full_name,
                                              entry.performed_at, entry_authors(entry)))
    return tuple(found)

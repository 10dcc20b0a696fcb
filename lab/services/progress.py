"""The read side of a batch: where each step stands, and what the engine needs to know.

Everything is computed from the stored entries, values and signatures of the batch and
the definition the batch pinned; nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import case, func, inspect, select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import (
    Batch,
    Container,
    CustodyEvent,
    Equipment,
    LabelPrint,
    MaterialLot,
    Signature,
    StepEntry,
    StepValue,
)
from lab.services.signatures import current_values, matches
from lab.workflow_registry import pinned_definition
from workflows.engine import can_start, compute_derived, step_states, typed_value
from workflows.engine_types import (
    ContainerInfo,
    EntryContext,
    EquipmentInfo,
    FieldValue,
    LotInfo,
    PriorEntry,
    StepProgress,
    Value,
)
from workflows.model import FieldSpec, ProcessDefinition, StepSpec, StepState


def container_title(container: Container, definition: ProcessDefinition) -> str:
    """"Final product bag 1 of 2", "Apheresis bag"."""
    kind = definition.container_kinds.get(container.kind)
    name = kind.title if kind else container.kind.replace("_", " ")
    return f"{name} {container.number} of {container.count}" if container.count > 1 else name


def definition_for(batch: Batch) -> ProcessDefinition:
    """The definition ``batch`` started with, parsed from the text kept in the database."""
    record = batch.definition
    return pinned_definition(record.sha256, record.source_text, record.source_name)


def lab_timezone() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def signatures_by_entry(batch: Batch) -> dict[int, list[Signature]]:
    return entry_signatures([batch.id])


def entry_signatures(batch_ids: list[int]) -> dict[int, list[Signature]]:
    """entry id -> its signatures, oldest first, for the entries of all ``batch_ids`` in one query."""
    found: dict[int, list[Signature]] = defaultdict(list)
    if not batch_ids:
        return found
    rows = db.session.scalars(
        select(Signature)
        .where(Signature.batch_id.in_(batch_ids), Signature.record_type == "step_entry")
        .order_by(Signature.id)
    )
    for signature in rows:
        found[signature.record_id].append(signature)
    return found


def is_verified(entry: StepEntry, signatures: list[Signature]) -> bool:
    """True when a verification signature covers the entry's current content."""
    return any(s.meaning == "verified" and matches(s, entry) for s in signatures)


def batch_progress(batch: Batch, definition: ProcessDefinition,
                   signatures: dict[int, list[Signature]] | None = None) -> dict[str, StepProgress]:
    """Entries, unverified entries and hold requests per step; ``signatures`` (entry id ->
    its signatures) saves a query per batch when a list of batches already loaded them."""
    if signatures is None:
        signatures = signatures_by_entry(batch)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for entry in batch.entries:
        step = definition.step(entry.step_key)
        count = counts[entry.step_key]
        count[0] += 1
        if step.verify and not is_verified(entry, signatures.get(entry.id, [])):
            count[1] += 1
        if step.hold is not None:
            decision = current_values(entry).get(step.hold.field)
            if decision is not None and decision.text == step.hold.equals:
                count[2] = 1
    return {key: StepProgress(entries=e, unverified=u, hold=bool(h)) for key, (e, u, h) in counts.items()}


def typed_values(step: StepSpec, entry: StepEntry) -> dict[str, Value | None]:
    return {key: typed_value(step.field(key), value.text) for key, value in current_values(entry).items()}


def entry_context(
    batch: Batch,
    definition: ProcessDefinition,
    *,
    now: datetime,
    exclude: StepEntry | None = None,
    lots: dict[str, LotInfo | None] | None = None,
    equipment: dict[str, EquipmentInfo | None] | None = None,
    containers: dict[str, ContainerInfo | None] | None = None,
    typed: Mapping[int, dict[str, Value | None]] | None = None,
) -> EntryContext:
    """What the engine needs about the rest of the batch to check or compute an entry.

    ``typed``: the entries' values already parsed (``typed_values`` by entry id), so that a
    page showing every entry parses each one once, not once per other entry."""
    prior: dict[str, list[PriorEntry]] = defaultdict(list)
    for entry in batch.entries:
        if entry is exclude:
            continue
        values = typed[entry.id] if typed is not None else typed_values(definition.step(entry.step_key), entry)
        prior[entry.step_key].append(PriorEntry(values, entry.performed_at))
    return EntryContext(
        now=now,
        tz=lab_timezone(),
        patient={"weight_kg": batch.patient.weight_kg, "coi": batch.patient.coi},
        batch_coi=batch.patient.coi,
        prior=dict(prior),
        lots=lots or {},
        equipment=equipment or {},
        batch_number=batch.batch_number,
        containers=containers or {},
        step_titles={step.key: step.title for step in definition.steps},
    )


def lot_info(row: MaterialLot) -> LotInfo:
    return LotInfo(row.code, row.material, row.name, row.expiry_date, row.status, row.balance, row.unit, row.titer)


def equipment_info(row: Equipment) -> EquipmentInfo:
    return EquipmentInfo(row.code, row.kind, row.name, row.calibration_due, row.active, row.is_qualified,
                         row.out_of_service_reason)


@dataclass
class ValueView:
    spec: FieldSpec
    current: StepValue | None
    history: list[StepValue]  # superseded values, oldest first


@dataclass
class EntryView:
    entry: StepEntry
    values: list[ValueView]
    derived: dict[str, FieldValue]
    signatures: list[tuple[Signature, bool]]  # (signature, still matches the content)
    awaiting_verification: bool

    @property
    def corrected_by_ids(self) -> set[int]:
        return {v.current.recorded_by_id for v in self.values if v.current and v.current.is_correction}

    @property
    def verified_by(self) -> list[str]:
        """Printed names of the verifications that still cover the entry's content."""
        return [s.printed_name for s, valid in self.signatures if valid and s.meaning == "verified"]

    @property
    def flag_count(self) -> int:
        """Recorded and computed values out of their limits."""
        return (sum(1 for v in self.values if v.current is not None and v.current.out_of_limit)
                + sum(1 for d in self.derived.values() if d.out_of_limit))


@dataclass
class StepView:
    spec: StepSpec
    state: StepState
    blocked: str | None  # why it cannot be recorded now, or None
    entries: list[EntryView] = field(default_factory=list)


@dataclass
class ContainerView:
    container: Container
    title: str  # "Final product bag 1 of 2"
    printed: int  # first prints
    reprinted: int
    label_outdated: bool  # Container.label_outdated, told from the newest print's time


@dataclass(frozen=True)
class Prints:
    """How often a container's label was printed, and when last."""

    first: int = 0
    reprints: int = 0
    newest_at: datetime | None = None


def label_prints(batch_id: int) -> dict[int, Prints]:
    """container id -> its label prints, counted in one query: a label printed again and again
    costs the batch page no more rows than one printed once."""
    reprints = func.sum(case((LabelPrint.is_reprint, 1), else_=0))
    rows = db.session.execute(
        select(LabelPrint.container_id, func.count(), reprints, func.max(LabelPrint.printed_at))
        .where(LabelPrint.batch_id == batch_id).group_by(LabelPrint.container_id))
    return {container_id: Prints(total - again, again, newest) for container_id, total, again, newest in rows}


def container_view(container: Container, definition: ProcessDefinition, prints: Prints) -> ContainerView:
    since = container.label_outdated_at  # outdated until printed again, as Container.label_outdated says
    outdated = since is not None and (prints.newest_at is None or prints.newest_at < since)
    return ContainerView(container, container_title(container, definition), prints.first, prints.reprints, outdated)


@dataclass
class BatchOverview:
    batch: Batch
    definition: ProcessDefinition
    steps: list[StepView]
    containers: list[ContainerView]
    custody: list[CustodyEvent]


def batch_overview(batch: Batch) -> BatchOverview:
    """Everything the batch page shows, step by step, in process order."""
    _load_rows(batch)
    definition = definition_for(batch)
    signatures = signatures_by_entry(batch)
    progress = batch_progress(batch, definition, signatures)
    states = step_states(definition, progress)
    steps = [StepView(s, states[s.key], can_start(definition, s.key, progress, batch.state))
             for s in definition.steps]
    by_key = {view.spec.key: view for view in steps}
    typed = {entry.id: typed_values(definition.step(entry.step_key), entry) for entry in batch.entries}
    for entry in batch.entries:
        view = by_key[entry.step_key]
        view.entries.append(_entry_view(batch, definition, view.spec, entry, signatures.get(entry.id, []), typed))
    prints = label_prints(batch.id)
    containers = [container_view(c, definition, prints.get(c.id, Prints())) for c in batch.containers]
    custody = list(db.session.scalars(
        select(CustodyEvent).where(CustodyEvent.batch_id == batch.id).order_by(CustodyEvent.id)
        .options(selectinload(CustodyEvent.container), selectinload(CustodyEvent.actor))
    ))
    return BatchOverview(batch, definition, steps, containers, custody)


def _load_rows(batch: Batch) -> None:
    """Load the batch's entries (their performers, and their values with who recorded them, lots
    and instruments) and its containers in a fixed number of queries, so that the overview reads
    them from the session instead of row by row. What the caller has loaded already (the batch
    page loads the batch with its rows) is not loaded again."""
    if not {"entries", "containers"} & inspect(batch).unloaded:
        return
    entries = selectinload(Batch.entries)
    values = entries.selectinload(StepEntry.values)
    db.session.scalars(select(Batch).where(Batch.id == batch.id).options(
        entries.selectinload(StepEntry.performed_by), values.selectinload(StepValue.recorded_by),
        values.selectinload(StepValue.lot), values.selectinload(StepValue.equipment),
        selectinload(Batch.containers).selectinload(Container.created_entry))).one()


def current_step(steps: list[StepView]) -> StepView | None:
    """The step the batch waits for: in process order, the first with an entry awaiting its
    second-person verification, or that can be recorded now and is not yet done; None when
    nothing can be recorded or verified (a batch in QC, released, ...)."""
    for view in steps:
        if any(e.awaiting_verification for e in view.entries):
            return view
        if view.blocked is None and view.state in (StepState.PENDING, StepState.IN_PROGRESS):
            return view
    return None


def entry_view(batch: Batch, entry: StepEntry) -> EntryView:
    """One entry as the batch page shows it (for the page where it is verified)."""
    definition = definition_for(batch)
    signatures = signatures_by_entry(batch).get(entry.id, [])
    return _entry_view(batch, definition, definition.step(entry.step_key), entry, signatures)


def _entry_view(batch: Batch, definition: ProcessDefinition, step: StepSpec, entry: StepEntry,
                signatures: list[Signature], typed: Mapping[int, dict[str, Value | None]] | None = None) -> EntryView:
    current = current_values(entry)
    values = [
        ValueView(spec, current.get(spec.key),
                  [v for v in entry.values if v.field_key == spec.key and v is not current.get(spec.key)])
        for spec in step.fields
    ]
    ctx = entry_context(batch, definition, now=entry.performed_at, exclude=entry, typed=typed)
    derived = compute_derived(step, typed[entry.id] if typed is not None else typed_values(step, entry), ctx)
    marked = [(s, matches(s, entry)) for s in signatures]
    awaiting = step.verify and not any(ok and s.meaning == "verified" for s, ok in marked)
    return EntryView(entry, values, derived, marked, awaiting)

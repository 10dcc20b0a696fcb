"""The executed batch record of a batch as a snapshot (``labels.record_data``), from the stored record.

It reads what the batch page and the release pages read (``progress.batch_overview``,
``release_status.quality_record``) plus the batch's audit trail, and writes nothing. The
snapshot depends on the database only, never on the time or the reader, so an unchanged
batch always gives the same snapshot and the same digest.

What is derived from the batch's own record (its steps, containers, custody, quality record,
audit trail) is kept per mark (``lab.services.record_marks``); what also depends on other
records (the patient, the lots' and instruments' later history, the patient's other batches,
audit reviews) is read again for every record.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from flask import current_app
from sqlalchemy import select

from lab.extensions import db
from lab.models import (
    Attachment,
    AuditEvent,
    Batch,
    Container,
    QcResult,
    Signature,
    StepValue,
    Submission,
)
from lab.services.deviations import SOURCES
from lab.services.expansion import expansion_chart
from lab.services.labels import bag_dose, label_dates
from lab.services.progress import ContainerView, EntryView, StepView, ValueView, batch_overview, definition_for
from lab.services.record_distribution import distribution_record
from lab.services.record_marks import COPY_TABLES, cache, mark
from lab.services.record_materials import materials_used
from lab.services.release_status import QualityRecord, TestRow, quality_record
from labels.record_data import (
    AuditRecord,
    BagContents,
    BatchRecordData,
    ContainerRecord,
    CustodyRecord,
    DecisionRecord,
    DerivedRecord,
    DeviationRecord,
    EntryRecord,
    FieldRecord,
    OriginalFile,
    ReleaseTestRecord,
    ResultRecord,
    Signed,
    StepRecord,
    TrailReview,
    ValueVersion,
)
from workflows.engine_types import FieldValue
from workflows.formatting import format_number, format_quantity
from workflows.model import ProcessDefinition

FIELD_KINDS = {"lot": "material", "equipment": "equipment", "container": "container", "containers": "container"}
#: Batch records kept per process (the part derived from the batch's own record).
CACHE_SIZE = 32


def batch_record(batch: Batch) -> BatchRecordData:
    """The executed batch record of ``batch`` as it stands in the database."""
    return keyed_record(batch)[1]


def keyed_record(batch: Batch) -> tuple[tuple[Hashable, ...], BatchRecordData]:
    """The record of ``batch`` and a key naming it: the batch's id and mark, then what else the
    record holds. Records with equal keys are equal, so what is derived from a record alone
    (its canonical JSON) may be kept under its key (``PerMark``)."""
    batch_mark = mark(batch.id)  # before loading anything the kept part is derived from
    definition = definition_for(batch)
    lots, equipment = materials_used(batch, definition)
    own = cache("batch_records", CACHE_SIZE).get(batch.id, batch_mark, lambda: _own_record(batch))
    others = {"coi": batch.patient.coi, "patient_ref": batch.patient.patient_ref, "lots": lots,
              "equipment": equipment, "trail_review": _trail_review(batch), "distribution": distribution_record(batch)}
    return (batch.id, batch_mark, *others.values()), replace(own, **others)


def _own_record(batch: Batch) -> BatchRecordData:
    """The record as derived from the batch's own record alone; :func:`batch_record` fills in the rest."""
    overview = batch_overview(batch)
    definition = overview.definition
    quality = quality_record(batch, definition)
    files = _original_files(batch)
    return BatchRecordData(
        batch_number=batch.batch_number,
        coi=batch.patient.coi,
        patient_ref=batch.patient.patient_ref,
        product=definition.product,
        process_key=definition.key,
        process_title=definition.title,
        process_version=definition.version,
        process_sha256=definition.sha256,
        facility_name=current_app.config["FACILITY_NAME"],
        state=definition.states.get(batch.state, batch.state),
        started_at=batch.created_at,
        started_by=batch.created_by.full_name,
        steps=tuple(_step(view, files) for view in overview.steps),
        containers=tuple(_container(view, definition) for view in overview.containers),
        custody=tuple(CustodyRecord(
            occurred_at=e.occurred_at, container=e.container.code if e.container else None, event=e.event,
            step=definition.step(e.step_key).title if e.step_key else None, scanned=e.scanned_code,
            from_location=e.from_location, to_location=e.to_location, actor=e.actor.full_name, matched=e.matched,
            message=e.message) for e in overview.custody),
        deviations=_deviations(quality),
        release_tests=tuple(_release_test(row) for row in quality.panel),
        decisions=_decisions(quality, definition),
        audit=_audit(batch),
        expansion=expansion_chart(batch, definition),
    )


def _signed(signatures: list[tuple[Signature, bool]]) -> tuple[Signed, ...]:
    return tuple(Signed(s.printed_name, s.meaning, s.signed_at, valid) for s, valid in signatures)


def _step(view: StepView, files: dict[int, OriginalFile]) -> StepRecord:
    return StepRecord(view.spec.key, view.spec.title, view.spec.verify,
                      tuple(_entry(ev, files.get(ev.entry.id)) for ev in view.entries))


def _original_files(batch: Batch) -> dict[int, OriginalFile]:
    """Entry id -> the instrument file its values were imported from (a submission's counter file)."""
    rows = db.session.execute(
        select(Submission.entry_id, Attachment.filename, Attachment.sha256)
        .join(Attachment, Submission.attachment_id == Attachment.id)
        .where(Submission.batch_id == batch.id, Submission.entry_id.is_not(None)))
    return {entry_id: OriginalFile(filename, sha256) for entry_id, filename, sha256 in rows}


def _entry(view: EntryView, original_file: OriginalFile | None) -> EntryRecord:
    return EntryRecord(
        occurrence=view.entry.occurrence,
        performed_by=view.entry.performed_by.full_name,
        performed_at=view.entry.performed_at,
        comment=view.entry.comment,
        fields=tuple(_field(value) for value in view.values),
        derived=tuple(_derived(value) for value in view.derived.values()),
        signatures=_signed(view.signatures),
        awaiting_verification=view.awaiting_verification,
        original_file=original_file,
    )


def _field(view: ValueView) -> FieldRecord:
    versions = [*view.history, view.current] if view.current else view.history
    current = versions[-1] if versions else None
    return FieldRecord(view.spec.key, view.spec.label, FIELD_KINDS.get(view.spec.type, "value"),
                       current.limit_text if current else "", tuple(_version(v) for v in versions), view.spec.type)


def _version(value: StepValue) -> ValueVersion:
    item = None
    if value.lot is not None:
        item = f"{value.lot.name}, lot {value.lot.lot_number}, expires {value.lot.expiry_date.isoformat()}"
    elif value.equipment is not None:
        item = value.equipment.name
    return ValueVersion(value.text, value.unit, value.out_of_limit, value.message, item,
                        value.recorded_by.full_name, value.recorded_at, value.reason)


def _derived(value: FieldValue) -> DerivedRecord:
    number = value.value
    text = format_number(number) if isinstance(number, (int, float)) and not isinstance(number, bool) else ""
    return DerivedRecord(value.key, value.label, text, value.unit, value.limit_text, value.out_of_limit)


def _container(view: ContainerView, definition: ProcessDefinition) -> ContainerRecord:
    c = view.container
    volume = format_quantity(c.volume_ml, "mL") if c.volume_ml is not None else None  # as its label prints it
    return ContainerRecord(c.code, view.title, volume,
                           c.status, c.location, view.printed + view.reprinted,
                           tuple(p.reason or "" for p in c.prints if p.is_reprint), _contents(c, definition))


def _contents(container: Container, definition: ProcessDefinition) -> BagContents | None:
    """A product bag's cells, dose and dates, from what its label prints (``lab.services.labels``)."""
    dose = bag_dose(container)
    if dose is None:
        return None
    dates = {d.what: d.moment for d in label_dates(container, definition.container_kinds.get(container.kind))}
    filled = dates.get("filled", container.created_entry.performed_at)
    return BagContents(dose.cells, dose.per_kg, dose.weight_kg, filled, dates.get("expires"))


def _deviations(quality: QualityRecord) -> tuple[DeviationRecord, ...]:
    return tuple(DeviationRecord(
        number=d.number, title=d.title, source=SOURCES.get(d.source, d.source), status=d.status,
        description=d.description, opened_at=d.opened_at, opened_by=d.opened_by.full_name,
        classification=d.classification, root_cause=d.root_cause, impact=d.impact,
        corrective_action=d.corrective_action, preventive_action=d.preventive_action,
        investigated_by=d.investigated_by.full_name if d.investigated_by else None, investigated_at=d.investigated_at,
        closed_by=d.closed_by.full_name if d.closed_by else None, closed_at=d.closed_at, signatures=_signed(signatures),
    ) for d, signatures in quality.deviations)


def _result(result: QcResult, signatures: list[tuple[Signature, bool]], superseded: set[int]) -> ResultRecord:
    return ResultRecord(
        text=f"{result.text} {result.unit}" if result.unit else result.text, verdict=result.verdict,
        final=result.is_final, specification=result.spec_text, comment=result.comment,
        recorded_by=result.recorded_by.full_name, recorded_at=result.recorded_at, late=result.is_late,
        reason=result.reason, superseded=result.id in superseded, signatures=_signed(signatures),
    )


def _release_test(row: TestRow) -> ReleaseTestRecord:
    return ReleaseTestRecord(row.test.key, row.test.title, row.test.method, row.specification, row.status,
                             tuple(_result(r, signatures, row.superseded) for r, signatures in row.history),
                             row.test.kind, row.test.unit)


def _decisions(quality: QualityRecord, definition: ProcessDefinition) -> tuple[DecisionRecord, ...]:
    states = definition.states
    return tuple(DecisionRecord(
        title=d.title, state_before=states.get(d.state_before, d.state_before),
        state_after=states.get(d.state_after, d.state_after), reason=d.reason, physician_name=d.physician_name,
        physician_request=d.physician_request, risk_assessment=d.risk_assessment,
        physician_confirmation=d.physician_confirmation, record_sha256=d.record_sha256,
        decided_by=d.decided_by.full_name, decided_at=d.decided_at, signatures=_signed(signatures),
    ) for d, signatures in quality.decisions)


def _audit(batch: Batch) -> tuple[AuditRecord, ...]:
    entries = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.batch_id == batch.id, AuditEvent.table_name.not_in(COPY_TABLES))
        .order_by(AuditEvent.id)
    )
    return tuple(AuditRecord(e.id, e.occurred_at, e.actor_username, e.action, e.operation, e.table_name, e.row_id,
                             e.field, e.old_value, e.new_value, e.reason) for e in entries)


def _trail_review(batch: Batch) -> TrailReview | None:
    from lab.services.audit_review import last_review_of  # here: it reads COPY_TABLES from this module

    found = last_review_of(batch)
    if found is None:
        return None
    review, later = found
    return TrailReview(review.reviewed_by.full_name, review.reviewed_at, review.period_from, review.period_to,
                       review.head_entry_id, later)

"""The chain-of-identity report of one patient, built from the database, and its issue.

``labels.coi_report`` draws it from a plain ``CoiReportData``: the patient, where the
product is (``chain.position``), each batch's manufacture and release in summary with the
digest of its executed batch record as it stands, every custody event of the patient's
batches in time order, the shipments with their receipt and QA's decisions, the bedside
checks, the infusions and the bags not infused, each with its signatures (and whether they
still match what they signed). Like the batch record, the snapshot depends on the database
only, so an unchanged chain always has the same digest.

Issuing a report stores its canonical JSON (an ``IssuedRecord`` filed under the patient's
newest batch, so that ``/verify/<digest>`` and the scan box check it like a batch record),
stores the batch record versions whose digests it prints (so that each of those verifies
too), and logs one download of kind ``coi-report``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from lab.exceptions import StepNotAllowed
from lab.extensions import db
from lab.models import Batch, CustodyEvent, Download, Patient, Signature, User
from lab.models.clinic import (
    SHIPMENT_STATUSES,
    Administration,
    BagDisposal,
    BedsideCheck,
    Shipment,
    ShipmentReceipt,
)
from lab.permissions import require
from lab.services.chain import position
from lab.services.downloads import record_download
from lab.services.progress import definition_for
from lab.services.record_issue import Snapshot, snapshot, store_issued
from lab.services.signatures import digest, record_signatures
from lab.services.site_scope import require_patient
from labels.coi_report import (
    BatchSummary,
    BedsideCheckPart,
    CoiReportData,
    Decision,
    DisposalPart,
    HandOff,
    InfusionPart,
    Receipt,
    ShipmentPart,
    SiteDecision,
    canonical_json,
)
from labels.digest import sha256_hex
from labels.record_data import Signed
from workflows.formatting import recorded_number

KIND = "coi-report"


@dataclass(frozen=True)
class CoiSnapshot:
    """A patient's report as it stands, its canonical JSON and that JSON's SHA-256, and the
    snapshots of the batch records whose digests it prints."""

    report: CoiReportData
    canonical: bytes
    digest: str
    records: tuple[tuple[Batch, Snapshot], ...]


def patient_by_coi(coi: str) -> Patient | None:
    return db.session.scalar(select(Patient).where(Patient.coi == coi.strip().upper()))


def require_reader(actor: User, patient: Patient) -> None:
    """Raise NotAllowed unless ``actor`` may read ``patient``'s report: a supervisor, QA
    officer, auditor, or a clinician of the patient's treating site."""
    require(actor, "read_coi_report", "download a chain-of-identity report")
    require_patient(actor, patient)


def coi_snapshot(patient: Patient) -> CoiSnapshot:
    records = tuple((batch, snapshot(batch)) for batch in patient.batches)
    report = coi_report_data(patient, {batch.id: copy.digest for batch, copy in records})
    canonical = canonical_json(report)
    return CoiSnapshot(report, canonical, sha256_hex(canonical), records)


def issue_coi_report(patient: Patient, copy: CoiSnapshot, *, actor: User, now: datetime) -> Download:
    """Store ``copy`` and the batch record versions it names unless issued before, and log the
    download by ``actor``. Flushes; the caller commits. Raises StepNotAllowed (409) for a
    patient without a batch: there is no chain to report yet."""
    if not copy.records:
        raise StepNotAllowed(f"Patient {patient.patient_ref} has no batch yet: there is no chain of identity "
                             "to report.")
    for batch, record in copy.records:
        store_issued(batch, record.digest, record.canonical, actor=actor, now=now)
    newest = copy.records[-1][0]
    store_issued(newest, copy.digest, copy.canonical, actor=actor, now=now)
    return record_download(actor, KIND, batch=newest, digest=copy.digest, detail=patient.coi, now=now)


# --- building the report ---------------------------------------------------------------------------


def _signed(pairs: Sequence[tuple[Signature, bool]]) -> tuple[Signed, ...]:
    return tuple(Signed(s.printed_name, s.meaning, s.signed_at, valid) for s, valid in pairs)


def _signatures_of(records: Sequence[object]) -> dict[int, tuple[Signed, ...]]:
    """The signatures of ``records`` (clinic records of one model), by record id, each marked
    whether it still matches the record's content."""
    if not records:
        return {}
    record_type = type(records[0]).signature_record_type  # type: ignore[attr-defined]
    by_id = {r.id: r for r in records}  # type: ignore[attr-defined]
    found: dict[int, list[Signed]] = defaultdict(list)
    for s in db.session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                        Signature.record_id.in_(by_id)).order_by(Signature.id)):
        valid = s.content_sha256 == digest(by_id[s.record_id], s.hash_scheme)  # type: ignore[arg-type]
        found[s.record_id].append(Signed(s.printed_name, s.meaning, s.signed_at, valid))
    return {record_id: tuple(signed) for record_id, signed in found.items()}


def _batch(batch: Batch, record_digest: str) -> BatchSummary:
    definition = definition_for(batch)
    states = definition.states
    return BatchSummary(
        batch_number=batch.batch_number, product=definition.product, process_key=definition.key,
        process_version=definition.version, state=states.get(batch.state, batch.state), started_at=batch.created_at,
        record_digest=record_digest,
        decisions=tuple(Decision(d.title, states.get(d.state_after, d.state_after), d.reason, d.decided_by.full_name,
                                 d.decided_at, _signed(record_signatures(d))) for d in batch.dispositions),
    )


def _within(shipment: Shipment, receipt: ShipmentReceipt) -> bool | None:
    if shipment.temp_min_c is None and shipment.temp_max_c is None:
        return None
    low = shipment.temp_min_c if shipment.temp_min_c is not None else float("-inf")
    high = shipment.temp_max_c if shipment.temp_max_c is not None else float("inf")
    return low <= receipt.logger_min_c and receipt.logger_max_c <= high


def _temperature(value: float | None) -> str | None:
    return None if value is None else recorded_number(value)


def _shipment(shipment: Shipment, signed: dict[str, dict[int, tuple[Signed, ...]]]) -> ShipmentPart:
    receipt = shipment.receipt
    return ShipmentPart(
        number=shipment.number, batch_number=shipment.batch.batch_number,
        status=SHIPMENT_STATUSES.get(shipment.status, shipment.status),
        site=f"{shipment.site.code} {shipment.site.name}", bags=tuple(bag.container.code for bag in shipment.bags),
        shipper_code=shipment.shipper_code, logger_code=shipment.logger_code,
        temp_min_c=_temperature(shipment.temp_min_c), temp_max_c=_temperature(shipment.temp_max_c),
        departed_at=shipment.departed_at, courier=shipment.courier, packed_by=shipment.packed_by.full_name,
        packed_at=shipment.packed_at, verified_by=shipment.verified_by.full_name if shipment.verified_by else None,
        verified_at=shipment.verified_at, signatures=signed["shipment"].get(shipment.id, ()),
        receipt=None if receipt is None else Receipt(
            arrived_at=receipt.arrived_at, logger_min_c=recorded_number(receipt.logger_min_c),
            logger_max_c=recorded_number(receipt.logger_max_c), within_range=_within(shipment, receipt),
            shipper_intact=receipt.shipper_intact, storage=receipt.storage,
            scanned_codes=tuple(receipt.scanned_codes or ()), missing_codes=tuple(receipt.missing_codes or ()),
            comment=receipt.comment, quarantine_reason=receipt.quarantine_reason,
            deviation=receipt.deviation.number if receipt.deviation else None,
            received_by=receipt.received_by.full_name, received_at=receipt.received_at,
            signatures=signed["receipt"].get(receipt.id, ())),
        decisions=tuple(SiteDecision(d.decision, d.reason, d.decided_by.full_name, d.decided_at,
                                     signed["decision"].get(d.id, ())) for d in shipment.decisions),
    )


def coi_report_data(patient: Patient, record_digests: dict[int, str]) -> CoiReportData:
    """The report of ``patient`` as it stands; ``record_digests`` maps each of the patient's
    batch ids to the digest of its executed batch record."""
    batches = list(patient.batches)
    ids = [batch.id for batch in batches]
    numbers = {batch.id: batch.batch_number for batch in batches}
    chain = position(patient)

    def rows(model: type, order: object) -> list:
        if not ids:
            return []
        return list(db.session.scalars(select(model).where(model.batch_id.in_(ids))  # type: ignore[attr-defined]
                                       .order_by(order, model.id)))  # type: ignore[attr-defined]

    custody = rows(CustodyEvent, CustodyEvent.occurred_at)
    shipments = rows(Shipment, Shipment.departed_at)
    receipts = [s.receipt for s in shipments if s.receipt is not None]
    decisions = [d for s in shipments for d in s.decisions]
    checks = rows(BedsideCheck, BedsideCheck.checked_at)
    infusions = rows(Administration, Administration.infusion_start)
    disposals = rows(BagDisposal, BagDisposal.happened_at)
    signed = {"shipment": _signatures_of(shipments), "receipt": _signatures_of(receipts),
              "decision": _signatures_of(decisions)}
    check_signed, infusion_signed, disposal_signed = (_signatures_of(checks), _signatures_of(infusions),
                                                      _signatures_of(disposals))
    site = patient.treating_site
    v2v = chain.vein_to_vein
    return CoiReportData(
        coi=patient.coi, patient_ref=patient.patient_ref, initials=patient.initials,
        date_of_birth=patient.date_of_birth, treating_site=f"{site.code} {site.name}" if site else None,
        facility_name=current_app.config["FACILITY_NAME"], stage=chain.stage, collection_end=chain.collection_end,
        infused_at=chain.infused_at, closed=chain.closed,
        vein_to_vein_minutes=None if v2v is None else int(v2v.total_seconds() // 60),
        batches=tuple(_batch(batch, record_digests[batch.id]) for batch in batches),
        custody=tuple(HandOff(
            occurred_at=e.occurred_at, batch_number=numbers[e.batch_id], container=e.container.code if e.container
            else None, event=e.event, scanned=e.scanned_code, from_location=e.from_location,
            to_location=e.to_location, actor=e.actor.full_name, matched=e.matched, message=e.message or "")
            for e in custody),
        shipments=tuple(_shipment(s, signed) for s in shipments),
        bedside_checks=tuple(BedsideCheckPart(
            bag=c.container.code, batch_number=numbers[c.batch_id], method=c.method,
            patient_evidence=c.patient_evidence, bag_scanned=c.bag_scanned, checked_at=c.checked_at,
            first=c.first.full_name, second=c.second.full_name, signatures=check_signed.get(c.id, ()))
            for c in checks),
        infusions=tuple(InfusionPart(
            bag=a.container.code, batch_number=numbers[a.batch_id], thaw_start=a.thaw_start, thaw_end=a.thaw_end,
            infusion_start=a.infusion_start, infusion_end=a.infusion_end, limit_minutes=a.limit_minutes,
            limit_exceeded=a.limit_exceeded, reactions=a.reactions, deviation=a.deviation.number if a.deviation
            else None, administered_by=a.administered_by.full_name, recorded_at=a.recorded_at,
            signatures=infusion_signed.get(a.id, ())) for a in infusions),
        disposals=tuple(DisposalPart(
            bag=d.container.code, batch_number=numbers[d.batch_id], outcome=d.outcome, reason=d.reason,
            happened_at=d.happened_at, recorded_by=d.recorded_by.full_name, witness=d.witness.full_name,
            signatures=disposal_signed.get(d.id, ())) for d in disposals),
    )

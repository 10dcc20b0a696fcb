"""The "Distribution and administration" part of a batch's executed record
(``labels.distribution_data``), from the stored shipments, receipts, decisions, bedside checks,
administrations, disposals and site notices, and the patient's chain (``lab.services.chain``).

Read only, and like the rest of the record it depends on the database alone (never the time
or the reader), so an unchanged batch keeps its digest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import Batch, Signature
from lab.models.clinic import (
    DISPOSAL_OUTCOMES,
    SHIPMENT_STATUSES,
    Administration,
    BagDisposal,
    BedsideCheck,
    Shipment,
    ShipmentBag,
    ShipmentDecision,
    ShipmentReceipt,
    SiteNotice,
)
from lab.services.chain import position
from lab.services.signatures import RECORD_TYPES, Signable, marked
from labels.distribution_data import (
    BagRecord,
    BedsideRecord,
    DisposalRecord,
    DistributionRecord,
    InfusionRecord,
    NoticeRecord,
    ReceiptRecord,
    ShipmentRecord,
    SiteDecisionRecord,
)
from labels.record_data import Signed
from workflows.formatting import recorded_number

METHODS = {"wristband": "Wristband COI scanned", "identifiers": "Patient reference and date of birth typed"}
SITE_DECISIONS = {"release": "Released for use", "reject": "Rejected"}


Signatures = dict[tuple[str, int], list[Signature]]


def signatures_of(records: Sequence[Signable]) -> Signatures:
    """The signatures of ``records``, by (record type, record id), oldest first, in one query
    (these records' signatures carry no batch, so the batch's own cannot be asked for)."""
    ids: dict[str, list[int]] = defaultdict(list)
    for record in records:
        ids[RECORD_TYPES[type(record)]].append(record.id)
    found: Signatures = defaultdict(list)
    if not ids:
        return found
    for signature in db.session.scalars(select(Signature).where(or_(*(
            and_(Signature.record_type == kind, Signature.record_id.in_(record_ids))
            for kind, record_ids in ids.items()))).order_by(Signature.id)):
        found[(signature.record_type, signature.record_id)].append(signature)
    return found


def _signed(record: Signable, signatures: Signatures) -> tuple[Signed, ...]:
    return tuple(Signed(s.printed_name, s.meaning, s.signed_at, valid) for s, valid in marked(record, signatures))


def shipping_range(shipment: Shipment) -> str:
    low, high = shipment.temp_min_c, shipment.temp_max_c
    if low is not None and high is not None:
        return f"{recorded_number(low)} to {recorded_number(high)} °C"
    if low is not None:
        return f"at least {recorded_number(low)} °C"
    if high is not None:
        return f"at most {recorded_number(high)} °C"
    return ""


def duration_text(span: timedelta) -> str:
    """``23 days 4 h 10 min`` (to the minute)."""
    minutes = int(span.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if hours or days:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min")
    return " ".join(parts)


def distribution_record(batch: Batch) -> DistributionRecord | None:
    """What happened to ``batch``'s product after it left the lab; None when nothing was ever packed."""
    receipt = selectinload(Shipment.receipt)
    shipments = db.session.scalars(
        select(Shipment).where(Shipment.batch_id == batch.id)
        .options(selectinload(Shipment.bags).selectinload(ShipmentBag.container), selectinload(Shipment.site),
                 selectinload(Shipment.packed_by), selectinload(Shipment.verified_by),
                 receipt.selectinload(ShipmentReceipt.received_by), receipt.selectinload(ShipmentReceipt.logger_file),
                 receipt.selectinload(ShipmentReceipt.deviation),
                 selectinload(Shipment.decisions).selectinload(ShipmentDecision.decided_by))
        .order_by(Shipment.id)).all()
    notices = db.session.scalars(select(SiteNotice).where(SiteNotice.batch_id == batch.id)
                                 .options(selectinload(SiteNotice.site), selectinload(SiteNotice.acknowledged_by))
                                 .order_by(SiteNotice.id)).all()
    if not shipments and not notices:
        return None
    checks: dict[int, list[BedsideCheck]] = defaultdict(list)
    for check in db.session.scalars(select(BedsideCheck).where(BedsideCheck.batch_id == batch.id)
                                    .options(selectinload(BedsideCheck.first), selectinload(BedsideCheck.second))
                                    .order_by(BedsideCheck.id)):
        checks[check.container_id].append(check)
    infusions = {a.container_id: a for a in db.session.scalars(
        select(Administration).where(Administration.batch_id == batch.id)
        .options(selectinload(Administration.administered_by), selectinload(Administration.deviation)))}
    disposals = {d.container_id: d for d in db.session.scalars(
        select(BagDisposal).where(BagDisposal.batch_id == batch.id)
        .options(selectinload(BagDisposal.recorded_by), selectinload(BagDisposal.witness)))}
    signatures = signatures_of([*shipments, *(s.receipt for s in shipments if s.receipt),
                                *(d for s in shipments for d in s.decisions), *notices,
                                *(c for found in checks.values() for c in found), *infusions.values(),
                                *disposals.values()])
    bags = []
    seen: set[int] = set()
    for shipment in shipments:
        if shipment.status == "packed":
            continue  # not verified: it has not left the lab
        for bag in shipment.bags:
            container = bag.container
            if container.id in seen:
                continue
            seen.add(container.id)
            infusion = infusions.get(container.id)
            disposal = disposals.get(container.id)
            bags.append(BagRecord(container.code, container.status,
                                  tuple(_bedside(c, signatures) for c in checks.get(container.id, [])),
                                  _infusion(infusion, signatures) if infusion else None,
                                  _disposal(disposal, signatures) if disposal else None))
    chain = position(batch.patient)
    own = chain.batch is not None and chain.batch.id == batch.id
    if not own:
        vein, closed, collection_end, infused_at = "Not counted: this is not the patient's newest batch.", False, \
            None, None
    else:
        closed, collection_end, infused_at = chain.closed, chain.collection_end, chain.infused_at
        if chain.vein_to_vein is not None:
            vein = duration_text(chain.vein_to_vein)
        elif collection_end is None:
            vein = "Not counted: the end of collection is not recorded."
        elif closed:
            vein = "Not counted: the chain closed without an infusion."
        else:
            vein = "Running: the chain closes when every shipped bag is infused, returned, destroyed or kept unused."
    return DistributionRecord(
        shipments=tuple(_shipment(s, signatures) for s in shipments),
        bags=tuple(bags),
        collection_end=collection_end,
        infused_at=infused_at,
        chain_closed=closed,
        vein_to_vein=vein,
        notices=tuple(notice_record(n, signatures) for n in notices),
    )


def _shipment(shipment: Shipment, signatures: Signatures) -> ShipmentRecord:
    site = shipment.site
    return ShipmentRecord(
        number=shipment.number, consignee=f"{site.code} {site.name}", address=site.address,
        status=SHIPMENT_STATUSES.get(shipment.status, shipment.status),
        bags=tuple(bag.container.code for bag in shipment.bags), shipper=shipment.shipper_code,
        logger=shipment.logger_code, courier=shipment.courier, departed_at=shipment.departed_at,
        shipping_range=shipping_range(shipment), packed_by=shipment.packed_by.full_name,
        packed_at=shipment.packed_at,
        verified_by=shipment.verified_by.full_name if shipment.verified_by else None,
        verified_at=shipment.verified_at, signatures=_signed(shipment, signatures),
        receipt=_receipt(shipment.receipt, signatures) if shipment.receipt else None,
        decisions=tuple(SiteDecisionRecord(SITE_DECISIONS.get(d.decision, d.decision), d.reason,
                                           d.decided_by.full_name, d.decided_at, _signed(d, signatures))
                        for d in shipment.decisions),
    )


def _receipt(receipt: ShipmentReceipt, signatures: Signatures) -> ReceiptRecord:
    shipment = receipt.shipment
    if receipt.quarantine_reason:
        verdict = f"QUARANTINED at the site: {receipt.quarantine_reason}"
    else:
        within = shipping_range(shipment)
        verdict = "ACCEPTED: " + ", ".join(filter(None, (
            f"logger within {within}" if within else "", "shipper intact", "every bag received")))
    return ReceiptRecord(
        arrived_at=receipt.arrived_at, received_by=receipt.received_by.full_name, received_at=receipt.received_at,
        logger_min_c=recorded_number(receipt.logger_min_c), logger_max_c=recorded_number(receipt.logger_max_c),
        shipper_intact=receipt.shipper_intact, storage=receipt.storage, scanned=tuple(receipt.scanned_codes or ()),
        missing=tuple(receipt.missing_codes or ()), verdict=verdict,
        deviation=receipt.deviation.number if receipt.deviation else None, comment=receipt.comment or "",
        logger_file_sha256=receipt.logger_file.sha256 if receipt.logger_file else None,
        signatures=_signed(receipt, signatures),
    )


def _bedside(check: BedsideCheck, signatures: Signatures) -> BedsideRecord:
    return BedsideRecord(METHODS.get(check.method, check.method), check.patient_evidence, check.bag_scanned,
                         check.checked_at, check.first.full_name, check.second.full_name,
                         _signed(check, signatures))


def _infusion(record: Administration, signatures: Signatures) -> InfusionRecord:
    taken = duration_text(record.infusion_end - record.thaw_start)
    if record.limit_minutes is None:
        limit = f"No thaw-to-infusion limit set by the process ({taken} from the start of thawing to the end of infusion)."
    elif record.limit_exceeded:
        limit = (f"Limit EXCEEDED: {taken} from the start of thawing to the end of infusion, over the "
                 f"{record.limit_minutes} minutes allowed.")
    else:
        limit = (f"Limit kept: {taken} from the start of thawing to the end of infusion, within "
                 f"{record.limit_minutes} minutes.")
    return InfusionRecord(record.thaw_start, record.thaw_end, record.infusion_start, record.infusion_end, limit,
                          record.limit_exceeded, record.deviation.number if record.deviation else None,
                          record.reactions or "", record.administered_by.full_name,
                          _signed(record, signatures))


def _disposal(record: BagDisposal, signatures: Signatures) -> DisposalRecord:
    return DisposalRecord(DISPOSAL_OUTCOMES.get(record.outcome, record.outcome), record.reason, record.happened_at,
                          record.recorded_by.full_name, record.witness.full_name,
                          _signed(record, signatures))


def notice_record(notice: SiteNotice, signatures: Signatures | None = None) -> NoticeRecord:
    """``notice`` for a printed record; ``signatures`` as :func:`signatures_of` gives them (read here when None)."""
    if signatures is None:
        signatures = signatures_of([notice])
    return NoticeRecord(notice.id, f"{notice.site.code} {notice.site.name}", notice.what, notice.created_at,
                        notice.acknowledged_by.full_name if notice.acknowledged_by else None,
                        notice.acknowledged_at, _signed(notice, signatures))

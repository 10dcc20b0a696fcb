"""The "Distribution and administration" section of the executed batch record (``labels.record``):
each shipment with its packing, verification, receipt (logger readings and verdict), quarantine
and QA's decision; each shipped bag's bedside check, thaw and infusion (the limit kept or
exceeded) or disposal; the vein-to-vein time; and the notices of late results sent to the
sites with their acknowledgement. Pure: data (``labels.distribution_data``) in, flowables out.
"""

from __future__ import annotations

from reportlab.platypus import Flowable

from labels.distribution_data import (
    BagRecord,
    DistributionRecord,
    NoticeRecord,
    ReceiptRecord,
    ShipmentRecord,
)
from labels.document import TEXT_WIDTH
from labels.record_data import Signed
from labels.tables import (
    BODY,
    ENTRY,
    FLAG,
    HEADING,
    LINE,
    SMALL,
    SUBHEADING,
    TINY,
    column_widths,
    done_by,
    fact_table,
    grid_table,
    para,
    signature_line,
    signature_paragraphs,
)
from workflows.formatting import format_utc

TITLE = "Distribution and administration"


def distribution_section(distribution: DistributionRecord | None) -> list[Flowable]:
    flowables: list[Flowable] = [para(TITLE, HEADING)]
    if distribution is None:
        return [*flowables, para("Not shipped: no shipment of this batch's product has been packed.", BODY)]
    for shipment in distribution.shipments:
        flowables += _shipment(shipment)
    flowables += _bags(distribution)
    flowables += _chain(distribution)
    flowables += notices_section(distribution.notices)
    return flowables


def _shipment(shipment: ShipmentRecord) -> list[Flowable]:
    facts = fact_table([
        ("Status", shipment.status),
        ("Consignee", f"{shipment.consignee}, {' '.join(shipment.address.split())}"),
        ("Bags", ", ".join(shipment.bags)),
        ("Dry shipper", shipment.shipper),
        ("Logger", shipment.logger),
        ("Shipping range", shipment.shipping_range or "not set by the process"),
        ("Courier", shipment.courier),
        ("Departure", format_utc(shipment.departed_at)),
        ("Packed", done_by(shipment.packed_by, shipment.packed_at)),
        ("Verified", done_by(shipment.verified_by, shipment.verified_at) or "NOT VERIFIED: it has not left the lab"),
    ], TEXT_WIDTH)
    flowables: list[Flowable] = [para(f"Shipment {shipment.number} to {shipment.consignee}", SUBHEADING), facts,
                                 *signature_paragraphs(shipment.signatures, "Not verified.")]
    flowables += _receipt(shipment.receipt)
    for decision in shipment.decisions:
        flowables += [para(f"QA decision on the quarantine: {decision.decision}", ENTRY),
                      fact_table([("Decided", done_by(decision.decided_by, decision.decided_at)),
                              ("Reason", decision.reason)], TEXT_WIDTH),
                      *signature_paragraphs(decision.signatures)]
    return flowables


def _receipt(receipt: ReceiptRecord | None) -> list[Flowable]:
    if receipt is None:
        return [para("Receipt at the site: not received yet.", ENTRY)]
    verdict_style = FLAG if receipt.verdict.startswith("QUARANTINED") else BODY
    facts = fact_table([
        ("Arrived", format_utc(receipt.arrived_at)),
        ("Received", done_by(receipt.received_by, receipt.received_at)),
        ("Logger readings", f"minimum {receipt.logger_min_c} °C, maximum {receipt.logger_max_c} °C"),
        ("Logger file", f"SHA-256 {receipt.logger_file_sha256}" if receipt.logger_file_sha256 else "none attached"),
        ("Shipper", "intact" if receipt.shipper_intact else "DAMAGED OR OPENED"),
        ("Bags scanned", ", ".join(receipt.scanned) or "none"),
        ("Bags missing", ", ".join(receipt.missing)),
        ("Storage at the site", receipt.storage),
        ("Verdict", para(receipt.verdict, verdict_style)),
        ("Deviation", receipt.deviation or ""),
        ("Comment", receipt.comment),
    ], TEXT_WIDTH)
    return [para("Receipt at the site", ENTRY), facts, *signature_paragraphs(receipt.signatures)]


def _signed(signatures: tuple[Signed, ...]) -> list[Flowable]:
    return [para(signature_line(s), TINY if s.valid else FLAG) for s in signatures]


def _bag_cells(bag: BagRecord) -> list[Flowable | list[Flowable]]:
    checks: list[Flowable] = []
    for check in bag.bedside_checks:
        checks += [para(f"MATCH at {format_utc(check.checked_at)}: {check.method} ({check.patient_evidence}); bag "
                      f"scanned {check.bag_scanned}; {check.first} and {check.second}", SMALL),
                   *_signed(check.signatures)]
    infusion: list[Flowable] = []
    if bag.infusion is not None:
        i = bag.infusion
        infusion = [para(f"Thaw {format_utc(i.thaw_start)} to {format_utc(i.thaw_end)}", SMALL),
                    para(f"Infusion {format_utc(i.infusion_start)} to {format_utc(i.infusion_end)}", SMALL),
                    para(i.limit, FLAG if i.limit_exceeded else SMALL),
                    para(f"By {i.administered_by}" + (f"; deviation {i.deviation}" if i.deviation else ""), SMALL)]
        if i.reactions:
            infusion.append(para(f"Reactions: {i.reactions}", TINY))
        infusion += _signed(i.signatures)
    elif bag.disposal is not None:
        d = bag.disposal
        infusion = [para(f"{d.outcome.upper()} at {format_utc(d.happened_at)}", SMALL), para(f"Reason: {d.reason}", SMALL),
                    para(f"Recorded by {d.recorded_by}, witnessed by {d.witness}", SMALL),
                    *_signed(d.signatures)]
    return [para(bag.code, SMALL), para(bag.status, SMALL), checks or [para("not checked yet", SMALL)],
            infusion or [para("not infused or disposed of yet", SMALL)]]


def _bags(distribution: DistributionRecord) -> list[Flowable]:
    if not distribution.bags:
        return [para("Bags at the site", ENTRY), para("No bag has left the lab yet (the shipment is not verified).", BODY)]
    flagged = [n for n, bag in enumerate(distribution.bags) if bag.infusion is not None and bag.infusion.limit_exceeded]
    return [para("Bags at the site: bedside check, thaw and infusion, or disposal", ENTRY),
            grid_table(("Bag", "Status", "Bedside identity check", "Thaw and infusion, or disposal"),
                   [_bag_cells(bag) for bag in distribution.bags], column_widths(21, 8, 35, 36), flagged=flagged)]


def _chain(distribution: DistributionRecord) -> list[Flowable]:
    return [para("Vein-to-vein time", ENTRY), fact_table([
        ("End of collection", format_utc(distribution.collection_end) if distribution.collection_end else
         "not recorded"),
        ("End of the last infusion", format_utc(distribution.infused_at) if distribution.infused_at else ""),
        ("Chain", "CLOSED: every shipped bag infused, returned, destroyed or kept unused" if distribution.chain_closed
         else "open"),
        ("Vein-to-vein", distribution.vein_to_vein),
    ], TEXT_WIDTH)]


def notice_status(notice: NoticeRecord) -> str:
    if notice.acknowledged_at is None or notice.acknowledged_by is None:
        return "OPEN: not yet acknowledged by the site"
    return f"Acknowledged by {notice.acknowledged_by} at {format_utc(notice.acknowledged_at)}"


def notices_section(notices: tuple[NoticeRecord, ...]) -> list[Flowable]:
    flowables: list[Flowable] = [para("Notices of late results to the sites", ENTRY)]
    if not notices:
        return [*flowables, para("None: no release result has failed after shipment.", BODY)]
    for notice in notices:
        flowables += [para(f"Notice {notice.id} to {notice.site}, {format_utc(notice.created_at)}", LINE),
                      para(notice.what, SMALL),
                      para(notice_status(notice), SMALL if notice.acknowledged_at else FLAG),
                      *(signature_paragraphs(notice.signatures) if notice.signatures else [])]
    return flowables

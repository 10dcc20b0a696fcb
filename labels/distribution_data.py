"""The "Distribution and administration" part of the executed batch record, as plain data
(``labels.record_data.BatchRecordData.distribution``; printed by ``labels.record_distribution``).

After release (DOMAIN.md §5): each shipment (consignee, departure, packing and its
verification, the receipt at the site with the logger's readings and the verdict, the
quarantine and QA's decision), each shipped bag's bedside identity check, thaw and infusion
(the thaw-to-infusion limit kept or exceeded) or disposal, the vein-to-vein time, and the
notices of late results sent to the sites with their acknowledgement. Numbers are kept as
text (the digest has no floats); times are aware.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from labels.data import check_aware
from labels.record_data import Signed


@dataclass(frozen=True)
class ReceiptRecord:
    """The site's receipt of a shipment. ``verdict`` is ACCEPTED or QUARANTINED with the reason."""

    arrived_at: datetime
    received_by: str
    received_at: datetime
    logger_min_c: str
    logger_max_c: str
    shipper_intact: bool
    storage: str
    scanned: tuple[str, ...]
    missing: tuple[str, ...]
    verdict: str
    deviation: str | None  # the deviation its quarantine opened
    comment: str
    logger_file_sha256: str | None
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("receipt times", self.arrived_at, self.received_at)


@dataclass(frozen=True)
class SiteDecisionRecord:
    """QA's decision on a shipment quarantined at its site."""

    decision: str  # in words: "Released for use" or "Rejected"
    reason: str
    decided_by: str
    decided_at: datetime
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("decided_at", self.decided_at)


@dataclass(frozen=True)
class ShipmentRecord:
    number: str
    consignee: str  # code and name
    address: str
    status: str  # in words
    bags: tuple[str, ...]
    shipper: str
    logger: str
    courier: str
    departed_at: datetime
    shipping_range: str  # "-196 to -150 °C", or "" where the process sets none
    packed_by: str
    packed_at: datetime
    verified_by: str | None
    verified_at: datetime | None
    signatures: tuple[Signed, ...]
    receipt: ReceiptRecord | None
    decisions: tuple[SiteDecisionRecord, ...]

    def __post_init__(self) -> None:
        check_aware("shipment times", self.departed_at, self.packed_at, self.verified_at)


@dataclass(frozen=True)
class BedsideRecord:
    """A two-person identity check at the bedside (a match: a mismatch is a custody event)."""

    method: str  # in words
    patient_evidence: str
    bag_scanned: str
    checked_at: datetime
    first: str
    second: str
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("checked_at", self.checked_at)


@dataclass(frozen=True)
class InfusionRecord:
    thaw_start: datetime
    thaw_end: datetime
    infusion_start: datetime
    infusion_end: datetime
    limit: str  # "thaw to end of infusion within 30 min: KEPT (16 min)" / "... EXCEEDED (45 min)" / "none set"
    limit_exceeded: bool
    deviation: str | None
    reactions: str
    administered_by: str
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("infusion times", self.thaw_start, self.thaw_end, self.infusion_start, self.infusion_end)


@dataclass(frozen=True)
class DisposalRecord:
    outcome: str  # in words
    reason: str
    happened_at: datetime
    recorded_by: str
    witness: str
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("happened_at", self.happened_at)


@dataclass(frozen=True)
class BagRecord:
    """One shipped bag after it left the lab."""

    code: str
    status: str
    bedside_checks: tuple[BedsideRecord, ...]
    infusion: InfusionRecord | None
    disposal: DisposalRecord | None


@dataclass(frozen=True)
class NoticeRecord:
    """A notice of a late failing result sent to a site, and its acknowledgement (None: open)."""

    id: int
    site: str
    what: str
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("notice times", self.created_at, self.acknowledged_at)


@dataclass(frozen=True)
class DistributionRecord:
    shipments: tuple[ShipmentRecord, ...]
    bags: tuple[BagRecord, ...]
    collection_end: datetime | None
    infused_at: datetime | None  # end of the last infusion, once every shipped bag's trail has ended
    chain_closed: bool
    vein_to_vein: str  # "23 days 4 h 10 min", or why there is none yet
    notices: tuple[NoticeRecord, ...]

    def __post_init__(self) -> None:
        check_aware("chain times", self.collection_end, self.infused_at)

"""After release: the treating sites, the shipment of a patient's bags to one of them, their
receipt there, the bedside identity check, the thaw and infusion, what happens to a bag that
is not infused, and the notices a site must acknowledge (DOMAIN.md §5, 21 CFR 1271.290(d)-(f)).

Every act a person attests to is its own append-only row with its own signature; the
``Shipment`` itself only changes its ``status`` (and the audit trail keeps each change).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.attachments import Attachment
    from lab.models.batches import Batch
    from lab.models.containers import Container
    from lab.models.patients import Patient
    from lab.models.quality import Deviation
    from lab.models.release import QcResult
    from lab.models.users import User

#: packed: waiting for the second person's verification; in_transit: verified, on its way;
#: received: accepted at the site; quarantined: received with an excursion, a missing bag or a
#: broken shipper, waiting for QA; rejected: QA decided the product must not be used.
SHIPMENT_STATUSES = {"packed": "Packed, awaiting verification", "in_transit": "In transit",
                     "received": "Received at the site", "quarantined": "Quarantined at the site",
                     "rejected": "Rejected by QA"}
#: What may happen to a bag that is not infused.
DISPOSAL_OUTCOMES = {"returned": "Returned to the manufacturer", "destroyed": "Destroyed at the site",
                     "unused": "Not used, kept at the site under quarantine"}


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class Site(Audited, Model):
    """A treatment site (consignee): kept by an administrator, never deleted, deactivated instead."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A short code printed on shipper labels, e.g. "NUH-HEM".
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    address: Mapped[str] = mapped_column(Text)
    #: Who to call about a shipment: name, telephone, e-mail, as the site gave them.
    contact: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    #: Who registered it is in the audit trail (a users -> sites key each way would be a cycle).
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Shipment(Audited, Model):
    """A dry shipper with one batch's bags, packed for one consignee site. Its signature (the
    second person's verification) covers the packing facts only: the later receipt and decisions
    are their own signed rows."""

    __tablename__ = "shipments"
    #: A site's shipments in one status, soonest departed first (the clinic dashboard).
    __table_args__ = (Index("ix_shipments_site_status_departed", "site_id", "status", "departed_at", "id"),)
    signature_record_type: ClassVar[str] = "shipment"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="packed", index=True)
    #: The dry shipper's and its temperature logger's codes as scanned.
    shipper_code: Mapped[str] = mapped_column(String(64))
    logger_code: Mapped[str] = mapped_column(String(64))
    courier: Mapped[str] = mapped_column(String(128))
    departed_at: Mapped[datetime]
    #: The shipping range of the batch's process definition when packed (None: it sets none).
    temp_min_c: Mapped[float | None] = mapped_column(Float)
    temp_max_c: Mapped[float | None] = mapped_column(Float)
    packed_at: Mapped[datetime] = mapped_column(default=utcnow)
    packed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verified_at: Mapped[datetime | None]
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship()
    site: Mapped[Site] = relationship()
    packed_by: Mapped[User] = relationship(foreign_keys=[packed_by_id])
    verified_by: Mapped[User | None] = relationship(foreign_keys=[verified_by_id])
    bags: Mapped[list[ShipmentBag]] = relationship(back_populates="shipment", order_by="ShipmentBag.id")
    receipt: Mapped[ShipmentReceipt | None] = relationship(back_populates="shipment", uselist=False)
    decisions: Mapped[list[ShipmentDecision]] = relationship(back_populates="shipment",
                                                             order_by="ShipmentDecision.id")

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "batch": self.batch.batch_number,
            "coi": self.batch.patient.coi,
            "site": self.site.code,
            "bags": [bag.container.code for bag in self.bags],
            "shipper": self.shipper_code,
            "logger": self.logger_code,
            "courier": self.courier,
            "departed_at": _time(self.departed_at),
            "temp_min_c": self.temp_min_c,
            "temp_max_c": self.temp_max_c,
            "packed_by": self.packed_by_id,
            "packed_at": _time(self.packed_at),
        }


class ShipmentBag(AppendOnly, Model):
    """One bag packed into a shipment (scanned, its COI and release checked)."""

    __tablename__ = "shipment_bags"
    __table_args__ = (UniqueConstraint("shipment_id", "container_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), index=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)

    shipment: Mapped[Shipment] = relationship(back_populates="bags")
    container: Mapped[Container] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class ShipmentReceipt(AppendOnly, Model):
    """The site's receipt of a shipment: what was scanned, the logger's readings and file, the
    shipper's state, the arrival, and where the bags are stored. Signed "received"."""

    __tablename__ = "shipment_receipts"
    signature_record_type: ClassVar[str] = "shipment_receipt"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    arrived_at: Mapped[datetime]
    logger_min_c: Mapped[float] = mapped_column(Float)
    logger_max_c: Mapped[float] = mapped_column(Float)
    logger_file_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    shipper_intact: Mapped[bool]
    #: Where the bags are kept at the site, e.g. "Haematology LN2 tank 2, rack B".
    storage: Mapped[str] = mapped_column(String(255))
    #: Codes of the bags scanned at receipt, and of packed bags that were not there.
    scanned_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    missing_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    comment: Mapped[str] = mapped_column(Text, default="")
    #: Empty when accepted; else why the product is quarantined at the site.
    quarantine_reason: Mapped[str] = mapped_column(Text, default="")
    deviation_id: Mapped[int | None] = mapped_column(ForeignKey("deviations.id"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    shipment: Mapped[Shipment] = relationship(back_populates="receipt")
    logger_file: Mapped[Attachment | None] = relationship()
    deviation: Mapped[Deviation | None] = relationship()
    received_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {
            "shipment": self.shipment.number,
            "arrived_at": _time(self.arrived_at),
            "logger_min_c": self.logger_min_c,
            "logger_max_c": self.logger_max_c,
            "logger_file_sha256": self.logger_file.sha256 if self.logger_file else None,
            "shipper_intact": self.shipper_intact,
            "storage": self.storage,
            "scanned": list(self.scanned_codes),
            "missing": list(self.missing_codes),
            "comment": self.comment,
            "quarantine_reason": self.quarantine_reason,
            "received_by": self.received_by_id,
            "received_at": _time(self.received_at),
        }


class ShipmentDecision(AppendOnly, Model):
    """QA's decision on a shipment quarantined at the site: released for use, or rejected."""

    __tablename__ = "shipment_decisions"
    signature_record_type: ClassVar[str] = "shipment_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    #: "release" (the product may be used) or "reject".
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    shipment: Mapped[Shipment] = relationship(back_populates="decisions")
    decided_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {"shipment": self.shipment.number, "decision": self.decision, "reason": self.reason,
                "decided_by": self.decided_by_id, "decided_at": _time(self.decided_at)}


class BedsideCheck(AppendOnly, Model):
    """Two clinicians confirmed at the bedside that the patient is the bag's patient. Only a
    match is kept here; a mismatch is refused and kept as a custody event."""

    __tablename__ = "bedside_checks"
    signature_record_type: ClassVar[str] = "bedside_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    #: "wristband" (the COI scanned) or "identifiers" (patient reference and date of birth typed).
    method: Mapped[str] = mapped_column(String(16))
    #: What was scanned or typed for the patient, and the bag's code as scanned.
    patient_evidence: Mapped[str] = mapped_column(String(128))
    bag_scanned: Mapped[str] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    second_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    container: Mapped[Container] = relationship()
    patient: Mapped[Patient] = relationship()
    first: Mapped[User] = relationship(foreign_keys=[first_id])
    second: Mapped[User] = relationship(foreign_keys=[second_id])

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {"bag": self.container.code, "coi": self.patient.coi, "method": self.method,
                "patient_evidence": self.patient_evidence, "bag_scanned": self.bag_scanned,
                "checked_at": _time(self.checked_at), "first": self.first_id, "second": self.second_id}


class Administration(AppendOnly, Model):
    """One bag thawed and infused, after its bedside check: the times, who administered it, what
    was seen, and whether the thaw-to-infusion limit of the definition was kept. Signed
    "administered"; an exceeded limit opens ``deviation``."""

    __tablename__ = "administrations"
    signature_record_type: ClassVar[str] = "administration"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    bedside_check_id: Mapped[int] = mapped_column(ForeignKey("bedside_checks.id"))
    thaw_start: Mapped[datetime]
    thaw_end: Mapped[datetime]
    infusion_start: Mapped[datetime]
    infusion_end: Mapped[datetime]
    #: The definition's limit from the start of thawing to the end of infusion (None: none set).
    limit_minutes: Mapped[int | None]
    limit_exceeded: Mapped[bool] = mapped_column(default=False)
    reactions: Mapped[str] = mapped_column(Text, default="")
    deviation_id: Mapped[int | None] = mapped_column(ForeignKey("deviations.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    administered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    container: Mapped[Container] = relationship()
    patient: Mapped[Patient] = relationship()
    bedside_check: Mapped[BedsideCheck] = relationship()
    deviation: Mapped[Deviation | None] = relationship()
    administered_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {"bag": self.container.code, "coi": self.patient.coi, "bedside_check": self.bedside_check_id,
                "thaw_start": _time(self.thaw_start), "thaw_end": _time(self.thaw_end),
                "infusion_start": _time(self.infusion_start), "infusion_end": _time(self.infusion_end),
                "limit_minutes": self.limit_minutes, "limit_exceeded": self.limit_exceeded,
                "reactions": self.reactions, "administered_by": self.administered_by_id,
                "recorded_at": _time(self.recorded_at)}


class BagDisposal(AppendOnly, Model):
    """A bag that will not be infused: returned, destroyed or kept unused; why, when, who and
    the witness. Its custody trail ends here. Signed "performed" by the recorder and
    "witnessed" by the witness."""

    __tablename__ = "bag_disposals"
    signature_record_type: ClassVar[str] = "bag_disposal"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # one of DISPOSAL_OUTCOMES
    reason: Mapped[str] = mapped_column(Text)
    happened_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    witness_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    container: Mapped[Container] = relationship()
    recorded_by: Mapped[User] = relationship(foreign_keys=[recorded_by_id])
    witness: Mapped[User] = relationship(foreign_keys=[witness_id])

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {"bag": self.container.code, "outcome": self.outcome, "reason": self.reason,
                "happened_at": _time(self.happened_at), "recorded_by": self.recorded_by_id,
                "witness": self.witness_id, "recorded_at": _time(self.recorded_at)}


class SiteNotice(Audited, Model):
    """A release result that failed after the product left the lab, for the treating site: it
    stays on the site's and QA's dashboards until a clinician of the site acknowledges it
    (signed "acknowledged"; the acknowledgement is set once)."""

    __tablename__ = "site_notices"
    signature_record_type: ClassVar[str] = "site_notice"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("qc_results.id"))
    #: What failed, in words: the test, the result, the specification, when it was recorded.
    what: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship()
    site: Mapped[Site] = relationship()
    result: Mapped[QcResult] = relationship()
    acknowledged_by: Mapped[User | None] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

    def signed_content(self) -> dict[str, Any]:
        return {"batch": self.batch.batch_number, "site": self.site.code, "result": self.result_id,
                "what": self.what, "created_at": _time(self.created_at),
                "acknowledged_by": self.acknowledged_by_id, "acknowledged_at": _time(self.acknowledged_at)}

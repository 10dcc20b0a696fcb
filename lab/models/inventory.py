"""Material items and the lots received of them: quarantine, incoming QC, QA's signed
decisions, what each step used, and recalls (21 CFR 211.80-211.89, 211.184; DOMAIN §6)."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.attachments import Attachment
    from lab.models.batches import Batch, StepEntry
    from lab.models.users import User

#: A lot is quarantined on receipt until QA releases or rejects it; a released lot can be recalled.
LOT_STATUSES = ("quarantined", "released", "rejected", "recalled")
#: QA's signed decisions on a lot and the signature meaning of each.
LOT_DECISIONS = {"released": "released for use", "rejected": "rejected", "recalled": "recalled"}


class MaterialItem(Audited, Model):
    """A catalogue entry: one reagent, consumable or vector the lab buys, kept by QA or a supervisor."""

    __tablename__ = "material_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    #: Material kind, matching ``material`` in the process definition (e.g. ``transact``).
    material: Mapped[str] = mapped_column(String(64), index=True)
    supplier: Mapped[str] = mapped_column(String(128))
    catalogue_number: Mapped[str] = mapped_column(String(64))
    storage: Mapped[str] = mapped_column(String(128))
    #: What lots of it are counted in (mL, vials, sets): a step's amount must be in this unit.
    unit: Mapped[str] = mapped_column(String(16))
    #: Whether QC must record an incoming check before QA may release a lot.
    needs_qc: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    lots: Mapped[list[MaterialLot]] = relationship(back_populates="item", order_by="MaterialLot.id")


class MaterialLot(Audited, Model):
    """A received lot of an item, usable at a step only when released, in date, not recalled and
    not used up. ``balance`` goes down with each use (LotConsumption)."""

    __tablename__ = "material_lots"
    __table_args__ = (UniqueConstraint("item_id", "lot_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What is scanned or typed at the bench: the lot's label code (``L-<FIN>-<yy>-<serial>-<K>``).
    code: Mapped[str] = mapped_column(String(64), unique=True)
    #: Material kind, matching ``material`` in the process definition (e.g. ``transact``).
    material: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    #: The supplier's lot number.
    lot_number: Mapped[str] = mapped_column(String(64))
    supplier: Mapped[str] = mapped_column(String(128))
    expiry_date: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="quarantined")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("material_items.id"), index=True)
    quantity_received: Mapped[float | None] = mapped_column(Float)
    balance: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(16))
    container_count: Mapped[int | None]
    received_on: Mapped[date | None]
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    #: Functional titer (TU/mL) from the certificate of a vector lot; steps take it from here.
    titer: Mapped[float | None] = mapped_column(Float)

    item: Mapped[MaterialItem | None] = relationship(back_populates="lots")
    received_by: Mapped[User | None] = relationship()
    certificate: Mapped[Attachment | None] = relationship()
    checks: Mapped[list[LotCheck]] = relationship(back_populates="lot", order_by="LotCheck.id")
    decisions: Mapped[list[LotDecision]] = relationship(back_populates="lot", order_by="LotDecision.id")
    uses: Mapped[list[LotConsumption]] = relationship(back_populates="lot", order_by="LotConsumption.id")


class LotCheck(AppendOnly, Model):
    """QC's incoming check of a lot: identity against the certificate, condition of the containers."""

    __tablename__ = "lot_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("material_lots.id"), index=True)
    identity_ok: Mapped[bool]
    condition_ok: Mapped[bool]
    certificate_ok: Mapped[bool]
    #: "pass" when every check is met, else "fail".
    result: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    lot: Mapped[MaterialLot] = relationship(back_populates="checks")
    checked_by: Mapped[User] = relationship()


class LotDecision(AppendOnly, Model):
    """QA's signed decision on a lot: released for use, rejected, or recalled.

    A SignedRecord (lab.services.signatures): lab.services.materials registers it, since a
    model cannot import the services."""

    __tablename__ = "lot_decisions"
    signature_record_type: ClassVar[str] = "lot_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("material_lots.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    lot: Mapped[MaterialLot] = relationship(back_populates="decisions")
    decided_by: Mapped[User] = relationship()

    @property
    def meaning(self) -> str:
        return LOT_DECISIONS[self.decision]

    def signed_content(self) -> dict[str, Any]:
        lot = self.lot
        return {
            "lot": lot.code,
            "item": lot.name,
            "material": lot.material,
            "supplier": lot.supplier,
            "lot_number": lot.lot_number,
            "expiry_date": lot.expiry_date.isoformat(),
            "quantity_received": lot.quantity_received,
            "unit": lot.unit,
            "certificate_sha256": lot.certificate.sha256 if lot.certificate else None,
            "titer": lot.titer,
            "decision": self.decision,
            "reason": self.reason,
            "decided_at": self.decided_at.isoformat(),
        }


class LotConsumption(AppendOnly, Model):
    """An amount of a lot used by one step entry of a batch (the lot's use record, for where-used)."""

    __tablename__ = "lot_consumptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("material_lots.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("step_entries.id"), index=True)
    field_key: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    balance_after: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    lot: Mapped[MaterialLot] = relationship(back_populates="uses")
    batch: Mapped[Batch] = relationship()
    entry: Mapped[StepEntry] = relationship()
    recorded_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

"""Material lots that steps record by their scanned codes."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lab.extensions import Model
from lab.models.base import Audited, utcnow

LOT_STATUSES = ("released", "quarantined", "rejected")


class MaterialLot(Audited, Model):
    """A received lot of a reagent, consumable or vector, usable only when released and in date."""

    __tablename__ = "material_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What is scanned or typed at the bench (the lot's label barcode).
    code: Mapped[str] = mapped_column(String(64), unique=True)
    #: Material kind, matching ``material`` in the process definition (e.g. ``transact``).
    material: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    lot_number: Mapped[str] = mapped_column(String(64))
    supplier: Mapped[str] = mapped_column(String(128))
    expiry_date: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="released")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

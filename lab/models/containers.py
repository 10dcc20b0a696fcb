"""Physical containers (bags, tubes, samples), their labels as printed, and the custody
trail: every scan at a hand-off, match or mismatch."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.batches import Batch, StepEntry
    from lab.models.users import User


class Container(Audited, Model):
    """A bag or tube of one batch. Its code is printed on its label and scanned at hand-offs."""

    __tablename__ = "containers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    #: Container kind of the process definition (apheresis_bag, product_bag, qc_sample, ...).
    kind: Mapped[str] = mapped_column(String(32))
    #: Bag n of m among the containers of this kind made by one entry.
    number: Mapped[int] = mapped_column(default=1)
    count: Mapped[int] = mapped_column(default=1)
    volume_ml: Mapped[float | None]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("containers.id"))
    status: Mapped[str] = mapped_column(String(16), default="in use", index=True)  # the bags at a site are few
    #: Where it is now, e.g. "LN2-01 / rack R3 / box B12 / position A5".
    location: Mapped[str | None] = mapped_column(String(255))
    created_entry_id: Mapped[int] = mapped_column(ForeignKey("step_entries.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: When a correction changed what the container was computed from (number of bags, volume
    #: per bag); the container itself stays as it was filled, its label is outdated until printed again.
    label_outdated_at: Mapped[datetime | None]
    #: The deviation that names it and the correction, e.g. "DEV-2026-0007: CAR+ T cells per mL
    #: (Formulation and fill) corrected from ... to ...": offered as the reason for the reprint.
    label_outdated_reason: Mapped[str | None] = mapped_column(String(255))

    batch: Mapped[Batch] = relationship(back_populates="containers")
    parent: Mapped[Container | None] = relationship(remote_side=[id])
    created_entry: Mapped[StepEntry] = relationship()
    created_by: Mapped[User] = relationship()
    prints: Mapped[list[LabelPrint]] = relationship(back_populates="container", order_by="LabelPrint.id")

    @property
    def label_outdated(self) -> bool:
        """A correction changed what this container was made from and its label has not been
        printed since: the flag clears itself with the next print, which is on record."""
        since = self.label_outdated_at
        return since is not None and not any(p.printed_at >= since for p in self.prints)

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class LabelPrint(AppendOnly, Model):
    """One printing of a container's label; a reprint says why."""

    __tablename__ = "label_prints"

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    printed_at: Mapped[datetime] = mapped_column(default=utcnow)
    printed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    is_reprint: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    #: pdf (one label), sheet (all labels of the batch) or zpl (Zebra printer).
    output: Mapped[str] = mapped_column(String(8))

    container: Mapped[Container] = relationship(back_populates="prints")
    printed_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class CustodyEvent(AppendOnly, Model):
    """A container scanned at a hand-off: who, when, where from and to, and whether it matched.

    A mismatch is recorded even though the hand-off itself is refused.
    """

    __tablename__ = "custody_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The batch at whose hand-off the scan happened.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    container_id: Mapped[int | None] = mapped_column(ForeignKey("containers.id"), index=True)
    scanned_code: Mapped[str] = mapped_column(String(64))
    step_key: Mapped[str | None] = mapped_column(String(64))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    event: Mapped[str] = mapped_column(String(64))
    from_location: Mapped[str | None] = mapped_column(String(255))
    to_location: Mapped[str | None] = mapped_column(String(255))
    matched: Mapped[bool]
    message: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    container: Mapped[Container | None] = relationship()
    actor: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

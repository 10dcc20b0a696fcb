"""Deviations and electronic signatures."""

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


class Deviation(Audited, Model):
    """A departure from the process or its limits, opened automatically or by hand."""

    __tablename__ = "deviations"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    field_key: Mapped[str | None] = mapped_column(String(64))
    #: What opened it: ``limit`` (a value out of limit), ``window`` (a step out of its time window).
    source: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship(back_populates="deviations")
    entry: Mapped[StepEntry | None] = relationship()
    opened_by: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class Signature(AppendOnly, Model):
    """An electronic signature (21 CFR 11.50, 11.70): who, printed name, meaning, when, and
    the SHA-256 of exactly what was signed, so a later change to the record shows."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[int]
    signer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    printed_name: Mapped[str] = mapped_column(String(128))
    meaning: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_sha256: Mapped[str] = mapped_column(String(64))

    signer: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

"""Deviations and their investigation, electronic signatures, and failed signing attempts."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.batches import Batch, StepEntry
    from lab.models.release import QcResult
    from lab.models.users import User

CLASSIFICATIONS = ("minor", "major", "critical")
#: The content a new signature's hash is over: 2 is every field of the record a reader relies on.
SIGNATURE_HASH_SCHEME = 2


class Deviation(Audited, Model):
    """A departure from the process, its limits or a specification, opened automatically or by hand.

    It is classified and investigated (root cause, impact, corrective and preventive
    action) while open; QA closes it with a signature, after which it never changes.
    """

    __tablename__ = "deviations"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    field_key: Mapped[str | None] = mapped_column(String(64))
    #: What opened it: ``limit`` (a value out of limit), ``window`` (a step out of its time window),
    #: ``oos`` (a QC result out of specification), ``custody`` (a scan that did not match),
    #: ``manual`` (opened by hand).
    source: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The QC result that opened it (source ``oos``).
    result_id: Mapped[int | None] = mapped_column(ForeignKey("qc_results.id"))
    #: The instrument's or LIMS's submission whose value opened it, before anyone signed the value.
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    classification: Mapped[str | None] = mapped_column(String(16))  # one of CLASSIFICATIONS
    root_cause: Mapped[str | None] = mapped_column(Text)
    impact: Mapped[str | None] = mapped_column(Text)  # on this batch, its patient and other batches
    corrective_action: Mapped[str | None] = mapped_column(Text)
    preventive_action: Mapped[str | None] = mapped_column(Text)
    investigated_at: Mapped[datetime | None]
    investigated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship(back_populates="deviations")
    entry: Mapped[StepEntry | None] = relationship()
    result: Mapped[QcResult | None] = relationship()
    opened_by: Mapped[User] = relationship(foreign_keys=[opened_by_id])
    investigated_by: Mapped[User | None] = relationship(foreign_keys=[investigated_by_id])
    closed_by: Mapped[User | None] = relationship(foreign_keys=[closed_by_id])

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class Signature(AppendOnly, Model):
    """An electronic signature (21 CFR 11.50, 11.70): who, printed name, meaning, when, and
    the SHA-256 of exactly what was signed, so a later change to the record shows."""

    __tablename__ = "signatures"
    #: A record's signatures, found by what they sign (a shipment, a receipt, an entry, ...).
    __table_args__ = (Index("ix_signatures_record", "record_type", "record_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[int]
    signer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    printed_name: Mapped[str] = mapped_column(String(128))
    meaning: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_sha256: Mapped[str] = mapped_column(String(64))
    #: Which content ``content_sha256`` is over (lab.services.signatures.digest): signatures made
    #: before it was recorded (migration 0010) are 1, and are checked with the content they were made on.
    hash_scheme: Mapped[int] = mapped_column(SmallInteger, default=SIGNATURE_HASH_SCHEME, server_default="1")

    signer: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class SigningFailure(AppendOnly, Model):
    """A refused signing attempt (wrong password, or a username not the signer's): 21 CFR
    11.300(d). It is kept although the action it was meant to sign was not done."""

    __tablename__ = "signing_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    meaning: Mapped[str] = mapped_column(String(32))
    #: What was to be signed, in words ("Apheresis receipt of batch ...").
    subject: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(64))

    user: Mapped[User] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

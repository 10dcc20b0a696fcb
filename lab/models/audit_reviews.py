"""Reviews of the audit trail (EU GMP Annex 11 §9): who reviewed which period, what they found,
and the chain head they saw, signed by QA with the meaning "reviewed"."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, utcnow

if TYPE_CHECKING:
    from lab.models.users import User


class AuditReview(AppendOnly, Model):
    """One review of the trail. ``head_entry_id`` and ``head_hash`` are the chain head when the
    review was recorded (the review's own entries come after it): verify-audit checks that the
    chain still passes through it, so rewriting the whole chain afterwards is detected.

    A SignedRecord (lab.services.signatures): lab.services.audit_review registers it, since a
    model cannot import the services."""

    __tablename__ = "audit_reviews"
    signature_record_type: ClassVar[str] = "audit_review"

    id: Mapped[int] = mapped_column(primary_key=True)
    period_from: Mapped[date]
    period_to: Mapped[date]
    findings: Mapped[str] = mapped_column(Text)
    reviewed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reviewed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The newest entry of the trail when the review was recorded (0: the trail was empty).
    head_entry_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    head_hash: Mapped[str] = mapped_column(String(64))

    reviewed_by: Mapped[User] = relationship()

    @property
    def batch_id(self) -> int | None:
        """A review covers the whole trail, not one batch: its signature names no batch."""
        return None

    def signed_content(self) -> dict[str, Any]:
        """What the reviewer attests to: the period, the findings, who and when, and the head seen."""
        return {
            "period_from": self.period_from.isoformat(),
            "period_to": self.period_to.isoformat(),
            "findings": self.findings,
            "reviewed_by": self.reviewed_by.username,
            "reviewed_at": self.reviewed_at.isoformat(),
            "head_entry_id": self.head_entry_id,
            "head_hash": self.head_hash,
        }

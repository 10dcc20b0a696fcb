"""QC release results and QA decisions (dispositions) of a batch. Both are append-only:
a result is corrected by a new one that supersedes it, a decision by a later decision."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Float, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, utcnow

if TYPE_CHECKING:
    from lab.models.batches import Batch
    from lab.models.users import User


class QcResult(AppendOnly, Model):
    """One reported result of a release test, judged on entry against its specification.

    A test's current result is its latest one not superseded: a final result follows an
    interim one ("no growth to date", then "no growth"); a correction supersedes the
    result it corrects and gives a reason. Neither overwrites anything.
    """

    __tablename__ = "qc_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    test_key: Mapped[str] = mapped_column(String(64))
    #: Canonical text as the engine judged it: "91.5", "< 0.5", "no growth to date".
    text: Mapped[str] = mapped_column(String(255))
    number: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(8))  # pass, fail or interim
    is_final: Mapped[bool]
    #: The specification it was judged against, in words, and the verdict in words.
    spec_text: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    #: Recorded after the batch was released (a late result).
    is_late: Mapped[bool] = mapped_column(default=False)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("qc_results.id"), unique=True)
    #: Mandatory for a correction; empty for a reported result.
    reason: Mapped[str | None] = mapped_column(Text)

    batch: Mapped[Batch] = relationship(back_populates="results")
    recorded_by: Mapped[User] = relationship()

    @property
    def is_correction(self) -> bool:
        return self.supersedes_id is not None

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class Disposition(AppendOnly, Model):
    """A QA decision on a batch: release, exceptional release, reject, hold or lifting it.

    ``record_sha256`` is the digest of the batch record (entries and results) the decision
    was taken on; the signature covers it, so a later change to that record shows.
    An exceptional release of an out-of-specification product records the treating
    physician's request, the risk assessment and the physician's confirmation.
    """

    __tablename__ = "dispositions"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    decision: Mapped[str] = mapped_column(String(32))  # the key of the definition's decision
    title: Mapped[str] = mapped_column(String(128))
    state_before: Mapped[str] = mapped_column(String(32))
    state_after: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    physician_name: Mapped[str | None] = mapped_column(String(128))
    physician_request: Mapped[str | None] = mapped_column(Text)
    risk_assessment: Mapped[str | None] = mapped_column(Text)
    physician_confirmation: Mapped[str | None] = mapped_column(Text)
    record_sha256: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship(back_populates="dispositions")
    decided_by: Mapped[User] = relationship()

    @property
    def is_exceptional(self) -> bool:
        return self.physician_name is not None

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

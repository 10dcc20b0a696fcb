"""Printouts and downloads: every batch record issued (so a printed copy can be verified)
and every download of a record, certificate or audit export. Both are append-only."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, utcnow

if TYPE_CHECKING:
    from lab.models.batches import Batch
    from lab.models.users import User


class IssuedRecord(AppendOnly, Model):
    """One version of a batch's executed record, as first issued (downloaded or exported).

    ``digest`` is the SHA-256 of ``canonical_json`` (labels.digest); the same content issued
    again keeps this row, and each issue is a ``Download``. The JSON itself is left out of
    the audit trail (its digest is in it): copying it there would double every record.
    """

    __tablename__ = "issued_records"
    __audit_ignore__ = frozenset({"canonical_json"})

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    canonical_json: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: None: issued by the command line (a bulk export).
    issued_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    batch: Mapped[Batch] = relationship()
    issued_to: Mapped[User | None] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class Download(AppendOnly, Model):
    """Someone (or the command line) took a copy of a record out of CellTrail.

    ``kind`` is one of ``lab.services.downloads.KINDS``; ``digest`` the SHA-256 of what was
    downloaded where it has one (a batch record's digest, an export's manifest).
    """

    __tablename__ = "downloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    digest: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    downloaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: None: the command line.
    downloaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)

    downloaded_by: Mapped[User | None] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

"""Process versions under change control (EU GMP Part I ch. 4, Annex 11 §10, DOMAIN §6): a
definition file is stored as a draft, approved by QA with a signature and an effective date,
and from that date new batches of its product start under it.

A ProcessVersion points to the exact text (ProcessDefinitionRecord) a batch pins; its status
(draft, approved, effective, retired) follows from the approval and the effective dates of
the other versions of the same key (lab.services.processes.status_of), so it is never stored
twice. A SignedRecord (lab.services.signatures): lab.services.processes registers it, since a
model cannot import the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import Audited, utcnow

if TYPE_CHECKING:
    from lab.models.batches import ProcessDefinitionRecord
    from lab.models.users import User

#: Where a version came from: a file shipped with CellTrail, one imported with
#: ``flask --app lab import-process``, or one uploaded on the processes page.
ORIGINS = ("shipped", "imported", "uploaded")


class ProcessVersion(Audited, Model):
    """One version of one process definition, and its change-control history."""

    __tablename__ = "process_versions"
    __table_args__ = (UniqueConstraint("key", "version"),)
    signature_record_type: ClassVar[str] = "process_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    title: Mapped[str] = mapped_column(String(255))
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"), unique=True)
    origin: Mapped[str] = mapped_column(String(16))
    #: Why the version was written (what the change is for), as its author said.
    change_reason: Mapped[str] = mapped_column(Text, default="")
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: None for a file shipped with CellTrail: nobody in this lab wrote it.
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_at: Mapped[datetime | None]
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: From this moment new batches use this version: midnight (lab time) of the effective date, or
    #: the approval itself when the version takes effect on the day it is approved.
    effective_from: Mapped[datetime | None]

    definition: Mapped[ProcessDefinitionRecord] = relationship()
    uploaded_by: Mapped[User | None] = relationship(foreign_keys=[uploaded_by_id])
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id])

    @property
    def batch_id(self) -> int | None:
        """A process version belongs to no batch: its signature names none."""
        return None

    def signed_content(self) -> dict[str, Any]:
        """What QA attests to: this exact text (its SHA-256) of this key and version, effective then."""
        return {
            "key": self.key,
            "version": self.version,
            "sha256": self.definition.sha256,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "approved_by": self.approved_by.username if self.approved_by else None,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
        }

"""Files kept with a record: a supplier's certificate of analysis, a calibration certificate."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, utcnow

if TYPE_CHECKING:
    from lab.models.users import User


class Attachment(AppendOnly, Model):
    """An uploaded file, stored in the database (so a backup holds it) with its SHA-256.

    The trail records its name, type, size and hash, not its bytes: the hash is what a
    reader checks a downloaded copy against. Never changed: a new certificate is a new file.
    """

    __tablename__ = "attachments"
    __audit_ignore__ = frozenset({"content"})

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The name the file was uploaded with, for the download (never used as a path).
    filename: Mapped[str] = mapped_column(String(255))
    #: Decided from the file's first bytes, not from what the browser said.
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    uploaded_by: Mapped[User] = relationship()

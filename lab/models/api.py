"""Personal API tokens, and what instruments and other systems submit through them (issue 16)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import Audited, utcnow

if TYPE_CHECKING:
    from lab.models.attachments import Attachment
    from lab.models.batches import Batch, StepEntry
    from lab.models.release import QcResult
    from lab.models.users import User

#: What a token lets its holder do: read what its user may read, or also submit values.
TOKEN_SCOPES = ("read", "write")


class ApiToken(Audited, Model):
    """A user's personal token for /api/v1. Only the SHA-256 of the secret is kept (the
    secret is shown once, when the token is made); ``prefix`` names it in lists.

    A token acts as its user with that user's role, never more; revoked or expired it
    answers nothing. Requests made with it are attributed to the user and the token's
    name in the audit trail (``AuditEvent.via``).
    """

    __tablename__ = "api_tokens"
    __audit_redact__ = frozenset({"secret_hash"})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    #: The first characters of the secret, shown in lists so a holder can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])

    @property
    def label(self) -> str:
        """How the trail names the token: its name and prefix."""
        return f"API token \u201c{self.name}\u201d ({self.prefix}\u2026)"


#: A submission's life: waiting for a person to sign it, recorded (as an entry or result), or withdrawn.
SUBMISSION_STATUSES = ("pending", "recorded", "withdrawn")


class Submission(Audited, Model):
    """Values sent by an instrument or another system (through the API or a counter file)
    for one step entry or one QC result of a batch, waiting for a person to sign them.

    An API call never signs (21 CFR 11.50, 11.200): the values become a record only when a
    person who may record them opens the submission in the browser, checks the values and
    signs. ``values`` holds the field texts as received (the original record); an uploaded
    counter file is kept as ``attachment`` with its SHA-256.
    """

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    #: "step" (an entry of ``key``, a step of the definition) or "result" (release test ``key``).
    kind: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(64))
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    #: From a counter file: the sample ID and measurement time it names.
    sample_id: Mapped[str | None] = mapped_column(String(128))
    measured_at: Mapped[datetime | None]
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The token it came through; None for a file uploaded in the browser.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    result_id: Mapped[int | None] = mapped_column(ForeignKey("qc_results.id"))
    closed_at: Mapped[datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: Why it was withdrawn.
    closed_reason: Mapped[str | None] = mapped_column(Text)

    batch: Mapped[Batch] = relationship()
    attachment: Mapped[Attachment | None] = relationship()
    submitted_by: Mapped[User] = relationship(foreign_keys=[submitted_by_id])
    closed_by: Mapped[User | None] = relationship(foreign_keys=[closed_by_id])
    token: Mapped[ApiToken | None] = relationship()
    entry: Mapped[StepEntry | None] = relationship()
    result: Mapped[QcResult | None] = relationship()

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id

"""Forms accepted once: the one-time token of every form that changed something."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from lab.extensions import Model
from lab.models.base import utcnow


class SentForm(Model):
    """The token of a form whose request was saved, so that the same form sent again (a
    double click, the back button, a reload, a second tab of the same page) is refused
    instead of recorded twice (lab/sent_forms.py). Saved in the transaction of the write it
    allowed. Not audited: the record the form made is."""

    __tablename__ = "sent_forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

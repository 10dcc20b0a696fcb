"""Equipment that steps record by its scanned code."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lab.extensions import Model
from lab.models.base import Audited, utcnow


class Equipment(Audited, Model):
    __tablename__ = "equipment"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    #: Equipment kind, matching ``equipment`` in the process definition (e.g. ``incubator``).
    kind: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    #: Last day the instrument may be used before it must be calibrated again.
    calibration_due: Mapped[date | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

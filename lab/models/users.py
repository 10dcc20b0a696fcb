"""People who use CellTrail. Users are deactivated, never deleted."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from lab.extensions import Model
from lab.models.base import Audited, utcnow

ROLE_TITLES = {
    "technician": "Lab technician",
    "supervisor": "Supervisor",
    "qc_analyst": "QC analyst",
    "qa_officer": "QA officer",
    "auditor": "Auditor",
    "admin": "Administrator",
}
#: Roles a user may act in besides their own: a supervisor can do a technician's work.
ACTS_AS = {"supervisor": frozenset({"technician"})}


class User(UserMixin, Audited, Model):
    __tablename__ = "users"
    __audit_redact__ = frozenset({"password_hash"})

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    #: The printed name shown with every signature (21 CFR 11.50).
    full_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    #: Consecutive refused signing attempts; reset by a valid signature or an unlock.
    failed_signatures: Mapped[int] = mapped_column(default=0, server_default="0")
    #: Set when too many signing attempts failed: no sign-in, no signature until an admin unlocks.
    locked_at: Mapped[datetime | None]

    @property
    def is_active(self) -> bool:  # Flask-Login refuses to log in inactive users
        return self.active and self.locked_at is None

    @property
    def role_title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return bool(password) and check_password_hash(self.password_hash, password)

    def can_act_as(self, *roles: str) -> bool:
        """True when this active user holds one of ``roles`` (or acts for one)."""
        mine = {self.role} | ACTS_AS.get(self.role, frozenset())
        return self.is_active and bool(mine.intersection(roles))

    def __repr__(self) -> str:
        return f"<User {self.username} ({self.role})>"

"""People who use CellTrail. Users are deactivated, never deleted."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, fixed_once_stored, utcnow

ROLE_TITLES = {
    "technician": "Lab technician",
    "supervisor": "Supervisor",
    "qc_analyst": "QC analyst",
    "qa_officer": "QA officer",
    "auditor": "Auditor",
    "admin": "Administrator",
    "clinician": "Clinician",
}
#: Roles a user may act in besides their own: a supervisor can do a technician's work.
ACTS_AS = {"supervisor": frozenset({"technician"})}


class User(UserMixin, Audited, Model):
    __tablename__ = "users"
    __audit_redact__ = frozenset({"password_hash"})
    #: Bookkeeping: a password change is already recorded by ``password_hash``, sign-outs need no entry.
    __audit_ignore__ = frozenset({"session_generation", "previous_password_hashes"})

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
    #: Set when too many signing or sign-in attempts failed: no sign-in, no signature until an admin unlocks
    #: (or, for a sign-in lockout, until ``locked_until``).
    locked_at: Mapped[datetime | None]
    #: Consecutive failed sign-ins; reset by a successful sign-in and when they lock the account.
    failed_sign_ins: Mapped[int] = mapped_column(default=0, server_default="0")
    #: When a sign-in lockout ends by itself; None: only an administrator unlocks.
    locked_until: Mapped[datetime | None]
    #: Set when an administrator chose the password (creation, reset): its owner must replace it first.
    password_must_change: Mapped[bool] = mapped_column(default=False, server_default=false())
    password_changed_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    #: Hashes of earlier passwords, newest first, that a new password may not repeat.
    previous_password_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Stored in each session at sign-in; raising it ends every session signed in before.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    #: When an administrator last ended this user's sessions (kept in the audit trail).
    sessions_ended_at: Mapped[datetime | None]
    #: The treatment site a clinician belongs to (and sees alone); None for the lab's own staff.
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses to log in inactive users
        return self.active and not self.is_locked

    @property
    def is_locked(self) -> bool:
        """Locked and the lockout has not run out (only a sign-in lockout does)."""
        return self.locked_at is not None and (self.locked_until is None or self.locked_until > utcnow())

    @property
    def role_title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return bool(password) and check_password_hash(self.password_hash, password)

    def can_act_as(self, *roles: str) -> bool:
        """True when this active user holds one of ``roles`` (or acts for one)."""
        return bool(self.roles.intersection(roles))

    @property
    def roles(self) -> frozenset[str]:
        """The roles this user may act as now: none while inactive."""
        return ({self.role} | ACTS_AS.get(self.role, frozenset())) if self.is_active else frozenset()

    def __repr__(self) -> str:
        return f"<User {self.username} ({self.role})>"


#: Records, signatures and the pages kept per batch mark show them as they were.
fixed_once_stored("A user's username and full name never change once the account is made.",
                  User.username, User.full_name)


class SignInAttempt(AppendOnly, Model):
    """A refused sign-in (21 CFR 11.300(d)): who was tried, from where, and why it was refused.
    ``username`` is as typed (made printable, cut to 64 characters); ``user_id`` names the
    account when one has that username."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_address_attempted_at", "address", "attempted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(String(64))

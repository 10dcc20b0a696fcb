"""Accounts: creation, role changes, deactivation and sign-in checks."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.models import User, utcnow
from lab.models.users import ROLE_TITLES
from lab.permissions import require

USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,63}")
MIN_PASSWORD_LENGTH = 10


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput("Password too short.",
                           {"password": f"Use at least {MIN_PASSWORD_LENGTH} characters."})
    if len(password) > 256:
        raise InvalidInput("Password too long.", {"password": "Use at most 256 characters."})


def create_user(username: str, full_name: str, role: str, password: str, *, actor: User | None) -> User:
    """Add an account (``actor`` None: the command line). Raises InvalidInput naming the field."""
    if actor is not None:
        require(actor, "manage_users", "manage user accounts")
    username = username.strip().lower()
    full_name = " ".join(full_name.split())
    errors: dict[str, str] = {}
    if not USERNAME_RE.fullmatch(username):
        errors["username"] = ("Use 2 to 64 lower-case letters, digits, dots, hyphens or underscores, "
                              "starting with a letter.")
    elif db.session.scalar(select(User.id).where(func.lower(User.username) == username)) is not None:
        errors["username"] = f"The username {username!r} is taken (users are never deleted)."
    if not 2 <= len(full_name) <= 128:
        errors["full_name"] = "Enter the full name printed with this person's signatures (2 to 128 characters)."
    if role not in ROLE_TITLES:
        errors["role"] = f"Choose one of: {', '.join(ROLE_TITLES)}."
    if errors:
        raise InvalidInput("The account was not created.", errors)
    check_new_password(password)
    user = User(username=username, full_name=full_name, role=role)
    user.set_password(password)
    with audit.action("user.create", actor=actor):
        db.session.add(user)
    return user


def update_user(user: User, *, role: str, active: bool, actor: User, reason: str) -> None:
    """Change a user's role or active flag. Admins cannot lock themselves out."""
    require(actor, "manage_users", "manage user accounts")
    if role not in ROLE_TITLES:
        raise InvalidInput("Unknown role.", {"role": f"Choose one of: {', '.join(ROLE_TITLES)}."})
    if user.id == actor.id and (role != user.role or not active):
        raise NotAllowed("You cannot change your own role or deactivate yourself; ask another administrator.")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give a reason.", {"reason": "Say why the account changes (kept in the audit trail)."})
    if len(reason) > 500:
        raise InvalidInput("Reason too long.", {"reason": "Use at most 500 characters."})
    if role == user.role and active == user.active:
        raise InvalidInput("Nothing to change.", {"role": "The role and status are already as given."})
    with audit.action("user.update", actor=actor, reason=reason):
        user.role = role
        user.active = active


def unlock_user(user: User, *, actor: User, reason: str) -> None:
    """Unlock an account locked by refused signing attempts and reset their count.

    Raises NotAllowed (not an admin) or InvalidInput (not locked, or no reason).
    """
    require(actor, "manage_users", "manage user accounts")
    if user.locked_at is None:
        raise InvalidInput("The account is not locked.", {"reason": f"{user.username} is not locked."})
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give a reason.", {"reason": "Say why the account may sign again (kept in the audit "
                                                         "trail), e.g. the owner confirmed the attempts were theirs."})
    if len(reason) > 500:
        raise InvalidInput("Reason too long.", {"reason": "Use at most 500 characters."})
    with audit.action("user.unlock", actor=actor, reason=reason):
        user.locked_at = None
        user.failed_signatures = 0


def authenticate(username: str, password: str) -> User | None:
    """The active user with these credentials, recording the sign-in; else None."""
    user = db.session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or not user.is_active or not user.check_password(password):
        return None
    with audit.action("user.login", actor=user):
        user.last_login_at = utcnow()
    return user

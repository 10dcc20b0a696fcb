"""Accounts: creation, role changes, deactivation and sign-in checks."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed, SignatureError, SigningAttempt
from lab.extensions import db
from lab.models import Site, User, utcnow
from lab.models.users import ROLE_TITLES
from lab.passwords import expired, history_length, malformed, policy_error
from lab.permissions import require

USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,63}")
#: ``update_user``'s site when the caller leaves it as it is.
KEEP_SITE = object()


def _site_error(role: str, site_id: int | None, *, kept: bool = False) -> str:
    """Why ``site_id`` cannot be the site of a user with ``role`` ("" when it can): a clinician
    belongs to one active site (``kept``: their current one, which may since be deactivated);
    the lab's own staff belong to none."""
    if role != "clinician":
        if site_id is None:
            return ""
        return (f"Only a clinician belongs to a treatment site: leave the site empty for "
                f"{ROLE_TITLES.get(role, role).lower()}s.")
    if site_id is None:
        return "A clinician belongs to one treatment site and sees only its patients: choose the site."
    site = db.session.get(Site, site_id)
    if site is None:
        return "Choose one of the registered treatment sites."
    if not site.active and not kept:
        return f"Site {site.code} is deactivated: choose an active site."
    return ""


def _check_password(password: str, username: str, *, field: str = "password",
                    previous_hashes: list[str] | None = None) -> None:
    """Raise InvalidInput on ``field`` when ``password`` breaks the policy (lab.passwords)."""
    problem = policy_error(password, username=username, previous_hashes=previous_hashes or [])
    if problem:
        raise InvalidInput("The password was not accepted.", {field: problem})


def _set_password(user: User, password: str, *, temporary: bool) -> None:
    """Store ``password``, keep the hash it replaces for the history, and end earlier sessions."""
    if user.password_hash:
        user.previous_password_hashes = [user.password_hash, *user.previous_password_hashes][:history_length() - 1]
    user.set_password(password)
    user.password_must_change = temporary
    user.password_changed_at = utcnow()
    _bump_generation(user)


def _bump_generation(user: User) -> None:
    """End every session of ``user``: an UPDATE ... SET n = n + 1, so concurrent ends all count."""
    if user.id is not None:
        user.session_generation = User.session_generation + 1  # type: ignore[assignment]


def create_user(username: str, full_name: str, role: str, password: str, *, actor: User | None,
                temporary: bool = True, site_id: int | None = None) -> User:
    """Add an account (``actor`` None: the command line). Raises InvalidInput naming the field.

    The password is ``temporary`` (its owner must replace it at the first sign-in): whoever
    types it here is not its owner. Only the demo lab gives its users their own password."""
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
    elif site_error := _site_error(role, site_id):
        errors["site"] = site_error
    if errors:
        raise InvalidInput("The account was not created.", errors)
    _check_password(password, username)
    user = User(username=username, full_name=full_name, role=role, password_hash="", previous_password_hashes=[],
                site_id=site_id)
    _set_password(user, password, temporary=temporary)
    with audit.action("user.create", actor=actor):
        db.session.add(user)
    return user


def update_user(user: User, *, role: str, active: bool, actor: User, reason: str,
                site_id: int | None | object = KEEP_SITE) -> None:
    """Change a user's role, treatment site or active flag. Admins cannot lock themselves out.
    A clinician keeps one site (an active one when it changes); other roles have none."""
    require(actor, "manage_users", "manage user accounts")
    if role not in ROLE_TITLES:
        raise InvalidInput("Unknown role.", {"role": f"Choose one of: {', '.join(ROLE_TITLES)}."})
    new_site = user.site_id if site_id is KEEP_SITE else site_id
    assert new_site is None or isinstance(new_site, int)
    site_error = _site_error(role, new_site, kept=new_site == user.site_id and role == user.role)
    if site_error:
        raise InvalidInput("The account was not changed.", {"site": site_error})
    if user.id == actor.id and (role != user.role or not active):
        raise NotAllowed("You cannot change your own role or deactivate yourself; ask another administrator.")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give a reason.", {"reason": "Say why the account changes (kept in the audit trail)."})
    if len(reason) > 500:
        raise InvalidInput("Reason too long.", {"reason": "Use at most 500 characters."})
    if role == user.role and active == user.active and new_site == user.site_id:
        raise InvalidInput("Nothing to change.", {"role": "The role and status are already as given."})
    with audit.action("user.update", actor=actor, reason=reason):
        user.role = role
        if new_site != user.site_id:  # read on every request: the next page shows the new site's patients only
            user.site_id = new_site
        if not active:  # a later reactivation must not revive the sessions of before
            _bump_generation(user)
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
        _bump_generation(user)  # the sessions of before the lock stay ended: the owner signs in again


def _reason(reason: str, why: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give a reason.", {"reason": why})
    if len(reason) > 500:
        raise InvalidInput("Reason too long.", {"reason": "Use at most 500 characters."})
    return reason


def reset_password(user: User, password: str, *, actor: User, reason: str) -> None:
    """Give ``user`` a temporary password (they forgot theirs): they must replace it at the next
    sign-in, and every session they had ends. Raises NotAllowed or InvalidInput."""
    require(actor, "manage_users", "manage user accounts")
    if user.id == actor.id:
        raise NotAllowed("Change your own password on your account page; another administrator resets it.")
    _check_password(password, user.username)
    reason = _reason(reason, "Say why the password is reset (kept in the audit trail).")
    with audit.action("user.reset_password", actor=actor, reason=reason):
        _set_password(user, password, temporary=True)


def change_password(user: User, current: str, new: str, confirm: str) -> None:
    """The owner replaces their password: the current one is required, the new one follows the
    policy and differs from the last ones. Every other session of ``user`` ends.

    Raises SignatureError for a wrong current password (the view records the attempt, which
    counts towards the lockout), else InvalidInput naming the field."""
    problem = malformed(current)
    if problem:
        raise InvalidInput("The password was not changed.", {"current_password": problem})
    if not user.check_password(current):  # counted like a refused signature: a stolen session cannot guess on
        raise SignatureError("This is not your current password: nothing was changed.",
                             SigningAttempt(user.id, None, "password change", "Change of own password",
                                            "wrong password"))
    _check_password(new, user.username, field="new_password",
                    previous_hashes=[user.password_hash, *user.previous_password_hashes][:history_length()])
    if new != confirm:
        raise InvalidInput("The password was not changed.", {"confirm": "The two new passwords differ."})
    with audit.action("user.change_password", actor=user):
        _set_password(user, new, temporary=False)
        if user.failed_signatures:
            user.failed_signatures = 0  # the owner re-authenticated, as a valid signature does


def end_sessions(user: User, *, actor: User, reason: str) -> None:
    """An administrator signs ``user`` out everywhere (a lost badge, a shared screen)."""
    require(actor, "manage_users", "manage user accounts")
    reason = _reason(reason, "Say why this person's sessions end (kept in the audit trail).")
    with audit.action("user.end_sessions", actor=actor, reason=reason):
        user.sessions_ended_at = utcnow()
        _bump_generation(user)


def sign_out(user: User) -> None:
    """End every session of ``user``, the one signing out included (no audit entry: bookkeeping)."""
    _bump_generation(user)


def must_change_password(user: User) -> bool:
    """True while ``user`` signs in with a password an administrator chose, or one too old."""
    return user.password_must_change or expired(user.password_changed_at, utcnow())

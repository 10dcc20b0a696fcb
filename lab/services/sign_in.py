"""Sign-in: the credentials checked, every refusal recorded and counted (21 CFR 11.300(d)).

Every sign-in that reaches a password check costs exactly one hash check of the configured
method, whether the username is unknown, the account deactivated or locked, or the password
wrong, and every refusal reads the same: response times and messages do not tell which
usernames exist. A run of failures locks the account (until an administrator unlocks it or
``LOGIN_LOCKOUT_MINUTES`` pass); failures per client address are limited as well.

Counters change under the user's row lock (``locked_user``), so simultaneous attempts on
separate connections all count and the account locks exactly at the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from flask import current_app
from sqlalchemy import func, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from lab import audit
from lab.extensions import db
from lab.models import User, utcnow
from lab.models.users import SignInAttempt

REFUSED = "Unknown username, wrong password, or a deactivated or locked account."


@dataclass(frozen=True)
class SignIn:
    """What became of one sign-in: the user when it succeeded, else what to tell them and the HTTP status."""

    user: User | None
    message: str = ""
    status: int = 200


def locked_user(user_id: int) -> User:
    """``user_id``'s row, locked by this transaction and read afresh.

    A no-op UPDATE takes the row lock on PostgreSQL and the database's write lock on SQLite
    (where SELECT ... FOR UPDATE does nothing), so a concurrent counter update waits for
    this transaction instead of overwriting it.
    """
    db.session.execute(update(User).where(User.id == user_id).values(failed_sign_ins=User.failed_sign_ins)
                       .execution_options(synchronize_session=False))
    user = db.session.get(User, user_id, populate_existing=True)
    assert user is not None
    return user


@cache
def _dummy_hash(method: str) -> str:
    """A hash of the configured method and cost, checked for usernames without an account."""
    return generate_password_hash("no account has this password", method=method)


def _printable(text: str) -> str:
    """``text`` as it may be stored and shown: control characters replaced, at most 64 characters."""
    return "".join(char if char.isprintable() else "?" for char in text)[:64]


def refusal_message() -> str:
    """The one message for every refused sign-in, with the lockout rule it is subject to."""
    after, minutes = current_app.config["LOGIN_LOCKOUT_AFTER"], current_app.config["LOGIN_LOCKOUT_MINUTES"]
    until = f"for {minutes} minutes or until an administrator unlocks it" if minutes else \
        "until an administrator unlocks it"
    return f"{REFUSED} After {after} failed sign-ins in a row an account locks {until}."


def _address_refused(address: str, now: datetime) -> bool:
    window = timedelta(minutes=current_app.config["LOGIN_ADDRESS_WINDOW_MINUTES"])
    recent = db.session.scalar(select(func.count()).select_from(SignInAttempt)
                               .where(SignInAttempt.address == address, SignInAttempt.attempted_at > now - window))
    return (recent or 0) >= current_app.config["LOGIN_ADDRESS_LIMIT"]


def _record(username: str, user: User | None, address: str, reason: str, now: datetime) -> None:
    db.session.add(SignInAttempt(username=username, user_id=user.id if user else None, address=address,
                                 attempted_at=now, reason=reason))


def _count_failure(user: User, now: datetime) -> None:
    """One more failure in a row; the LOGIN_LOCKOUT_AFTER-th locks the account and starts a new run."""
    user.failed_sign_ins += 1
    if user.failed_sign_ins >= current_app.config["LOGIN_LOCKOUT_AFTER"]:
        minutes = current_app.config["LOGIN_LOCKOUT_MINUTES"]
        user.locked_at = now
        user.locked_until = now + timedelta(minutes=minutes) if minutes else None
        user.failed_sign_ins = 0


def _succeed(user: User, now: datetime) -> None:
    with audit.action("user.login", actor=user):
        if user.locked_at is not None:  # a sign-in lockout that ran out
            user.locked_at = user.locked_until = None
        if user.failed_sign_ins:
            user.failed_sign_ins = 0
        user.last_login_at = now


def sign_in(username: str, password: str, address: str) -> SignIn:
    """Check a sign-in from ``address``; the caller commits whatever the outcome.

    Refused: the attempt is recorded (and counted for an existing account) in the audit
    trail; the status is 401, or 429 when this address failed too often lately.
    """
    now = utcnow()
    tried = _printable(username.strip().lower())
    address = _printable(address or "unknown")
    if _address_refused(address, now):
        with audit.action("user.sign_in_refused", actor=None, reason=f"{tried} from {address}"):
            _record(tried, None, address, "too many from this address", now)
        minutes = current_app.config["LOGIN_ADDRESS_WINDOW_MINUTES"]
        return SignIn(None, f"Too many failed sign-ins from your address: try again in {minutes} minutes.", 429)
    found = None
    if tried == username.strip().lower():  # else it held control characters or was too long: no account
        found = db.session.execute(select(User.id, User.password_hash).where(User.username == tried)).first()
    stored = found.password_hash if found else _dummy_hash(current_app.config["PASSWORD_HASH_METHOD"])
    matches = check_password_hash(stored, password)
    user = locked_user(found.id) if found else None
    if user is not None and user.is_active and matches:
        _succeed(user, now)
        return SignIn(user)
    reason = ("unknown username" if user is None else "account deactivated" if not user.active
              else "account locked" if user.is_locked else "wrong password")
    with audit.action("user.sign_in_refused", actor=None, reason=f"{tried} from {address}: {reason}"):
        _record(tried, user, address, reason, now)
        if reason == "wrong password":
            assert user is not None
            _count_failure(user, now)
    return SignIn(None, refusal_message(), 401)

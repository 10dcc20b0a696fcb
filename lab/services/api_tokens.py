"""Personal API tokens: made by their user (or an administrator from the command line), shown
once, kept as a SHA-256, revoked by their user or an administrator.

A token is 32 random bytes: a hash without salt or stretching is enough for a secret nobody
chose, and lets a request find its token with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, LabError, NotAllowed
from lab.extensions import db
from lab.models import ApiToken, User, utcnow
from lab.models.api import TOKEN_SCOPES

#: Every token's secret starts with this, so a leaked one is recognisable (secret scanners, logs).
SECRET_PREFIX = "ct_"
MAX_DAYS = 365
DEFAULT_DAYS = 90
MAX_NAME = 64
#: Tokens one user may hold at once (live ones), so a loop cannot mint them without bound.
MAX_LIVE_TOKENS = 20


class TokenRefused(LabError):
    """No token, or one that is unknown, revoked or expired: 401 with the reason."""

    status = 401


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


#: What a token's list says of it, and what the administrators' list filters on.
TOKEN_STATUSES = ("live", "expired", "revoked")
#: The administrators' list shows at most this many tokens, newest first.
LIST_LIMIT = 500


def status_of(token: ApiToken, *, now: datetime | None = None) -> str:
    """"revoked", "expired" or "live" (one of TOKEN_STATUSES)."""
    if token.revoked_at is not None:
        return "revoked"
    return "live" if token.expires_at > (now or utcnow()) else "expired"


def all_tokens(*, user: User | None = None, status: str | None = None, now: datetime | None = None,
               limit: int = LIST_LIMIT) -> list[ApiToken]:
    """Everyone's tokens (the administrators' list), newest first, of ``user`` and in ``status`` if given."""
    now = now or utcnow()
    query = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc()).limit(limit)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    if status == "revoked":
        query = query.where(ApiToken.revoked_at.is_not(None))
    elif status in ("live", "expired"):
        unexpired = ApiToken.expires_at > now
        query = query.where(ApiToken.revoked_at.is_(None), unexpired if status == "live" else ~unexpired)
    return list(db.session.scalars(query))


def live_tokens(user: User, *, now: datetime | None = None) -> list[ApiToken]:
    now = now or utcnow()
    return [t for t in tokens_of(user) if status_of(t, now=now) == "live"]


def tokens_of(user: User) -> list[ApiToken]:
    """Every token ``user`` ever had, newest first (revoked and expired ones included)."""
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def create_token(user: User, name: str, scope: str, days: int | str, *, actor: User | None,
                 now: datetime | None = None) -> tuple[ApiToken, str]:
    """Make a token for ``user`` (``actor`` is the user, or None for the command line);
    returns it with its secret, which is never stored and cannot be shown again."""
    now = now or utcnow()
    if actor is not None and actor.id != user.id:
        raise NotAllowed("A token is personal: only its own user makes it.")
    errors: dict[str, str] = {}
    name = " ".join(name.split())
    if not name:
        errors["name"] = "Name the token after what will use it (for example “LIMS” or “NC-200 bench 2”)."
    elif len(name) > MAX_NAME:
        errors["name"] = f"Use at most {MAX_NAME} characters."
    if scope not in TOKEN_SCOPES:
        errors["scope"] = "Choose read (reads what you may read) or write (also submits values)."
    try:
        number = int(days)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= MAX_DAYS:
        errors["days"] = f"A token lasts 1 to {MAX_DAYS} days."
    if not user.is_active:
        errors["username"] = f"{user.username} is deactivated."
    if not errors and len(live_tokens(user, now=now)) >= MAX_LIVE_TOKENS:
        errors["name"] = f"{user.username} already holds {MAX_LIVE_TOKENS} live tokens: revoke one first."
    if errors:
        raise InvalidInput("The token was not made: correct the fields marked below.", errors)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, scope=scope, prefix=secret[:10], secret_hash=secret_hash(secret),
                     created_at=now, created_by_id=actor.id if actor else None,
                     expires_at=now + timedelta(days=number))
    with audit.action("api_token.create", actor=actor):
        db.session.add(token)
    return token, secret


def revoke_token(token: ApiToken, *, actor: User | None, reason: str = "", now: datetime | None = None) -> None:
    """Revoke ``token`` (its own user, an administrator, or None for the command line)."""
    if actor is not None and actor.id != token.user_id and not actor.can_act_as("admin"):
        raise NotAllowed("Only the token's user or an administrator may revoke it.")
    if token.revoked_at is not None:
        raise InvalidInput(f"The token “{token.name}” was already revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC.")
    with audit.action("api_token.revoke", actor=actor, reason=reason.strip() or None):
        token.revoked_at = now or utcnow()
        token.revoked_by_id = actor.id if actor else None


def authenticate(header: str | None, *, now: datetime | None = None) -> ApiToken:
    """The live token named by an ``Authorization: Bearer <secret>`` header, or TokenRefused."""
    now = now or utcnow()
    scheme, _, secret = (header or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise TokenRefused("Send a CellTrail API token as “Authorization: Bearer ct_…”. Make one on your "
                           "account page (Account → API tokens).")
    token = db.session.scalar(select(ApiToken).where(ApiToken.secret_hash == secret_hash(secret)))
    if token is None:
        raise TokenRefused("This API token is not known: check it was copied whole, or make a new one.")
    if token.revoked_at is not None:
        raise TokenRefused(f"This API token (“{token.name}”) was revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC.")
    if token.expires_at <= now:
        raise TokenRefused(f"This API token (“{token.name}”) expired at {token.expires_at:%Y-%m-%d %H:%M} UTC: "
                           "make a new one.")
    if not token.user.is_active:
        raise TokenRefused(f"The account {token.user.username} is deactivated: its tokens answer nothing.")
    return token

"""Sessions: every page but the sign-in page needs one; inactive users lose theirs.

A session ends on the server, not only in the browser: it carries the user's session
generation from its sign-in, and sign-out, a password change, deactivation or an
administrator's "end sessions" raise the stored one, so every earlier cookie is refused.
It also carries the time of its sign-in: after SESSION_MAX_HOURS it ends however busy it
was, so a copied cookie is not renewed forever by the 30-minute inactivity timeout.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, current_app, redirect, request, session, url_for
from flask_login import current_user, user_logged_in, user_logged_out
from werkzeug.wrappers import Response

from lab.extensions import db, login_manager
from lab.models import User
from lab.services.users import must_change_password, sign_out

API_PREFIX = "/api/"
PUBLIC_ENDPOINTS = frozenset({"main.login", "static"})
#: What a user who must change their password may still reach.
PASSWORD_CHANGE_ENDPOINTS = frozenset({"account.password", "main.logout", "static"})
GENERATION = "session_generation"
SIGNED_IN_AT = "signed_in_at"


def init_app(app: Flask) -> None:
    login_manager.login_view = "main.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    app.before_request(_require_session)
    app.before_request(_require_own_password)


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    if request.path.startswith(API_PREFIX):  # a session never reaches the API: only its token does
        return None
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.is_active or session.get(GENERATION) != user.session_generation:
        return None
    return user if _within_maximum_age() else None


def _within_maximum_age() -> bool:
    """True while this session is younger than SESSION_MAX_HOURS since its sign-in."""
    signed_in_at = session.get(SIGNED_IN_AT)
    hours = float(current_app.config["SESSION_MAX_HOURS"])
    return isinstance(signed_in_at, (int, float)) and time.time() - signed_in_at <= hours * 3600


@user_logged_in.connect
def _bind_session(sender: Flask, user: User, **extra: Any) -> None:
    """A new sign-in: the session holds the user's current generation and its sign-in time."""
    remember_sign_in(user)


def remember_sign_in(user: User, *, signed_in_at: float | None = None) -> None:
    """Bind this session to ``user``'s current generation (after a sign-in or their own password
    change, which ends every other session), keeping ``signed_in_at`` when given."""
    session[GENERATION] = user.session_generation
    session[SIGNED_IN_AT] = time.time() if signed_in_at is None else signed_in_at


@user_logged_out.connect
def _end_sessions(sender: Flask, user: User | None, **extra: Any) -> None:
    """Sign-out ends this session and every other one of the user, on the server."""
    session.pop(GENERATION, None)
    session.pop(SIGNED_IN_AT, None)
    if isinstance(user, User):
        sign_out(user)
        db.session.commit()


def _require_session() -> Response | None:
    if request.path.startswith(API_PREFIX):  # the API authenticates each request by its token (lab.api.core)
        return None
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return redirect(url_for("main.login", next=request.full_path if request.method == "GET" else None))


def _require_own_password() -> Response | None:
    """A password chosen by an administrator (or too old) is replaced before anything else."""
    if (current_user.is_authenticated and not request.path.startswith(API_PREFIX) and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS
            and must_change_password(current_user)):
        return redirect(url_for("account.password"))
    return None

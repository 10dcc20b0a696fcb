"""Sessions: every page but the sign-in page needs one; inactive users lose theirs."""

from __future__ import annotations

from flask import Flask, redirect, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from lab.extensions import db, login_manager
from lab.models import User

PUBLIC_ENDPOINTS = frozenset({"main.login", "static"})


def init_app(app: Flask) -> None:
    login_manager.login_view = "main.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    app.before_request(_require_session)


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    return user if user is not None and user.is_active else None


def _require_session() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return redirect(url_for("main.login", next=request.full_path if request.method == "GET" else None))

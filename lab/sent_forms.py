"""Each form is accepted once. Every form that changes a record carries a one-time token
(``OnceForm``); the first request that sends it and is saved keeps the token, in the same
transaction as its write. The same form sent again (a double click that got past the
browser, the back button after a POST, a reload, a second tab of the same page) is refused
with a clear message and nothing is recorded twice. A refused request (a typo, a wrong
password) saves nothing, so its token stays good for the corrected form.

The token is required: a POST of a signed-in user without one is refused (400) before its view
runs, so a form cannot be replayed by leaving the token out. Signing in and out are exempt:
they change no record, and the sign-in page has no session to build a token for.

Forms built on a batch also carry its version (``lab.forms.VersionedForm``): that refuses a
page gone stale because someone else changed the record in between."""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Flask, abort, request
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField

from lab.extensions import db
from lab.models import SentForm

TOKEN_FIELD = "form_token"
#: What ``new_token`` makes (URL-safe base64), up to the column's length.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: POST endpoints that change no record.
EXEMPT_ENDPOINTS = frozenset({"main.login", "main.logout"})


def new_token() -> str:
    return secrets.token_urlsafe(24)


class OnceForm(FlaskForm):
    """A form that changes something: it carries its one-time token."""

    form_token = HiddenField(default=new_token)  # its shape is checked by claim_token, before the view

    def hidden_tag(self, *fields: Any) -> Markup:
        """The hidden fields, without ids: a page may hold several forms, each with its own
        token and CSRF token, and an id is unique on a page."""
        chosen = fields or [f for f in self if isinstance(f, HiddenField) or
                            getattr(f.widget, "input_type", None) == "hidden"]
        return Markup("\n".join(str(f(id=False)) for f in chosen))


def claim_token() -> None:
    """Before a POST's view runs: keep its form's token, or refuse a form already saved or
    sent without its token."""
    if request.method != "POST" or request.endpoint in EXEMPT_ENDPOINTS or not current_user.is_authenticated:
        return
    token = request.form.get(TOKEN_FIELD, "")
    if not token:
        abort(400, "The form came without its one-time token, which keeps a form from being saved twice: "
                   "nothing was saved. Open the page again and submit the form from it.")
    if TOKEN_SHAPE.fullmatch(token) is None:
        abort(400, "The form's one-time token is malformed: nothing was saved. Reload the page and enter it again.")
    db.session.add(SentForm(token=token, endpoint=(request.endpoint or "")[:64], user_id=current_user.id))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        first = db.session.scalar(select(SentForm).where(SentForm.token == token))
        when = f" at {first.sent_at:%Y-%m-%d %H:%M:%S} UTC" if first is not None else ""
        abort(409, f"This form was already sent and saved{when}. It came again (a second click, the back "
                   "button or a reload): nothing was recorded twice. Open the record to see what was saved.")


def init_app(app: Flask) -> None:
    app.before_request(claim_token)

"""Personal API tokens in the browser: each person makes, lists and revokes their own (every
role, clinicians too: a token acts with its user's role); administrators list and revoke
everyone's, with a reason. The secret is shown once, on the page answering its creation,
and never again: only its SHA-256 is kept (lab.services.api_tokens)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import ApiToken, User, utcnow
from lab.permissions import require
from lab.sent_forms import OnceForm
from lab.services.api_tokens import (
    DEFAULT_DAYS,
    LIST_LIMIT,
    MAX_DAYS,
    TOKEN_STATUSES,
    all_tokens,
    create_token,
    revoke_token,
    status_of,
    tokens_of,
)
from lab.views.common import apply_errors

bp = Blueprint("api_tokens", __name__)


class CreateTokenForm(OnceForm):
    # The service checks the name and the days and words the refusals (one rule for the page and the CLI).
    name = StringField("Name (what will use it, for example “LIMS”)")
    scope = SelectField("Scope", choices=[SelectChoice("read", "read: reads what you may read"),
                                          SelectChoice("write", "write: also submits values, for a person to sign")],
                        default="read")
    days = StringField(f"Lasts (days, 1 to {MAX_DAYS})", default=str(DEFAULT_DAYS))


class RevokeTokenForm(OnceForm):
    reason = StringField("Reason (optional)", [Length(max=500)])


class AdminRevokeTokenForm(OnceForm):
    reason = StringField("Reason", [DataRequired("Say why the token is revoked."), Length(max=500)])


@bp.route("/account/tokens", methods=["GET", "POST"])
def mine() -> tuple[str, int, dict[str, str]]:
    """The signed-in person's tokens and the form making one; answering a creation, its secret."""
    form = CreateTokenForm()
    if not form.validate_on_submit():
        return _mine_page(form, status=422 if form.is_submitted() else 200)
    try:
        token, secret = create_token(current_user, form.name.data or "", form.scope.data or "",
                                     form.days.data or "", actor=current_user)
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return _mine_page(form, status=error.status)
    db.session.commit()
    return _mine_page(CreateTokenForm(formdata=None), made=token, secret=secret)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
def revoke(token_id: int) -> Response | tuple[str, int, dict[str, str]]:
    """Revoke one of one's own tokens (another person's: 403, unless an administrator's)."""
    token = _token(token_id)
    form = RevokeTokenForm()
    refused = _revoke(token, form)
    if refused is not None:
        return _mine_page(CreateTokenForm(formdata=None), refused=(token.id, form), status=refused)
    return redirect(url_for("api_tokens.mine"))


@bp.route("/admin/tokens")
def everyone() -> tuple[str, int]:
    """Every user's tokens, filtered by user and status (administrators)."""
    require(current_user, "manage_users", "see everyone's API tokens")
    return _everyone_page()


@bp.route("/admin/tokens/<int:token_id>/revoke", methods=["POST"])
def admin_revoke(token_id: int) -> Response | tuple[str, int]:
    require(current_user, "manage_users", "revoke another person's API token")
    token = _token(token_id)
    form = AdminRevokeTokenForm()
    refused = _revoke(token, form)
    if refused is not None:
        return _everyone_page(refused=(token.id, form), status=refused)
    return redirect(url_for("api_tokens.everyone"))


def _token(token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id)
    if token is None:
        abort(404, f"No API token {token_id}.")
    return token


def _revoke(token: ApiToken, form: RevokeTokenForm | AdminRevokeTokenForm) -> int | None:
    """Revoke ``token`` as the form asks: None when done, else the refusal's status (its
    message on the form). NotAllowed goes to the error page (403)."""
    if not form.validate_on_submit():
        return 422
    try:
        revoke_token(token, actor=current_user, reason=form.reason.data or "")
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return error.status
    db.session.commit()
    flash(f"The token “{token.name}” ({token.prefix}…) of {token.user.username} is revoked: it answers nothing "
          "from now on.", "success")
    return None


def _revoke_forms(tokens: list[ApiToken], form_class: type[OnceForm], refused: tuple[int, OnceForm] | None,
                  statuses: dict[int, str]) -> dict[int, OnceForm]:
    """A revocation form of its own (its own one-time token) for each live token; the refused one as sent."""
    forms = {t.id: form_class(formdata=None) for t in tokens if statuses[t.id] == "live"}
    if refused is not None:
        forms[refused[0]] = refused[1]
    return forms


def _mine_page(form: CreateTokenForm, *, made: ApiToken | None = None, secret: str | None = None,
               refused: tuple[int, OnceForm] | None = None, status: int = 200) -> tuple[str, int, dict[str, str]]:
    """The account's tokens page; never kept by a browser or proxy cache (it may hold a secret)."""
    tokens = tokens_of(current_user)
    statuses = _statuses(tokens)
    html = render_template("account/tokens.html", form=form, made=made, secret=secret, tokens=tokens,
                           statuses=statuses, revoke_forms=_revoke_forms(tokens, RevokeTokenForm, refused, statuses))
    return html, status, {"Cache-Control": "no-store"}


def _everyone_page(*, refused: tuple[int, OnceForm] | None = None, status: int = 200) -> tuple[str, int]:
    errors: dict[str, str] = {}
    username = request.args.get("user", "").strip()
    wanted = request.args.get("status", "").strip()
    user = db.session.scalar(select(User).where(User.username == username.lower())) if username else None
    if username and user is None:
        errors["user"] = f"No user {username[:64]!r} has an account in this lab."
    if wanted and wanted not in TOKEN_STATUSES:
        errors["status"] = f"A token is {', '.join(TOKEN_STATUSES[:-1])} or {TOKEN_STATUSES[-1]}."
    tokens = [] if errors else all_tokens(user=user, status=wanted or None)
    statuses = _statuses(tokens)
    context: dict[str, Any] = {
        "tokens": tokens, "statuses": statuses, "errors": errors, "args": request.args, "limit": LIST_LIMIT,
        "users": db.session.scalars(select(User).order_by(User.username)).all(), "choices": TOKEN_STATUSES,
        "revoke_forms": _revoke_forms(tokens, AdminRevokeTokenForm, refused, statuses)}
    return render_template("admin/tokens.html", **context), status if not errors else 422


def _statuses(tokens: list[ApiToken]) -> dict[int, str]:
    now = utcnow()
    return {t.id: status_of(t, now=now) for t in tokens}

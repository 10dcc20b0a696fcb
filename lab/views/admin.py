"""User administration: add accounts, change roles, deactivate. Nobody is ever deleted."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, InputRequired, Length

from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.forms import CreateUserForm, UnlockUserForm, UpdateUserForm
from lab.models import AuditEvent, Site, User
from lab.permissions import require
from lab.sent_forms import OnceForm
from lab.services.sites import site_id_from
from lab.services.users import create_user, end_sessions, reset_password, unlock_user, update_user
from lab.views.common import apply_errors
from lab.views.sites import site_choices

bp = Blueprint("admin", __name__, url_prefix="/admin")


class ResetPasswordForm(OnceForm):
    # No length validator: the password policy (lab.passwords) words the refusal. Ids of their own: the
    # account page holds several forms with a reason.
    password = PasswordField("Temporary password (the owner must replace it at the next sign-in)",
                             [InputRequired("Enter a temporary password.")], id="reset-password")
    reason = StringField("Reason for the reset", [DataRequired("Say why the password is reset."), Length(max=500)],
                         id="reset-reason")


class EndSessionsForm(OnceForm):
    reason = StringField("Reason for ending the sessions",
                         [DataRequired("Say why this person's sessions end."), Length(max=500)], id="end-reason")


@bp.before_request
def _admins_only() -> None:
    require(current_user, "manage_users", "manage user accounts")


@bp.route("/users", methods=["GET", "POST"])
def users() -> str | Response | tuple[str, int]:
    form = CreateUserForm()
    form.site.choices = site_choices("None (the lab's own staff)")
    status = 200
    if form.validate_on_submit():
        try:
            user = create_user(form.username.data or "", form.full_name.data or "", form.role.data or "",
                               form.password.data or "", actor=current_user,
                               site_id=site_id_from(form.site.data, field="site", what="The account was not created."))
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = 422
        else:
            db.session.commit()
            flash(f"Account {user.username} ({user.role_title}) created. Give {user.full_name} the temporary "
                  "password in person: it must be replaced at the first sign-in.", "success")
            return redirect(url_for("admin.users"))
    elif form.is_submitted():
        status = 422
    accounts = db.session.scalars(select(User).order_by(User.active.desc(), User.username)).all()
    sites = {site.id: site for site in db.session.scalars(select(Site))}
    return render_template("admin/users.html", form=form, users=accounts, sites=sites), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
def user(user_id: int) -> str | Response | tuple[str, int]:
    account = _account(user_id)
    form = _update_form(account)
    status = 200
    if form.validate_on_submit():
        try:
            update_user(account, role=form.role.data or "", active=form.status.data == "active",
                        actor=current_user, reason=form.reason.data or "",
                        site_id=site_id_from(form.site.data, field="site", what="The account was not changed."))
        except (InvalidInput, NotAllowed) as error:
            db.session.rollback()
            if isinstance(error, InvalidInput):
                apply_errors(form, error)
            else:
                form.form_errors.append(str(error))
            status = error.status
        else:
            db.session.commit()
            flash(f"Account {account.username} updated.", "success")
            return redirect(url_for("admin.users"))
    elif form.is_submitted():
        status = 422
    return _user_page(account, form, UnlockUserForm(), status)


@bp.route("/users/<int:user_id>/unlock", methods=["POST"])
def unlock(user_id: int) -> Response | tuple[str, int]:
    account = _account(user_id)
    form = UnlockUserForm()
    if form.validate_on_submit():
        try:
            unlock_user(account, actor=current_user, reason=form.reason.data or "")
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            return _user_page(account, _update_form(account), form, error.status)
        db.session.commit()
        flash(f"Account {account.username} unlocked: it may sign in and sign again.", "success")
        return redirect(url_for("admin.user", user_id=account.id))
    return _user_page(account, _update_form(account), form, 422)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
def reset(user_id: int) -> Response | tuple[str, int]:
    """Give a user who forgot their password a temporary one (never one they keep)."""
    account = _account(user_id)
    form = ResetPasswordForm()
    if not form.validate_on_submit():
        return _user_page(account, _update_form(account), UnlockUserForm(), 422, reset=form)
    try:
        reset_password(account, form.password.data or "", actor=current_user, reason=form.reason.data or "")
    except (InvalidInput, NotAllowed) as error:
        db.session.rollback()
        if isinstance(error, InvalidInput):
            apply_errors(form, error)
        else:
            form.form_errors.append(str(error))
        return _user_page(account, _update_form(account), UnlockUserForm(), error.status, reset=form)
    db.session.commit()
    flash(f"Temporary password set for {account.username}: give it in person; it must be replaced at the next "
          "sign-in. Their sessions have ended.", "success")
    return redirect(url_for("admin.user", user_id=account.id))


@bp.route("/users/<int:user_id>/end-sessions", methods=["POST"])
def end(user_id: int) -> Response | tuple[str, int]:
    """Sign a user out everywhere (a lost badge, a screen left signed in)."""
    account = _account(user_id)
    form = EndSessionsForm()
    if not form.validate_on_submit():
        return _user_page(account, _update_form(account), UnlockUserForm(), 422, end=form)
    try:
        end_sessions(account, actor=current_user, reason=form.reason.data or "")
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return _user_page(account, _update_form(account), UnlockUserForm(), error.status, end=form)
    db.session.commit()
    flash(f"Every session of {account.username} has ended.", "success")
    return redirect(url_for("admin.user", user_id=account.id))


def _update_form(account: User) -> UpdateUserForm:
    form = UpdateUserForm(role=account.role, status="active" if account.active else "inactive",
                          site="" if account.site_id is None else str(account.site_id))
    current = db.session.get(Site, account.site_id) if account.site_id is not None else None
    form.site.choices = site_choices("None (the lab's own staff)", keep=current)
    return form


def _user_page(account: User, form: UpdateUserForm, unlock: UnlockUserForm, status: int, *,
               reset: ResetPasswordForm | None = None, end: EndSessionsForm | None = None) -> tuple[str, int]:
    history = db.session.scalars(
        select(AuditEvent).where(AuditEvent.table_name == "users", AuditEvent.row_id == str(account.id))
        .order_by(AuditEvent.id.desc()).limit(50)
    ).all()
    return render_template("admin/user.html", form=form, unlock=unlock, account=account, history=history,
                           reset=reset or ResetPasswordForm(), end=end or EndSessionsForm()), status


def _account(user_id: int) -> User:
    """The user the URL names, or a 404 saying so."""
    account = db.session.get(User, user_id)
    if account is None:
        abort(404, f"No user with id {user_id}.")
    return account

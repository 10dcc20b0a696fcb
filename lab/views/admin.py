"""User administration: add accounts, change roles, deactivate. Nobody is ever deleted."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.forms import CreateUserForm, UnlockUserForm, UpdateUserForm
from lab.models import AuditEvent, User
from lab.permissions import require
from lab.services.users import create_user, unlock_user, update_user
from lab.views.common import apply_errors

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _admins_only() -> None:
    require(current_user, "manage_users", "manage user accounts")


@bp.route("/users", methods=["GET", "POST"])
def users() -> str | Response | tuple[str, int]:
    form = CreateUserForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = create_user(form.username.data or "", form.full_name.data or "", form.role.data or "",
                               form.password.data or "", actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = 422
        else:
            db.session.commit()
            flash(f"Account {user.username} ({user.role_title}) created.", "success")
            return redirect(url_for("admin.users"))
    elif form.is_submitted():
        status = 422
    accounts = db.session.scalars(select(User).order_by(User.active.desc(), User.username)).all()
    return render_template("admin/users.html", form=form, users=accounts), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
def user(user_id: int) -> str | Response | tuple[str, int]:
    account = db.session.get(User, user_id)
    if account is None:
        abort(404, f"No user with id {user_id}.")
    form = _update_form(account)
    status = 200
    if form.validate_on_submit():
        try:
            update_user(account, role=form.role.data or "", active=form.status.data == "active",
                        actor=current_user, reason=form.reason.data or "")
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
    account = db.session.get(User, user_id)
    if account is None:
        abort(404, f"No user with id {user_id}.")
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


def _update_form(account: User) -> UpdateUserForm:
    return UpdateUserForm(role=account.role, status="active" if account.active else "inactive")


def _user_page(account: User, form: UpdateUserForm, unlock: UnlockUserForm, status: int) -> tuple[str, int]:
    history = db.session.scalars(
        select(AuditEvent).where(AuditEvent.table_name == "users", AuditEvent.row_id == str(account.id))
        .order_by(AuditEvent.id.desc()).limit(50)
    ).all()
    return render_template("admin/user.html", form=form, unlock=unlock, account=account, history=history), status

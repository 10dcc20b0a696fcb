"""A user's own account: changing their password (21 CFR 11.300(b): passwords are owned and
changed by their users, never known to an administrator)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import PasswordField
from wtforms.validators import InputRequired

from lab.auth import SIGNED_IN_AT, remember_sign_in
from lab.exceptions import InvalidInput, SignatureError
from lab.extensions import db
from lab.sent_forms import OnceForm
from lab.services.users import change_password, must_change_password
from lab.views.common import apply_errors
from lab.views.signing import refused

bp = Blueprint("account", __name__, url_prefix="/account")


class ChangePasswordForm(OnceForm):
    # No length validator here: the policy (lab.passwords) says what is too short or too long.
    current_password = PasswordField("Current password", [InputRequired("Enter your current password.")])
    new_password = PasswordField("New password", [InputRequired("Enter the new password.")])
    confirm = PasswordField("New password again", [InputRequired("Enter the new password a second time.")])


@bp.route("/password", methods=["GET", "POST"])
def password() -> str | Response | tuple[str, int]:
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            change_password(current_user, form.current_password.data or "", form.new_password.data or "",
                            form.confirm.data or "")
        except SignatureError as error:
            form.current_password.errors = [refused(error)]  # kept and counted, as a refused signature
            status = error.status
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        else:
            db.session.commit()
            remember_sign_in(current_user, signed_in_at=session.get(SIGNED_IN_AT))  # this session goes on
            flash("Your password is changed. Every other session of yours has ended.", "success")
            return redirect(url_for("main.dashboard"))
    elif form.is_submitted():
        status = 422
    return render_template("account/password.html", form=form, required=must_change_password(current_user)), status

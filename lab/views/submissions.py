"""Values submitted by instruments and other systems: the list waiting for a signature, one
submission's page (its values, flags, source and file), and withdrawing one. Signing happens
on the step form or the QC result form, opened from here with ``?submission=<id>``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from lab.exceptions import LabError
from lab.extensions import db
from lab.models import Batch, Deviation, Submission
from lab.permissions import require_role
from lab.sent_forms import OnceForm
from lab.services.progress import definition_for
from lab.services.steps import MAX_COMMENT
from lab.services.submissions import (
    Flag,
    deviations_of,
    flags_of,
    may_sign,
    pending,
    require_signer,
    submission_name,
    usable,
    withdraw,
)
from workflows.formatting import format_recorded

bp = Blueprint("submissions", __name__, url_prefix="/submissions")
#: The roles that record steps or results: the people who sign what instruments send.
SIGNERS = ("technician", "supervisor", "qc_analyst")


class WithdrawForm(OnceForm):
    reason = StringField("Reason for withdrawing", [DataRequired(), Length(max=MAX_COMMENT)])


@dataclass(frozen=True)
class Value:
    label: str
    text: str  # as the record prints it, with its unit
    code: bool


@dataclass(frozen=True)
class SubmissionView:
    """One submission as its pages show it."""

    submission: Submission
    name: str
    what: str  # the step's or the test's title
    values: list[Value]
    flags: list[Flag]
    deviations: list[Deviation]
    #: The form that records it, prefilled (None: not pending, or not for this user).
    form_url: str | None


def view_of(submission: Submission) -> SubmissionView:
    batch = submission.batch
    definition = definition_for(batch)
    if submission.kind == "step":
        step = definition.step(submission.key)
        what = step.title
        fields = {spec.key: spec for spec in step.fields}
        values = [Value(fields[key].label, format_recorded(text, fields[key].type, fields[key].unit),
                        fields[key].type in ("lot", "equipment", "coi", "container", "containers"))
                  for key, text in submission.values.items() if key in fields]
        endpoint, argument = "batches.record", "step_key"
    else:
        test = definition.release_test(submission.key)
        what = f"{test.title} result"
        values = [Value(test.title, format_recorded(submission.values.get("value", ""),
                                                    "number" if test.unit else "result", test.unit), False)]
        endpoint, argument = "quality.record", "test_key"
    form_url = None
    if submission.status == "pending" and may_sign(current_user, submission):
        form_url = url_for(endpoint, batch_number=batch.batch_number, submission=submission.id,
                           **{argument: submission.key})
    return SubmissionView(submission, submission_name(submission), what, values, flags_of(submission),
                          deviations_of(submission), form_url)


def submission_named(batch: Batch, kind: str, key: str) -> Submission | None:
    """The pending submission a form starts from (``submission`` in its query or body), or None:
    404 when there is no such submission, 409 when it is used or not for this form."""
    named = request.values.get("submission", "")
    if not named:
        return None
    found = db.session.get(Submission, int(named)) if named.isdigit() and len(named) < 10 else None
    if found is None:
        abort(404, f"No submission {named!r}.")
    usable(found, batch, kind, key)
    return found


def _get_or_404(submission_id: int) -> Submission:
    found = db.session.get(Submission, submission_id)
    if found is None:
        abort(404, f"No submission {submission_id}.")
    return found


@bp.route("")
def index() -> str:
    require_role(current_user, SIGNERS, "sign values sent by instruments")
    waiting = pending(current_user)
    return render_template("submissions/index.html", views=[view_of(s) for s in waiting.submissions],
                           more=waiting.more)


@bp.route("/<int:submission_id>")
def detail(submission_id: int) -> str:
    submission = _get_or_404(submission_id)
    return render_template("submissions/detail.html", view=view_of(submission), form=WithdrawForm(formdata=None))


@bp.route("/<int:submission_id>/withdraw", methods=["POST"])
def withdraw_submission(submission_id: int) -> Response | tuple[str, int]:
    submission = _get_or_404(submission_id)
    form = WithdrawForm()
    require_signer(current_user, submission, "withdraw this submission")  # said before the form is read
    if form.validate_on_submit():
        try:
            withdraw(submission, reason=form.reason.data or "", actor=current_user)
        except LabError as error:
            db.session.rollback()
            form.form_errors.append(str(error))
            status = error.status
        else:
            db.session.commit()
            flash(f"{submission_name(submission)} withdrawn: its values will not be recorded.", "success")
            return redirect(url_for("submissions.detail", submission_id=submission_id))
    else:
        status = 422
    return render_template("submissions/detail.html", view=view_of(_get_or_404(submission_id)), form=form), status

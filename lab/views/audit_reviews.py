"""Reviews of the audit trail: the list for QA, auditors and administrators, and QA's signed
review form (lab.services.audit_review)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import DateField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length

from lab.forms import SigningForm
from lab.permissions import require, require_role
from lab.services.audit_review import MAX_FINDINGS, REVIEWERS, chain_head, record_review, reviews
from lab.services.progress import lab_timezone
from lab.views import signing

bp = Blueprint("audit_reviews", __name__)


class AuditReviewForm(SigningForm):
    """The period reviewed, what the review found, and the reviewer's signature."""

    period_from = DateField("First day reviewed", [InputRequired(message="Enter the first day of the period.")])
    period_to = DateField("Last day reviewed", [InputRequired(message="Enter the last day of the period.")])
    findings = TextAreaField("Findings", [DataRequired(message="Say what the review found."),
                                          Length(max=MAX_FINDINGS)])


@bp.before_request
def _reviewers_only() -> None:
    require(current_user, "review_audit_trail", "read the reviews of the audit trail")


def may_record_review() -> bool:
    return bool(current_user.can_act_as(*REVIEWERS))


@bp.route("/audit/reviews", methods=["GET", "POST"])
def index() -> str | Response | tuple[str, int]:
    form = AuditReviewForm()
    status = 200
    if request.method == "POST":
        require_role(current_user, REVIEWERS, "record a review of the audit trail")
        if form.validate_on_submit():
            outcome = signing.attempt(form, lambda: record_review(
                form.period_from.data, form.period_to.data, form.findings.data or "", actor=current_user,
                credentials=signing.credentials(form)))
            if outcome.done and outcome.value is not None:
                review = outcome.value
                flash(f"Review of the audit trail from {review.period_from.isoformat()} to "
                      f"{review.period_to.isoformat()} recorded and signed; it saw the trail up to entry "
                      f"{review.head_entry_id}.", "success")
                return redirect(url_for("audit_reviews.index"))
            status = outcome.status
        else:
            status = 422
    head_id, head_hash = chain_head()
    return render_template("audit_reviews/index.html", form=form, reviews=reviews(current_user),
                           may_record=may_record_review(), head_id=head_id, head_hash=head_hash,
                           timezone=lab_timezone().key), status

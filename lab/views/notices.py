"""Notices of late results (issue 15, item 7): the list, one notice, and its acknowledgement
by a clinician of the treating site, signed "acknowledged".

Clinicians see their own site's notices; QA, supervisors and auditors every site's. Open
notices are also listed on the dashboards (the site's, and QA's: ``open_site_notices`` is
given to every template for that).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from lab.forms import SigningForm
from lab.models import SiteNotice
from lab.permissions import require
from lab.services import site_notices as service
from lab.services.signatures import record_signatures
from lab.views import signing

bp = Blueprint("notices", __name__)


class AcknowledgeForm(SigningForm):
    """Only the signature: the notice comes from the URL."""


@bp.app_context_processor
def _dashboard_notices() -> dict[str, Any]:
    def open_site_notices() -> list[SiteNotice]:
        """Every site's open notices, for the quality unit's dashboard; empty for anyone else."""
        if not current_user.is_authenticated or current_user.role not in ("qa_officer", "supervisor", "auditor"):
            return []
        return service.open_notices(None)
    return {"open_site_notices": open_site_notices}


@bp.route("/notices")
def index() -> str:
    notices = service.visible_notices(current_user)
    return render_template("notices/index.html", notices=notices,
                           open_count=sum(1 for n in notices if n.acknowledged_at is None))


def _get(notice_id: int) -> SiteNotice:
    notice = service.get_visible(notice_id, current_user)
    if notice is None:
        abort(404, f"There is no notice {notice_id}.")
    return notice


def _page(notice: SiteNotice, form: AcknowledgeForm | None = None, status: int = 200) -> tuple[str, int]:
    return render_template("notices/show.html", notice=notice, form=form or AcknowledgeForm(),
                           may_acknowledge=service.may_acknowledge(current_user, notice),
                           current=service.current_result(notice), signatures=record_signatures(notice)), status


@bp.route("/notices/<int:notice_id>")
def show(notice_id: int) -> tuple[str, int]:
    return _page(_get(notice_id))


@bp.route("/notices/<int:notice_id>/acknowledge", methods=["POST"])
def acknowledge(notice_id: int) -> Response | tuple[str, int]:
    require(current_user, "acknowledge_notice", "acknowledge a notice of a late result for the treating site")
    notice = _get(notice_id)
    form = AcknowledgeForm()
    status = 422
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: service.acknowledge(
            notice, actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            flash(f"Notice about batch {notice.batch.batch_number} acknowledged.", "success")
            return redirect(url_for("notices.show", notice_id=notice.id))
        status = outcome.status
    return _page(_get(notice_id), form, status)

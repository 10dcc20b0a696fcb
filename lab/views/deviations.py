"""Deviations across batches (filtered), one deviation with its investigation, reporting one
by hand, and closing it with QA's signature."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from lab.exceptions import InvalidInput, StepNotAllowed
from lab.extensions import db
from lab.models import Deviation
from lab.models.quality import CLASSIFICATIONS
from lab.permissions import require
from lab.quality_forms import CloseDeviationForm, InvestigationForm, ReportDeviationForm
from lab.services.deviations import (
    INVESTIGATION_FIELDS,
    SOURCES,
    DeviationFilter,
    Investigation,
    close_deviation,
    find_deviations,
    record_investigation,
    report_deviation,
)
from lab.services.signatures import batch_signatures, marked
from lab.views import signing
from lab.views.batches import get_batch_or_404
from lab.views.common import apply_errors

bp = Blueprint("deviations", __name__)


def get_deviation_or_404(number: str) -> Deviation:
    deviation = db.session.scalar(select(Deviation).where(Deviation.number == number.strip().upper()))
    if deviation is None:
        abort(404, f"No deviation {number} is registered in this lab.")
    return deviation


@bp.route("/deviations")
def index() -> tuple[str, int]:
    filters = DeviationFilter(*(request.args.get(key, "").strip()[:64]
                                for key in ("batch", "status", "classification", "source")))
    errors: dict[str, str] = {}
    try:
        found = find_deviations(filters)
    except InvalidInput as error:
        errors, found = error.errors, []
    return render_template("deviations/index.html", deviations=found, filters=filters, errors=errors,
                           classifications=CLASSIFICATIONS, sources=SOURCES), 422 if errors else 200


@bp.route("/batches/<batch_number>/deviations/new", methods=["GET", "POST"])
def new(batch_number: str) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    require(current_user, "report_deviation", "report a deviation")
    form = ReportDeviationForm()
    status = 200
    if form.validate_on_submit():
        try:
            deviation = report_deviation(batch, title=form.title.data or "", description=form.description.data or "",
                                         actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        else:
            db.session.commit()
            flash(f"Deviation {deviation.number} opened.", "success")
            return redirect(url_for("deviations.detail", number=deviation.number))
    elif form.is_submitted():
        status = 422
    return render_template("deviations/new.html", batch=batch, form=form), status


def _page(deviation: Deviation, investigation: InvestigationForm, closing: CloseDeviationForm,
          status: int = 200) -> tuple[str, int]:
    signatures = marked(deviation, batch_signatures(deviation.batch))
    return render_template("deviations/detail.html", deviation=deviation, investigation=investigation,
                           closing=closing, signatures=signatures, sources=SOURCES,
                           fields=INVESTIGATION_FIELDS), status


def _investigation_form(deviation: Deviation) -> InvestigationForm:
    return InvestigationForm(data={key: getattr(deviation, key) or "" for key in INVESTIGATION_FIELDS})


@bp.route("/deviations/<number>")
def detail(number: str) -> tuple[str, int]:
    deviation = get_deviation_or_404(number)
    return _page(deviation, _investigation_form(deviation), CloseDeviationForm())


@bp.route("/deviations/<number>/investigation", methods=["POST"])
def investigate(number: str) -> Response | tuple[str, int]:
    deviation = get_deviation_or_404(number)
    require(current_user, "investigate_deviation", "investigate a deviation")
    form = InvestigationForm()
    if not form.validate_on_submit():
        return _page(deviation, form, CloseDeviationForm(), 422)
    data = Investigation(**{key: getattr(form, key).data or "" for key in INVESTIGATION_FIELDS})
    try:
        record_investigation(deviation, data, actor=current_user)
    except (InvalidInput, StepNotAllowed) as error:
        db.session.rollback()
        if isinstance(error, InvalidInput):
            apply_errors(form, error)
        else:
            form.form_errors.append(str(error))
        return _page(get_deviation_or_404(number), form, CloseDeviationForm(), error.status)
    db.session.commit()
    flash(f"Investigation of {deviation.number} saved.", "success")
    return redirect(url_for("deviations.detail", number=deviation.number))


@bp.route("/deviations/<number>/close", methods=["POST"])
def close(number: str) -> Response | tuple[str, int]:
    deviation = get_deviation_or_404(number)
    require(current_user, "close_deviation", "close a deviation")
    form = CloseDeviationForm()
    if not form.validate_on_submit():
        return _page(deviation, _investigation_form(deviation), form, 422)
    outcome = signing.attempt(form, lambda: close_deviation(deviation, actor=current_user,
                                                            credentials=signing.credentials(form)))
    if outcome.done:
        flash(f"Deviation {deviation.number} closed and signed by {current_user.full_name}.", "success")
        return redirect(url_for("deviations.detail", number=deviation.number))
    deviation = get_deviation_or_404(number)
    return _page(deviation, _investigation_form(deviation), form, outcome.status)

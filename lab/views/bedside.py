"""At the bedside: the two-person identity check, the thaw and infusion, and what becomes of a
bag that is not infused; a bag's page shows all three."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from lab.exceptions import NotAllowed, SignatureError
from lab.extensions import db
from lab.forms import SigningForm
from lab.models import Container
from lab.models.clinic import DISPOSAL_OUTCOMES
from lab.permissions import require
from lab.services import bedside as service
from lab.services.containers import record_mismatches
from lab.services.progress import container_title, definition_for
from lab.services.signatures import record_signatures
from lab.views import signing
from lab.views.containers import get_container_or_404

bp = Blueprint("bedside", __name__)
T = TypeVar("T")
_MOMENT = {"type": "datetime-local", "step": "60"}
#: A scanner's Enter moves on to the next field instead of sending the form (celltrail.js).
_SCAN = {"data-scan": True, "class": "code", "autocomplete": "off"}


class BedsideForm(SigningForm):
    bag_scanned = StringField("Scan the bag", [Length(max=200)], render_kw=_SCAN)
    method = SelectField("How the patient is identified",
                         choices=[SelectChoice(k, v) for k, v in service.METHODS.items()])
    wristband = StringField("Scan the patient's wristband (COI)", [Optional(), Length(max=200)], render_kw=_SCAN)
    patient_ref = StringField("Patient ID (as on the wristband)", [Optional(), Length(max=64)])
    date_of_birth = StringField("Date of birth (YYYY-MM-DD)", [Optional(), Length(max=32)], render_kw={"type": "date"})
    second_username = StringField("Second clinician: username", [Optional(), Length(max=64)])
    second_password = PasswordField("Second clinician: password", [Length(max=256)])


class AdministrationForm(SigningForm):
    thaw_start = StringField("Thaw started", [Length(max=40)], render_kw=_MOMENT)
    thaw_end = StringField("Thaw ended", [Length(max=40)], render_kw=_MOMENT)
    infusion_start = StringField("Infusion started", [Length(max=40)], render_kw=_MOMENT)
    infusion_end = StringField("Infusion ended", [Length(max=40)], render_kw=_MOMENT)
    reactions = TextAreaField("Reactions observed (or \"none observed\")", [Length(max=2000)])


class DisposalForm(SigningForm):
    outcome = SelectField("What becomes of the bag", choices=[SelectChoice(k, v) for k, v in DISPOSAL_OUTCOMES.items()],
                          validate_choice=False)
    reason = TextAreaField("Reason", [Length(max=2000)])
    happened_at = StringField("When", [Length(max=40)], render_kw=_MOMENT)
    witness_username = StringField("Witness: username", [Optional(), Length(max=64)])
    witness_password = PasswordField("Witness: password", [Length(max=256)])


def _run(form: SigningForm, work: Callable[[], T], second_field: str) -> signing.Attempt[T]:
    """One signed service call with a second signer on the same form (signing.attempt otherwise):
    a refused password goes next to the password of whoever typed it; a mismatch keeps its scan
    and goes next to its field."""
    try:
        return signing.attempt(form, work, passthrough=(service.BedsideMismatch, SignatureError))
    except service.BedsideMismatch as error:
        db.session.rollback()
        record_mismatches(error.container.batch, error.scans, actor=current_user)
        db.session.commit()
        getattr(form, error.field).errors = [str(error)]
        return signing.Attempt(False, status=error.status)
    except SignatureError as error:
        message = signing.refused(error)
        theirs = error.attempt is not None and error.attempt.user_id != current_user.id
        (getattr(form, second_field) if theirs else form.password).errors = [message]
        return signing.Attempt(False, status=error.status)


def _bag(code: str) -> Container:
    """The bag of the URL; 403 for a clinician of another site."""
    container = get_container_or_404(code)
    try:
        service.require_bag_site(current_user, container)
    except NotAllowed as error:
        abort(403, str(error))
    return container


@bp.route("/bedside", methods=["GET", "POST"])
def check() -> str | Response | tuple[str, int]:
    require(current_user, "check_at_bedside", "check a bag at the bedside")
    form = BedsideForm()
    status = 200
    if request.method == "GET" and request.args.get("bag"):
        form.bag_scanned.data = request.args["bag"][:200]
    if form.validate_on_submit():
        outcome = _run(form, lambda: service.check_at_bedside(
            service.BedsideInput(bag_scanned=form.bag_scanned.data or "", method=form.method.data or "",
                                 wristband=form.wristband.data or "", patient_ref=form.patient_ref.data or "",
                                 date_of_birth=form.date_of_birth.data or "",
                                 second_username=form.second_username.data or "",
                                 second_password=form.second_password.data or ""),
            actor=current_user, credentials=signing.credentials(form)), "second_password")
        if outcome.done:
            assert outcome.value is not None
            code = outcome.value.container.code
            flash(f"Bedside check of {code} signed by both clinicians: the patient is the bag's patient.", "success")
            return redirect(url_for("bedside.bag", code=code, _anchor="administration"))
        status = outcome.status
    elif request.method == "POST":
        status = 422
    mismatch = next((e for f in (form.wristband, form.patient_ref) for e in f.errors if "DO NOT INFUSE" in e), "")
    bags = service.bags_at_site(current_user.site_id) if current_user.site_id else []
    return render_template("bedside/check.html", form=form, bags=bags, mismatch=mismatch), status


@bp.route("/bedside/bags/<code>")
def bag(code: str) -> str:
    container = _bag(code)
    return _bag_page(container)


def _bag_page(container: Container) -> str:
    record = service.bag_record(container)
    signatures = {
        **{("check", c.id): record_signatures(c) for c in record.checks},
        **({("administration", record.administration.id): record_signatures(record.administration)}
           if record.administration else {}),
        **({("disposal", record.disposal.id): record_signatures(record.disposal)} if record.disposal else {}),
    }
    title = container_title(container, definition_for(container.batch))
    return render_template("bedside/bag.html", record=record, container=container, title=title,
                           signatures=signatures, outcomes=DISPOSAL_OUTCOMES)


@bp.route("/bedside/bags/<code>/administration", methods=["GET", "POST"])
def administration(code: str) -> str | Response | tuple[str, int]:
    require(current_user, "administer", "record an infusion")
    container = _bag(code)
    form = AdministrationForm()
    status = 200
    if form.validate_on_submit():
        outcome = _run(form, lambda: service.administer_bag(
            container, service.AdministrationInput(
                thaw_start=form.thaw_start.data or "", thaw_end=form.thaw_end.data or "",
                infusion_start=form.infusion_start.data or "", infusion_end=form.infusion_end.data or "",
                reactions=form.reactions.data or ""),
            actor=current_user, credentials=signing.credentials(form)), "password")
        if outcome.done:
            assert outcome.value is not None
            done = outcome.value
            if done.limit_exceeded and done.deviation is not None:
                flash(f"Infusion of {container.code} recorded. The thaw-to-infusion limit of {done.limit_minutes} "
                      f"minutes was exceeded: deviation {done.deviation.number} is open.", "error")
            else:
                flash(f"Infusion of {container.code} recorded and signed.", "success")
            return redirect(url_for("bedside.bag", code=container.code))
        status = outcome.status
        container = _bag(code)
    elif request.method == "POST":
        status = 422
    record = service.bag_record(container)
    limit = definition_for(container.batch).thaw_to_infusion_minutes
    return render_template("bedside/administration.html", form=form, container=container, record=record,
                           check=record.checks[-1] if record.checks else None, limit=limit), status


@bp.route("/bedside/bags/<code>/disposal", methods=["GET", "POST"])
def disposal(code: str) -> str | Response | tuple[str, int]:
    require(current_user, "dispose_bag", "record what became of a bag")
    container = _bag(code)
    form = DisposalForm()
    status = 200
    if form.validate_on_submit():
        outcome = _run(form, lambda: service.dispose_bag(
            container, service.DisposalInput(
                outcome=form.outcome.data or "", reason=form.reason.data or "",
                happened_at=form.happened_at.data or "", witness_username=form.witness_username.data or "",
                witness_password=form.witness_password.data or ""),
            actor=current_user, credentials=signing.credentials(form)), "witness_password")
        if outcome.done:
            flash(f"{container.code}: {DISPOSAL_OUTCOMES[form.outcome.data or '']} recorded; its custody trail ends.",
                  "success")
            return redirect(url_for("bedside.bag", code=container.code))
        status = outcome.status
        container = _bag(code)
    elif request.method == "POST":
        status = 422
    return render_template("bedside/disposal.html", form=form, container=container,
                           record=service.bag_record(container)), status

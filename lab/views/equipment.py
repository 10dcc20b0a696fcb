"""Equipment: the register, one instrument's logbook and where it was used, its label, and
taking it out of and back into service."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.file import FileField
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.forms import SigningForm
from lab.models import Equipment, utcnow
from lab.models.equipment import QUALIFICATIONS, RESULTS, WORK_KINDS, kind_title
from lab.permissions import ACTIONS, require
from lab.sent_forms import OnceForm
from lab.services import equipment as service
from lab.views import signing
from lab.views.attachments import accepts_attachment
from lab.views.common import apply_errors, item_label

bp = Blueprint("equipment", __name__, url_prefix="/equipment")

DATE_MESSAGE = "Enter a date such as 2026-11-30."


class RegisterEquipmentForm(OnceForm):
    name = StringField("Name", [Length(max=128)])
    kind = SelectField("Type", choices=[], validate_choice=False)
    serial_number = StringField("Serial number", [Length(max=64)])
    location = StringField("Location", [Length(max=128)])
    qualification = SelectField("Qualification status",
                                choices=[SelectChoice(k, v) for k, v in QUALIFICATIONS.items()], validate_choice=False)
    calibration_due = DateField("Calibration due (if it needs calibration)", [Optional()])


class LogEntryForm(OnceForm):
    kind = SelectField("Entry", choices=[SelectChoice(k, v) for k, v in WORK_KINDS.items()], validate_choice=False)
    performed_on = DateField("Done on", [Optional()])
    performed_by = StringField("Done by", [Length(max=128)])
    what = TextAreaField("What was done", [Length(max=2000)])
    result = SelectField("Result", choices=[SelectChoice(k, v) for k, v in RESULTS.items()], validate_choice=False)
    next_due = DateField("Next due (required for a passed calibration)", [Optional()])
    certificate = FileField("Certificate (PDF, PNG or JPEG)")


class OutOfServiceForm(OnceForm):
    reason = TextAreaField("Reason", [Length(max=2000)])


class ReturnToServiceForm(SigningForm):
    reason = TextAreaField("Why it may be used again", [Length(max=2000)])


def _date_errors(form: OnceForm, *names: str) -> None:
    """A date the browser sent that is not a date: say so in words next to the field."""
    for name in names:
        field = getattr(form, name)
        if field.errors:
            field.errors = [DATE_MESSAGE]


def get_or_404(code: str) -> Equipment:
    item = service.find(code)
    if item is None:
        abort(404, service.code_error(code))
    return item


def _may(action: str) -> bool:
    return bool(current_user.is_authenticated and current_user.can_act_as(*ACTIONS[action]))


@bp.route("/")
def index() -> str:
    items = db.session.scalars(select(Equipment).order_by(Equipment.kind, Equipment.name, Equipment.id)).all()
    now = utcnow()
    return render_template("equipment/index.html", items=items,
                           states={item.id: service.calibration_state(item, now) for item in items},
                           may_register=_may("register_equipment"), due_days=service.DUE_SOON_DAYS)


@bp.route("/new", methods=["GET", "POST"])
def new() -> str | Response | tuple[str, int]:
    require(current_user, "register_equipment", "register equipment")
    form = RegisterEquipmentForm()
    form.kind.choices = [SelectChoice("", "Choose…")] + [
        SelectChoice(kind, kind_title(kind)) for kind in service.equipment_kinds()]
    status = 200
    if form.validate_on_submit():
        data = service.EquipmentInput(form.name.data or "", form.kind.data or "", form.serial_number.data or "",
                                      form.location.data or "", form.qualification.data or "",
                                      form.calibration_due.data)
        try:
            item = service.register_equipment(data, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        else:
            db.session.commit()
            flash(f"{item.name} registered as {item.code}. Print its label and stick it on the instrument.",
                  "success")
            return redirect(url_for("equipment.detail", code=item.code))
    elif request.method == "POST":
        _date_errors(form, "calibration_due")
        status = 422
    return render_template("equipment/new.html", form=form), status


@bp.route("/<code>")
def detail(code: str) -> str:
    item = get_or_404(code)
    return render_template("equipment/detail.html", item=item, log=service.logbook(item),
                           usages=service.where_used(item), state=service.calibration_state(item, utcnow()),
                           may_log=_may("record_equipment_log"), may_take_out=_may("take_equipment_out_of_service"),
                           may_return=_may("return_equipment_to_service"), max_rows=service.MAX_WHERE_USED)


@bp.route("/<code>/log", methods=["GET", "POST"])
@accepts_attachment
def log(code: str) -> str | Response | tuple[str, int]:
    require(current_user, "record_equipment_log", "write in an equipment logbook")
    item = get_or_404(code)
    form = LogEntryForm()
    status = 200
    if form.validate_on_submit():
        upload = form.certificate.data
        certificate = (upload.stream, upload.filename) if upload and upload.filename else None
        data = service.LogInput(form.kind.data or "", form.performed_on.data, form.performed_by.data or "",
                                form.what.data or "", form.result.data or "", form.next_due.data, certificate)
        try:
            entry = service.record_log_entry(item, data, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
            item = get_or_404(code)
        else:
            db.session.commit()
            flash(f"{entry.kind_title} recorded in the logbook of {item.name}.", "success")
            return redirect(url_for("equipment.detail", code=item.code, _anchor="logbook"))
    elif request.method == "POST":
        _date_errors(form, "performed_on", "next_due")
        status = 422
    if request.method == "GET":
        form.performed_by.data = current_user.full_name
    return render_template("equipment/log.html", item=item, form=form), status


@bp.route("/<code>/out-of-service", methods=["GET", "POST"])
def out_of_service(code: str) -> str | Response | tuple[str, int]:
    require(current_user, "take_equipment_out_of_service", "take equipment out of service")
    item = get_or_404(code)
    form = OutOfServiceForm()
    status = 200
    if form.validate_on_submit():
        try:
            service.take_out_of_service(item, form.reason.data or "", actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
            item = get_or_404(code)
        else:
            db.session.commit()
            flash(f"{item.name} is out of service: steps refuse it until QA puts it back in service.", "success")
            return redirect(url_for("equipment.detail", code=item.code))
    elif request.method == "POST":
        status = 422
    return render_template("equipment/out_of_service.html", item=item, form=form), status


@bp.route("/<code>/return-to-service", methods=["GET", "POST"])
def return_to_service(code: str) -> str | Response | tuple[str, int]:
    require(current_user, "return_equipment_to_service", "put equipment back in service")
    item = get_or_404(code)
    form = ReturnToServiceForm()
    status = 200
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: service.return_to_service(
            item, form.reason.data or "", actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            flash(f"{item.name} is back in service (signed).", "success")
            return redirect(url_for("equipment.detail", code=item.code))
        status = outcome.status
        item = get_or_404(code)
    elif request.method == "POST":
        status = 422
    return render_template("equipment/return.html", item=item, form=form), status


@bp.route("/<code>/label.pdf")
def label(code: str) -> Response:
    item = get_or_404(code)
    return item_label("equipment_label", item.code, lambda: service.label_pdf(item))

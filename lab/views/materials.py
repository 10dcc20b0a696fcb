"""Materials: the item catalogue, receiving a lot, one lot's record (history, incoming QC,
QA's release, rejection or recall, where-used), its label and its where-used export."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.file import FileField
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice  # WTForms 3.3 deprecates (value, label) tuples
from wtforms.validators import Length, Optional

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.forms import SigningForm
from lab.models import MaterialLot, utcnow
from lab.permissions import ACTIONS, require
from lab.sent_forms import OnceForm
from lab.services import materials as service
from lab.services.signatures import record_signatures
from lab.views import signing
from lab.views.attachments import accepts_attachment
from lab.views.common import apply_errors, item_label
from workflows.codes import CheckCharacterError, identify

bp = Blueprint("materials", __name__, url_prefix="/materials")


class ItemForm(OnceForm):
    name = StringField("Item name", [Length(max=128)])
    material = StringField("Material kind (as the process definition names it, e.g. transact)", [Length(max=64)])
    supplier = StringField("Supplier", [Length(max=128)])
    catalogue_number = StringField("Catalogue number", [Length(max=64)])
    storage = StringField("Storage condition", [Length(max=128)])
    unit = StringField("Unit lots are counted in (mL, vials, sets)", [Length(max=16)])
    needs_qc = BooleanField("Incoming QC check needed before release", default=True)


class ReceiveForm(OnceForm):
    item_id = SelectField("Item", validate_choice=False)
    lot_number = StringField("Supplier's lot number", [Length(max=64)])
    expiry_date = StringField("Supplier's expiry date (YYYY-MM-DD)", [Length(max=10)])
    quantity = StringField("Quantity received (in the item's unit)", [Length(max=20)])
    container_count = StringField("Number of containers", [Length(max=10)])
    received_on = StringField("Date received (YYYY-MM-DD)", [Length(max=10)])
    titer = StringField("Titer from the certificate (TU/mL, vector lots)", [Optional(), Length(max=20)])
    certificate = FileField("Certificate of analysis (PDF, PNG or JPEG)")


class CheckForm(OnceForm):
    identity_ok = BooleanField("Identity confirmed against the certificate (item, lot number, expiry)")
    condition_ok = BooleanField("Containers intact, labels legible, received at the right temperature")
    certificate_ok = BooleanField("Certificate results conform to the supplier's specification")
    comment = TextAreaField("Comment (what was found, required when a point fails)", [Length(max=2000)])


class DecisionForm(SigningForm):
    decision = SelectField("Decision", choices=[SelectChoice("released", "Release for use"), SelectChoice("rejected", "Reject")],
                           validate_choice=False)
    reason = TextAreaField("Reason (required to reject)", [Length(max=2000)])


class RecallForm(SigningForm):
    reason = TextAreaField("Reason for the recall (e.g. the supplier's notice)", [Length(max=2000)])


def _may() -> dict[str, bool]:
    """Which of the materials actions the signed-in user may take (to show only their forms)."""
    names = ("manage_material_items", "receive_lot", "check_lot", "decide_lot")
    return {name: bool(current_user.can_act_as(*ACTIONS[name])) for name in names}


def get_lot_or_404(code: str) -> MaterialLot:
    lot = service.find_lot(code)
    if lot is None:
        try:
            identify(code)
        except CheckCharacterError as error:
            abort(404, str(error))
        except ValueError:
            pass
        abort(404, f"No material lot {code[:64]!r} is registered in this lab.")
    return lot


@bp.route("/")
def index() -> str:
    today = utcnow().date()
    lots = service.lots()
    return render_template("materials/index.html", items=service.items(), lots=lots, today=today, may=_may(),
                           reasons={lot.id: service.unusable_reason(lot, today) for lot in lots})


@bp.route("/items/new", methods=["GET", "POST"])
def new_item() -> str | Response | tuple[str, int]:
    require(current_user, "manage_material_items", "add a material item")
    form = ItemForm()
    if form.validate_on_submit():
        data = service.ItemInput(form.name.data or "", form.material.data or "", form.supplier.data or "",
                                 form.catalogue_number.data or "", form.storage.data or "", form.unit.data or "",
                                 bool(form.needs_qc.data))
        try:
            item = service.create_item(data, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
        else:
            db.session.commit()
            flash(f"{item.name} added to the catalogue.", "success")
            return redirect(url_for("materials.index", _anchor="items"))
    return render_template("materials/item_new.html", form=form), 422 if form.errors or form.form_errors else 200


@bp.route("/lots/new", methods=["GET", "POST"])
@accepts_attachment
def receive() -> str | Response | tuple[str, int]:
    require(current_user, "receive_lot", "receive a material lot")
    form = ReceiveForm()
    form.item_id.choices = [SelectChoice("", "Choose the item…")] + [
        SelectChoice(str(i.id), f"{i.name} ({i.supplier}, {i.unit})") for i in service.items()]
    if request.method == "GET":
        form.received_on.data = utcnow().date().isoformat()
        if request.args.get("item", "").isdigit():
            form.item_id.data = request.args["item"]
    if form.validate_on_submit():
        data = service.LotInput(form.item_id.data or "", form.lot_number.data or "", form.expiry_date.data or "",
                                form.quantity.data or "", form.container_count.data or "",
                                form.received_on.data or "", form.titer.data or "")
        upload = request.files.get("certificate")
        try:
            lot = service.receive_lot(data, upload.stream if upload and upload.filename else None,
                                      upload.filename if upload else None, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
        else:
            db.session.commit()
            flash(f"Lot {lot.lot_number} of {lot.name} received as {lot.code}, in QUARANTINE. Print its label and "
                  "stick it on each container.", "success")
            return redirect(url_for("materials.lot", code=lot.code))
    return render_template("materials/receive.html", form=form), 422 if form.errors or form.form_errors else 200


def _lot_page(lot: MaterialLot, *, check: CheckForm | None = None, decision: DecisionForm | None = None,
              recall: RecallForm | None = None, status: int = 200) -> tuple[str, int]:
    signatures = {d.id: record_signatures(d) for d in lot.decisions}
    return render_template("materials/lot.html", lot=lot, today=utcnow().date(), may=_may(),
                           unusable=service.unusable_reason(lot, utcnow().date()),
                           history=service.history(lot), uses=service.where_used(lot), signatures=signatures,
                           check_form=check or CheckForm(formdata=None),
                           decision_form=decision or DecisionForm(formdata=None),
                           recall_form=recall or RecallForm(formdata=None)), status


@bp.route("/lots/<code>")
def lot(code: str) -> tuple[str, int]:
    return _lot_page(get_lot_or_404(code))


@bp.route("/lots/<code>/check", methods=["POST"])
def check(code: str) -> Response | tuple[str, int]:
    lot = get_lot_or_404(code)
    require(current_user, "check_lot", "record the incoming check of a lot")
    form = CheckForm()
    if form.validate_on_submit():
        data = service.CheckInput(bool(form.identity_ok.data), bool(form.condition_ok.data),
                                  bool(form.certificate_ok.data), form.comment.data or "")
        try:
            done = service.record_check(lot, data, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
        else:
            db.session.commit()
            flash(f"Incoming check of {lot.code} recorded: {done.result}.", "success")
            return redirect(url_for("materials.lot", code=lot.code))
    return _lot_page(get_lot_or_404(code), check=form, status=422)


@bp.route("/lots/<code>/decision", methods=["POST"])
def decide(code: str) -> Response | tuple[str, int]:
    lot = get_lot_or_404(code)
    require(current_user, "decide_lot", "release or reject a material lot")
    form = DecisionForm()
    status = 422
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: service.decide_lot(
            lot, form.decision.data or "", reason=form.reason.data or "", actor=current_user,
            credentials=signing.credentials(form)))
        if outcome.done:
            words = "RELEASED for use" if lot.status == "released" else "REJECTED"
            flash(f"Lot {lot.code} {words}.", "success")
            return redirect(url_for("materials.lot", code=lot.code))
        status = outcome.status
    return _lot_page(get_lot_or_404(code), decision=form, status=status)


@bp.route("/lots/<code>/recall", methods=["POST"])
def recall(code: str) -> Response | tuple[str, int]:
    lot = get_lot_or_404(code)
    require(current_user, "decide_lot", "recall a material lot")
    form = RecallForm()
    status = 422
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: service.recall_lot(
            lot, reason=form.reason.data or "", actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            assert outcome.value is not None
            held = ", ".join(b.batch_number for b in outcome.value.held) or "none"
            released = ", ".join(b.batch_number for b in outcome.value.released) or "none"
            flash(f"Lot {lot.code} RECALLED. Open batches put on hold, each with a deviation: {held}. Released "
                  f"batches that used it, for your decision: {released}.", "success")
            return redirect(url_for("materials.lot", code=lot.code, _anchor="where-used"))
        status = outcome.status
    return _lot_page(get_lot_or_404(code), recall=form, status=status)


@bp.route("/lots/<code>/where-used.csv")
def where_used_csv(code: str) -> Response:
    lot = get_lot_or_404(code)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(service.WHERE_USED_HEADER)
    writer.writerows(service.where_used_rows(lot))
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=where-used-{lot.code}.csv"})


@bp.route("/lots/<code>/label.pdf")
def label(code: str) -> Response:
    lot = get_lot_or_404(code)
    return item_label("lot_label", lot.code, lambda: service.label_pdf(lot))

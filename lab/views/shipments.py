"""Shipments: packing a released batch into a dry shipper, the second person's verification,
the shipper label, the list and page of shipments, the receipt at the site and QA's decision
on a product quarantined there (DOMAIN §5, JOURNEYS 6)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from io import BytesIO

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from flask_wtf.file import FileField
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice  # WTForms 3.3 deprecates (value, label) tuples
from wtforms.validators import Length, Optional

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.forms import SigningForm
from lab.models import Batch, CustodyEvent, Shipment, ShipmentBag, Site, utcnow
from lab.permissions import ACTIONS, require
from lab.sent_forms import OnceForm
from lab.services import shipments as service
from lab.services import site_receipt as receipts
from lab.services.containers import CustodyMismatch, record_mismatches
from lab.services.downloads import record_download
from lab.services.progress import definition_for, lab_timezone
from lab.services.signatures import record_signatures
from lab.services.site_scope import is_clinician, require_shipment
from lab.views import signing
from lab.views.attachments import accepts_attachment
from lab.views.common import apply_errors
from labels.shipper_label import ShipperLabel, render_shipper_label
from labels.text import UnprintableText

bp = Blueprint("shipments", __name__)

SCAN = {"data-scan": True, "class": "code", "autocomplete": "off", "maxlength": 64}
MOMENT = {"type": "datetime-local"}
CODES = {"class": "code", "rows": 3, "maxlength": 2000,
         "placeholder": "Scan each bag's label: one code per line"}


class PackForm(OnceForm):
    bag_codes = TextAreaField("Product bags (scan each bag, one per line)", [Length(max=2000)], render_kw=CODES)
    shipper_code = StringField("Dry shipper (scan its label)", [Length(max=200)], render_kw=SCAN)
    logger_code = StringField("Temperature logger (scan its label)", [Length(max=200)], render_kw=SCAN)
    site_id = SelectField("Consignee (treatment site)", validate_choice=False)
    departed_at = StringField("Departure (lab time)", [Length(max=40)], render_kw=MOMENT)
    courier = StringField("Courier", [Length(max=200)])


class VerifyPackingForm(SigningForm):
    """The second person's signature only: the shipment comes from the URL."""


class ReceiveForm(SigningForm):
    shipper_scanned = StringField("Dry shipper (scan its label)", [Length(max=200)], render_kw=SCAN)
    bag_codes = TextAreaField("Bags (scan each bag, one per line)", [Length(max=2000)], render_kw=CODES)
    logger_min_c = StringField("Lowest temperature on the logger (°C)", [Length(max=40)],
                               render_kw={"inputmode": "decimal", "autocomplete": "off"})
    logger_max_c = StringField("Highest temperature on the logger (°C)", [Length(max=40)],
                               render_kw={"inputmode": "decimal", "autocomplete": "off"})
    logger_file = FileField("The logger's file (its print-out: PDF, PNG or JPEG)")
    shipper_intact = RadioField("Shipper intact, seal unbroken", choices=[SelectChoice("yes", "Yes"),
                                                                          SelectChoice("no", "No")],
                                validate_choice=False)
    arrived_at = StringField("Arrival (lab time)", [Length(max=40)], render_kw=MOMENT)
    storage = StringField("Storage at the site (tank, rack, position)", [Length(max=255)])
    comment = TextAreaField("Comment", [Optional(), Length(max=2000)])


class QuarantineDecisionForm(SigningForm):
    decision = SelectField("Decision", choices=[SelectChoice("release", "Release for use"),
                                                SelectChoice("reject", "Reject")], validate_choice=False)
    reason = TextAreaField("Reason (your assessment)", [Length(max=2000)])


def may(action: str) -> bool:
    return bool(current_user.can_act_as(*ACTIONS[action]))


def get_shipment_or_404(number: str) -> Shipment:
    """The shipment the URL names; a clinician of another site is refused (403) before anything."""
    shipment = service.find_shipment(number[:40])
    if shipment is None:
        abort(404, f"No shipment {number[:40]!r} is registered in this lab.")
    require_shipment(current_user, shipment)
    return shipment


def _local_input(moment: datetime) -> str:
    """A moment as a datetime-local field shows it, in the lab's time zone."""
    return moment.astimezone(lab_timezone()).strftime("%Y-%m-%dT%H:%M")


@bp.app_template_global()
def batch_shipments(batch: Batch) -> list[Shipment]:
    """The shipments of ``batch``, for its page."""
    return service.shipments_of_batch(batch)


# --- packing -----------------------------------------------------------------------------------

def _get_batch(batch_number: str) -> Batch:
    batch = db.session.scalar(select(Batch).where(Batch.batch_number == batch_number.strip().upper()))
    if batch is None:
        abort(404, f"No batch {batch_number[:40]!r} is registered in this lab.")
    return batch


def _pack_page(batch: Batch, form: PackForm, status: int = 200) -> tuple[str, int]:
    bags = [b for b in service.product_bags(batch) if b.status in ("in use", "stored")
            and service.packed_in(b) is None]
    return render_template("shipments/pack.html", batch=batch, form=form, bags=bags,
                           problem=service.release_problem(batch),
                           limits=definition_for(batch).shipping_temperature), status


@bp.route("/batches/<batch_number>/ship", methods=["GET", "POST"])
def pack(batch_number: str) -> Response | tuple[str, int]:
    require(current_user, "pack_shipment", "pack a shipment")
    batch = _get_batch(batch_number)
    form = PackForm()
    sites = service.consignee_choices(batch)
    form.site_id.choices = ([] if len(sites) == 1 else [SelectChoice("", "Choose the treatment site…")]) + [
        SelectChoice(str(s.id), f"{s.name} ({s.code})") for s in sites]
    if request.method == "GET":
        form.departed_at.data = _local_input(utcnow())
        return _pack_page(batch, form, 409 if service.release_problem(batch) else 200)
    if not form.validate_on_submit():
        return _pack_page(batch, form, 422)
    try:
        departed = service.parse_moment(form.departed_at.data or "", "departed_at", "Departure", lab_timezone())
        site_id = int(form.site_id.data) if (form.site_id.data or "").isdigit() else 0
        data = service.PackInput(service.split_codes(form.bag_codes.data or ""), form.shipper_code.data or "",
                                 form.logger_code.data or "", site_id, departed, form.courier.data or "")
        shipment = service.pack_shipment(batch, data, actor=current_user)
    except CustodyMismatch as error:
        db.session.rollback()
        record_mismatches(batch, error.scans, actor=current_user)
        db.session.commit()
        form.bag_codes.errors = [*form.bag_codes.errors, str(error)]
        return _pack_page(batch, form, error.status)
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return _pack_page(batch, form, error.status)
    db.session.commit()
    flash(f"Shipment {shipment.number} packed: a second person must verify the packing before it leaves.", "success")
    return redirect(url_for("shipments.detail", number=shipment.number))


# --- list and page -----------------------------------------------------------------------------

@bp.route("/shipments")
def index() -> str:
    clinician = is_clinician(current_user)
    rows = service.shipments(current_user.site_id, all_sites=not clinician)
    site = db.session.get(Site, current_user.site_id) if clinician and current_user.site_id else None
    return render_template("shipments/index.html", shipments=rows, clinician=clinician, site=site)


def _page(shipment: Shipment, *, verify: VerifyPackingForm | None = None,
          decision: QuarantineDecisionForm | None = None, status: int = 200) -> tuple[str, int]:
    custody = db.session.scalars(
        select(CustodyEvent).where(CustodyEvent.container_id.in_(
            select(ShipmentBag.container_id).where(ShipmentBag.shipment_id == shipment.id)),
            CustodyEvent.event.in_((service.PACK_EVENT, receipts.RECEIVE_EVENT)))
        .order_by(CustodyEvent.id)).all()
    signatures = {"shipment": record_signatures(shipment),
                  "receipt": record_signatures(shipment.receipt) if shipment.receipt else [],
                  "decisions": {d.id: record_signatures(d) for d in shipment.decisions}}
    usable = {bag.container_id: receipts.usable_at_site(bag.container) for bag in shipment.bags}
    can = {
        "verify": may("verify_packing") and shipment.status == "packed" and shipment.packed_by_id != current_user.id,
        "receive": may("receive_shipment") and shipment.status == "in_transit",
        "decide": may("decide_site_quarantine") and shipment.status == "quarantined",
        "batch": not is_clinician(current_user),
    }
    return render_template("shipments/detail.html", shipment=shipment, custody=custody, signatures=signatures,
                           usable=usable, can=can, shipping_range=receipts.shipping_range(shipment),
                           verify_form=verify or VerifyPackingForm(formdata=None),
                           decision_form=decision or QuarantineDecisionForm(formdata=None)), status


@bp.route("/shipments/<number>")
def detail(number: str) -> tuple[str, int]:
    return _page(get_shipment_or_404(number))


@bp.route("/shipments/<number>/verify", methods=["POST"])
def verify(number: str) -> Response | tuple[str, int]:
    require(current_user, "verify_packing", "verify the packing of a shipment")  # before the lookup: 403 whatever
    shipment = get_shipment_or_404(number)
    form = VerifyPackingForm()
    status = 422
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: service.verify_packing(
            shipment, actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            flash(f"Packing of {shipment.number} verified: the shipment is IN TRANSIT and batch "
                  f"{shipment.batch.batch_number} is shipped.", "success")
            return redirect(url_for("shipments.detail", number=shipment.number))
        status = outcome.status
    return _page(get_shipment_or_404(number), verify=form, status=status)


@bp.route("/shipments/<number>/decision", methods=["POST"])
def decide(number: str) -> Response | tuple[str, int]:
    require(current_user, "decide_site_quarantine", "decide on a product quarantined at a site")
    shipment = get_shipment_or_404(number)
    form = QuarantineDecisionForm()
    status = 422
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: receipts.decide_quarantine(
            shipment, decision=form.decision.data or "", reason=form.reason.data or "", actor=current_user,
            credentials=signing.credentials(form)))
        if outcome.done:
            words = "RELEASED for use at the site" if shipment.status == "received" else "REJECTED"
            flash(f"Shipment {shipment.number} {words}.", "success")
            return redirect(url_for("shipments.detail", number=shipment.number))
        status = outcome.status
    return _page(get_shipment_or_404(number), decision=form, status=status)


# --- the shipper label -------------------------------------------------------------------------

def label_data(shipment: Shipment) -> ShipperLabel:
    batch, site = shipment.batch, shipment.site
    return ShipperLabel(
        number=shipment.number, coi=batch.patient.coi, batch_number=batch.batch_number,
        patient_ref=batch.patient.patient_ref, product=definition_for(batch).product,
        consignee_name=site.name, consignee_code=site.code, consignee_address=site.address,
        consignee_contact=site.contact, bag_codes=[bag.container.code for bag in shipment.bags],
        shipping_range=receipts.shipping_range(shipment), shipper_code=shipment.shipper_code,
        logger_code=shipment.logger_code, courier=shipment.courier,
        departed_at=shipment.departed_at.astimezone(lab_timezone()),
        printed_at=utcnow().astimezone(lab_timezone()), sender=str(current_app.config["FACILITY_NAME"]))


@bp.route("/shipments/<number>/label.pdf")
def label(number: str) -> Response:
    shipment = get_shipment_or_404(number)
    try:
        pdf = render_shipper_label(label_data(shipment))
    except (UnprintableText, ValueError) as error:
        abort(422, f"The shipper label of {shipment.number} cannot be printed: {error}")
    record_download(current_user, "shipper_label", batch=shipment.batch, digest=hashlib.sha256(pdf).hexdigest(),
                    detail=shipment.number)
    db.session.commit()
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"shipper-{shipment.number}.pdf",
                     max_age=0)


# --- receipt at the site -----------------------------------------------------------------------

def _receive_page(shipment: Shipment, form: ReceiveForm, status: int = 200) -> tuple[str, int]:
    return render_template("shipments/receive.html", shipment=shipment, form=form,
                           shipping_range=receipts.shipping_range(shipment)), status


def _receipt_work(shipment: Shipment, form: ReceiveForm) -> Callable[[], object]:
    def work() -> object:
        errors: dict[str, str] = {}
        try:
            arrived = service.parse_moment(form.arrived_at.data or "", "arrived_at", "Arrival", lab_timezone())
        except InvalidInput as error:
            errors.update(error.errors)
        upload = request.files.get("logger_file")
        if not upload or not upload.filename:
            errors["logger_file"] = "Attach the logger's print-out (PDF, PNG or JPEG)."
        if form.shipper_intact.data not in ("yes", "no"):
            errors["shipper_intact"] = "Say whether the shipper arrived intact."
        if errors or upload is None:
            raise InvalidInput("Nothing was received: correct the fields marked.", errors)
        data = receipts.ReceiptInput(form.shipper_scanned.data or "", service.split_codes(form.bag_codes.data or ""),
                                     form.logger_min_c.data or "", form.logger_max_c.data or "",
                                     form.shipper_intact.data == "yes", arrived, form.storage.data or "",
                                     form.comment.data or "")
        logger_file = receipts.store_logger_file(upload.stream, upload.filename, actor=current_user)
        return receipts.receive_shipment(shipment, data, logger_file=logger_file, actor=current_user,
                                         credentials=signing.credentials(form))
    return work


@bp.route("/shipments/<number>/receive", methods=["GET", "POST"])
@accepts_attachment
def receive(number: str) -> Response | tuple[str, int]:
    require(current_user, "receive_shipment", "receive a shipment")
    shipment = get_shipment_or_404(number)
    form = ReceiveForm()
    if request.method == "GET":
        if shipment.status != "in_transit":
            form.form_errors.append(_not_receivable(shipment))
            return _receive_page(shipment, form, 409)
        form.arrived_at.data = _local_input(utcnow())
        return _receive_page(shipment, form)
    if not form.validate_on_submit():
        return _receive_page(shipment, form, 422)
    try:
        outcome = signing.attempt(form, _receipt_work(shipment, form), passthrough=(CustodyMismatch,))
    except CustodyMismatch as error:
        db.session.rollback()
        record_mismatches(shipment.batch, error.scans, actor=current_user)
        db.session.commit()
        form.bag_codes.errors = [*form.bag_codes.errors, str(error)]
        return _receive_page(get_shipment_or_404(number), form, error.status)
    if not outcome.done:
        return _receive_page(get_shipment_or_404(number), form, outcome.status)
    if shipment.status == "quarantined":
        why = shipment.receipt.quarantine_reason if shipment.receipt else ""
        flash(f"Shipment {shipment.number} received but QUARANTINED at the site: {why}. Do not use these bags "
              "until QA decides.", "error")
    else:
        flash(f"Shipment {shipment.number} received: the bags are in site storage.", "success")
    return redirect(url_for("shipments.detail", number=shipment.number))


def _not_receivable(shipment: Shipment) -> str:
    if shipment.status == "packed":
        return (f"Shipment {shipment.number} has not been verified yet: it cannot have left the lab. Call the lab "
                "before you use anything in this shipper.")
    return f"Shipment {shipment.number} was already received ({shipment.status.replace('_', ' ')})."


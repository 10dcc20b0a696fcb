"""Patients: registration, the list, one patient's batches, and correcting the weight."""

from __future__ import annotations

import math
from io import BytesIO

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.forms import RegisterPatientForm, StartBatchForm, WeightCorrectionForm
from lab.models import Patient, utcnow
from lab.permissions import require, require_role
from lab.services.batches import start_batch
from lab.services.coi_report import coi_snapshot, issue_coi_report, patient_by_coi, require_reader
from lab.services.patients import WEIGHT_CORRECTORS, PatientInput, correct_weight, register_patient
from lab.services.processes import definition_of, effective_versions
from lab.services.site_scope import require_patient
from lab.services.sites import site_id_from
from lab.views import signing
from lab.views.common import apply_errors
from lab.views.sites import site_choices
from labels.coi_report import render_coi_report
from labels.record_data import Issue
from labels.text import UnprintableText
from workflows.formatting import format_weight

bp = Blueprint("patients", __name__, url_prefix="/patients")


def _dose(text: str | None) -> float | None:
    """The target dose typed at scheduling (e-notation allowed); None when left empty (the default)."""
    text = (text or "").strip().replace("×10^", "e").replace(" ", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput("The batch was not scheduled.", {
            "target_dose": f"{text[:40]!r} is not a number: write it as 2e6 for 2 × 10⁶."}) from None
    if not math.isfinite(value):
        raise InvalidInput("The batch was not scheduled.", {"target_dose": "Enter a finite number."})
    return value


def get_patient_or_404(patient_ref: str) -> Patient:
    patient = db.session.scalar(select(Patient).where(Patient.patient_ref == patient_ref.upper()))
    if patient is None:
        abort(404, f"No patient {patient_ref!r} is registered in this lab.")
    return patient


@bp.route("/")
def index() -> str:
    query = select(Patient).options(joinedload(Patient.treating_site)).order_by(Patient.registered_at.desc())
    if current_user.role == "clinician":  # a clinician sees their own site's patients only
        query = query.where(Patient.treating_site_id == current_user.site_id)
    patients = db.session.scalars(query).all()
    return render_template("patients/index.html", patients=patients)


@bp.route("/new", methods=["GET", "POST"])
def new() -> str | Response | tuple[str, int]:
    require(current_user, "register_patient", "register a patient")
    form = RegisterPatientForm()
    form.treating_site.choices = site_choices("Not known yet")
    if form.validate_on_submit():
        assert form.date_of_birth.data is not None and form.weight_kg.data is not None  # InputRequired
        try:
            data = PatientInput(form.patient_ref.data or "", form.initials.data or "", form.date_of_birth.data,
                                form.weight_kg.data, form.indication.data or "",
                                site_id_from(form.treating_site.data, field="treating_site",
                                             what="The patient was not registered."))
            patient = register_patient(data, actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
        else:
            db.session.commit()
            flash(f"Patient {patient.patient_ref} registered with COI {patient.coi}.", "success")
            return redirect(url_for("patients.detail", patient_ref=patient.patient_ref))
    return render_template("patients/new.html", form=form), 422 if form.errors else 200


def _schedule_page(patient: Patient, form: StartBatchForm) -> str:
    """The patient's page with the scheduling form: the products whose process version is
    effective now, each with the target dose range its definition allows."""
    products = [(version, definition_of(version)) for version in effective_versions()]
    form.product.choices = [SelectChoice(v.key, f"{d.product} ({v.key}, version {v.version})") for v, d in products]
    return render_template("patients/detail.html", patient=patient, form=form, products=products)


@bp.route("/<patient_ref>")
def detail(patient_ref: str) -> str:
    patient = get_patient_or_404(patient_ref)
    require_patient(current_user, patient)  # a clinician: their own site's patients only
    return _schedule_page(patient, StartBatchForm())


@bp.route("/<patient_ref>/weight", methods=["GET", "POST"])
def weight(patient_ref: str) -> str | Response | tuple[str, int]:
    patient = get_patient_or_404(patient_ref)
    require_role(current_user, WEIGHT_CORRECTORS, "correct a patient's weight")
    form = WeightCorrectionForm()
    status = 200
    if form.validate_on_submit():
        assert form.weight_kg.data is not None  # InputRequired
        new_weight = form.weight_kg.data
        outcome = signing.attempt(form, lambda: correct_weight(
            patient, new_weight, reason=form.reason.data or "", actor=current_user,
            credentials=signing.credentials(form)))
        if outcome.done:
            flash(f"Weight of {patient.patient_ref} corrected to {format_weight(patient.weight_kg)}; "
                  "the old value stays on record and the patient's batches were recomputed.", "success")
            return redirect(url_for("patients.detail", patient_ref=patient.patient_ref, _anchor="weight"))
        status = outcome.status
        patient = get_patient_or_404(patient_ref)
    elif request.method == "POST":
        status = 422
    return render_template("patients/weight.html", patient=patient, form=form), status


@bp.route("/<patient_ref>/batches", methods=["POST"])
def start(patient_ref: str) -> Response | tuple[str, int]:
    patient = get_patient_or_404(patient_ref)
    form = StartBatchForm()
    if not form.validate_on_submit():
        if form.target_dose.errors:
            form.target_dose.errors = ["Use at most 40 characters."]
            return _schedule_page(patient, form), 422
        abort(400, "The form expired; reload the page and try again.")
    try:
        batch = start_batch(patient, actor=current_user, process_key=form.product.data or None,
                            target_dose=_dose(form.target_dose.data))
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return _schedule_page(get_patient_or_404(patient_ref), form), error.status
    db.session.commit()
    flash(f"Batch {batch.batch_number} scheduled for {patient.patient_ref}.", "success")
    return redirect(url_for("batches.detail", batch_number=batch.batch_number))


@bp.route("/<coi>/coi-report.pdf")
def coi_report(coi: str) -> Response:
    """The patient's chain-of-identity report: a supervisor, QA officer or auditor, or a
    clinician of the patient's treating site (403 otherwise). It issues (stores and logs) the
    report, and the batch record versions it names, so that scanning it verifies like the record."""
    patient = patient_by_coi(coi)
    if patient is None:
        abort(404, f"No patient with COI {coi!r} is registered in this lab.")
    require_reader(current_user, patient)
    now = utcnow()
    copy = coi_snapshot(patient)
    try:
        pdf = render_coi_report(copy.report, Issue(current_user.full_name, now))
    except UnprintableText as error:
        abort(422, f"The chain-of-identity report cannot be printed: {error}")
    for attempt in (1, 2):  # once more if another first download of this version was stored meanwhile
        try:
            issue_coi_report(patient, copy, actor=current_user, now=now)
            db.session.commit()
            break
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"COI-report-{patient.coi}.pdf",
                     max_age=0, as_attachment=True)

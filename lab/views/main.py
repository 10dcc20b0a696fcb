"""Sign-in, the dashboard and the scan box."""

from __future__ import annotations

from datetime import date
from urllib.parse import unquote, urlencode, urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from lab.extensions import db
from lab.forms import LoginForm
from lab.models import Batch, Container, Equipment, MaterialLot, Patient, Shipment, StepEntry, utcnow
from lab.services.alerts import quality_alerts
from lab.services.clinic_dashboard import clinic_dashboard
from lab.services.dashboard import TASKS_SHOWN
from lab.services.dashboard import dashboard as build_dashboard
from lab.services.lab_alerts import lab_alerts
from lab.services.progress import batch_progress, definition_for, equipment_info, lab_timezone, lot_info
from lab.services.record_marks import cache, mark_of, newest_entry
from lab.services.sign_in import sign_in
from lab.services.site_scope import is_clinician
from labels.digest import DigestError, scanned_digest
from workflows.codes import CodeError, CodeKind, identify
from workflows.engine import can_start, equipment_unusable, lot_unusable

bp = Blueprint("main", __name__)


#: Percent-decodings of ``next`` checked: more layers than any browser or proxy undoes.
_DECODINGS = 3


def _is_local_path(text: str) -> bool:
    """A path on this site: one leading slash, no scheme or host, no backslash, no control
    or whitespace character (browsers drop tabs and newlines, so ``/<tab>/host`` is ``//host``)."""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return False
    if any(char.isspace() or not char.isprintable() for char in text):
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: ``target`` if it and each of its percent-decodings is a
    path on this site (no open redirect), else the dashboard."""
    if not target:
        return url_for("main.dashboard")
    text = target
    for _ in range(_DECODINGS):
        if not _is_local_path(text):
            return url_for("main.dashboard")
        text = unquote(text)
    return target if _is_local_path(text) else url_for("main.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = LoginForm()
    if form.validate_on_submit():
        outcome = sign_in(form.username.data or "", form.password.data or "", request.remote_addr or "")
        db.session.commit()  # the sign-in, or the refused attempt
        user = outcome.user
        if user is not None:
            login_user(user)
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append(outcome.message)
        return render_template("main/login.html", form=form), outcome.status
    status = 401 if request.method == "POST" else 200
    return render_template("main/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Response:
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("main.login"))


@bp.route("/")
def dashboard() -> str:
    if is_clinician(current_user):  # the clinic's own dashboard: their site's shipments, products, notices
        return render_template("clinic/dashboard.html", clinic=clinic_dashboard(current_user))
    user = current_user._get_current_object()  # read per batch: not through the proxy
    return render_template("main/dashboard.html", board=build_dashboard(user), alerts=quality_alerts(),
                           lab=lab_alerts(user, utcnow()), tasks_shown=TASKS_SHOWN)


def _where_container_is_needed(container_id: int) -> str:
    """The step that may be recorded now and scans this kind of container, with the code
    filled in; else the container's own page."""
    entries = selectinload(Container.batch).selectinload(Batch.entries)
    container = db.session.scalars(  # with all that the batch's progress reads (signatures name the performer)
        select(Container).where(Container.id == container_id)
        .options(entries.selectinload(StepEntry.values), entries.selectinload(StepEntry.performed_by))).one()
    batch = container.batch
    definition = definition_for(batch)
    progress = batch_progress(batch, definition)
    for step in definition.steps:
        fields = [f for f in step.handoffs if f.container == container.kind]
        if fields and can_start(definition, step.key, progress, batch.state) is None:
            step_url = url_for("batches.record", batch_number=batch.batch_number, step_key=step.key)
            return f"{step_url}?{urlencode({f'field-{fields[0].key}': container.code})}"
    return url_for("containers.detail", code=container.code)


def _lot_state(lot: MaterialLot, today: date) -> str:
    """Why a step would refuse ``lot``, in the capitals the bench reads first ("" when usable)."""
    reason = lot_unusable(lot_info(lot), today)
    if reason == "expired":
        return f"EXPIRED on {lot.expiry_date.isoformat()}"
    if reason == "quarantined":
        return "QUARANTINED, not released for use"
    return reason.upper()


def _equipment_state(item: Equipment, today: date) -> str:
    """Why a step would refuse the instrument, in capitals ("" when usable)."""
    reason = equipment_unusable(equipment_info(item), today)
    if reason == "out of service" and item.out_of_service_reason:
        return f"OUT OF SERVICE ({item.out_of_service_reason})"
    if reason == "calibration overdue":
        return f"CALIBRATION OVERDUE since {item.calibration_due.isoformat()}"  # type: ignore[union-attr]
    return reason.upper()


def _inventory_scanned(text: str) -> str | None:
    """A lot or equipment label scanned into the search box (the wrong place): say what it is
    and where it belongs, instead of "not a CellTrail code"; one a step would refuse is named
    for why first (EXPIRED, QUARANTINED, OUT OF SERVICE...), so it is set aside, not carried to a step."""
    code = text.strip().upper()
    today = utcnow().astimezone(lab_timezone()).date()
    lot = db.session.scalar(select(MaterialLot).where(MaterialLot.code == code))
    if lot is not None:
        state = _lot_state(lot, today)
        if state:
            return f"{code} is a material lot ({lot.name}), {state}: do not use it."
        return (f"{code} is a material lot ({lot.name}, expires {lot.expiry_date.isoformat()}). Scan it into the "
                "lot field of the step you are recording, not into the search box.")
    item = db.session.scalar(select(Equipment).where(Equipment.code == code))
    if item is not None:
        state = _equipment_state(item, today)
        if state:
            return f"{code} is equipment ({item.name}), {state}: do not use it."
        return (f"{code} is equipment ({item.name}). Scan it into the equipment field of the step you are "
                "recording, not into the search box.")
    return None


def _wants_json() -> bool:
    """The scan box's script asks for JSON, to answer a refusal under the box without leaving the page."""
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


@bp.route("/scan")
def scan() -> tuple[Response, int]:
    """Open what a scanned or typed code names: a container (at the step that needs it), a
    batch, a patient's COI, or the verification of a printed batch record (its digest QR).
    Accepts a bare code, a QR payload or a URL ending in a code.

    Asked for JSON (the scan box's script), answers ``{"location": url}`` for a code it opens and
    ``{"refusal": text}`` with the refusal's 4xx; otherwise a redirect, or the refusal's page."""
    try:
        location = _scanned_location(request.args.get("code", ""))
    except HTTPException as refusal:
        if not _wants_json():
            raise
        answer, status = jsonify(refusal=refusal.description), refusal.code or 400
    else:
        answer, status = (jsonify(location=location), 200) if _wants_json() else (redirect(location), 302)
    answer.vary.add("Accept")  # one address, two answers: a cache must keep them apart
    return answer, status


#: Scan destinations kept per process: (batch, mark, container)s.
SCANS_KEPT = 1024


def _scanned_location(text: str) -> str:
    """Where the scanned ``text`` leads; aborts with the reason when it leads nowhere."""
    if not text.strip():
        abort(400, "Scan or type a batch number or COI.")
    compact = text.strip().rstrip("/").rsplit("/", 1)[-1]  # a URL ending in a code
    if compact.upper().startswith("SHP-"):  # a shipper label's QR: its shipment (issue 15)
        if db.session.scalar(select(Shipment.id).where(Shipment.number == compact.upper())) is None:
            abort(404, f"No shipment {compact.upper()[:40]} is registered in this lab.")
        return url_for("shipments.detail", number=compact.upper())
    try:
        digest = scanned_digest(text)  # the QR (or digest) of a printed batch record
        if digest is not None:
            return url_for("records.verify", text=digest)
        parsed = identify(compact)
    except (CodeError, DigestError) as error:
        abort(400, _inventory_scanned(compact) or str(error))
    code, kind = str(parsed), parsed.kind
    if kind is CodeKind.CONTAINER:
        found = db.session.execute(select(Container.id, Container.batch_id, newest_entry(Container.batch_id),
                                          Batch.version).join(Container.batch).where(Container.code == code)).first()
        if found is None:
            abort(404, f"No container {code} is registered in this lab.")
        if is_clinician(current_user):  # at the site: the bag's own page (its check, infusion, disposal)
            return url_for("bedside.bag", code=code)
        container_id, batch_id, entry, version = found  # the mark, read before the record: lab.services.record_marks
        # Where a scan of a container leads depends on its batch's record alone.
        return cache("scan_destinations", SCANS_KEPT).get(batch_id, mark_of(entry, version),
                                                          lambda: _where_container_is_needed(container_id), container_id)
    if kind is CodeKind.EQUIPMENT:  # an equipment label scanned into the search box
        said = _inventory_scanned(code)
        abort(400 if said else 404, said or f"No equipment {code} is registered in this lab.")
    if kind is CodeKind.LOT:  # a lot label scanned into the search box
        said = _inventory_scanned(code)
        abort(400 if said else 404, said or f"No material lot {code} is registered in this lab.")
    if kind is CodeKind.BATCH:
        if is_clinician(current_user):
            abort(403, "A batch's manufacturing record is the lab's: scan the bag's label, the shipper's label or "
                       "the patient's wristband.")
        if db.session.scalar(select(Batch.id).where(Batch.batch_number == code)) is None:
            abort(404, f"No batch {code} is registered in this lab.")
        return url_for("batches.detail", batch_number=code)
    patient = db.session.scalar(select(Patient).where(Patient.coi == code))
    if patient is None:
        abort(404, f"No patient with COI {code} is registered in this lab.")
    return url_for("patients.detail", patient_ref=patient.patient_ref)

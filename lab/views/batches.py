"""The batch page, and recording, correcting and verifying its steps."""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from lab.exceptions import StepNotAllowed
from lab.extensions import db
from lab.forms import CorrectionForm, StepEntryForm, VerifyForm
from lab.models import Batch, Container, Patient, StepEntry, StepValue
from lab.permissions import require_role
from lab.services.batches import with_batch_dose
from lab.services.containers import computed_creates, record_mismatches
from lab.services.expansion import expansion_chart
from lab.services.progress import batch_overview, batch_progress, current_step, definition_for, entry_view
from lab.services.record_marks import cache, mark_of, newest_entry
from lab.services.release_status import quality_record
from lab.services.signatures import current_values
from lab.services.step_context import step_context
from lab.services.steps import EntryRefused, correct_value, record_step, self_verification, verify_entry
from lab.services.submissions import pending_of, recorded_from
from lab.services.timeline import batch_timeline
from lab.views import signing
from lab.views.submissions import submission_named, view_of
from labels.chart import expansion_svg
from workflows.codes import CodeError, CodeKind, parse_code
from workflows.engine import can_start
from workflows.engine_types import EntryResult
from workflows.model import StepSpec

bp = Blueprint("batches", __name__, url_prefix="/batches")
#: Rendered batch pages kept per process, each at most this many (batch, mark, viewer)s.
PAGES_KEPT = 128


def batch_code(batch_number: str) -> str:
    """The batch number in the URL, canonical: 400 for a malformed one or a wrong check character."""
    try:
        return str(parse_code(batch_number, CodeKind.BATCH))
    except CodeError as error:
        abort(400, str(error))


def get_batch_or_404(batch_number: str, *, prints: bool = True, rows: bool = True) -> Batch:
    """The batch named in the URL, with its entries (their performers, values, lots and instruments), containers
    (and their label prints, unless ``prints`` is False: the batch page counts them in a query of
    its own), deviations and patient loaded in a fixed number of queries. With ``rows`` False, the
    batch and its patient alone: for a caller whose services load what they read (the record,
    most often kept per mark, reads no row at all)."""
    code = batch_code(batch_number)
    entries = selectinload(Batch.entries)
    values = entries.selectinload(StepEntry.values)
    containers = selectinload(Batch.containers)
    loaded = (entries.selectinload(StepEntry.performed_by), values.selectinload(StepValue.lot),
              values.selectinload(StepValue.equipment),
              containers.selectinload(Container.prints) if prints else containers,
              selectinload(Batch.deviations), selectinload(Batch.patient).selectinload(Patient.batches))
    batch = db.session.scalar(select(Batch).where(Batch.batch_number == code)
                              .options(*(loaded if rows else (selectinload(Batch.patient),))))
    if batch is None:
        _not_registered(code)
    return batch


def _not_registered(code: str) -> NoReturn:
    abort(404, f"No batch {code} is registered in this lab.")


def get_step_or_404(batch: Batch, step_key: str) -> StepSpec:
    try:
        return definition_for(batch).step(step_key)
    except KeyError:
        abort(404, f"Process {batch.definition.key} v{batch.definition.version} has no step {step_key!r}.")


def get_entry_or_404(batch: Batch, entry_id: int) -> StepEntry:
    entry = next((e for e in batch.entries if e.id == entry_id), None)
    if entry is None:
        abort(404, f"Batch {batch.batch_number} has no entry {entry_id}.")
    return entry


@bp.route("/<batch_number>")
def detail(batch_number: str) -> str:
    """The batch's page. What it shows of the batch depends on its record and on who reads it
    (their role says what they may do, their id whether they may verify an entry), so it is
    rendered once per mark and viewer; a refused label print's form, as typed, is this request's alone."""
    code = batch_code(batch_number)
    found = db.session.execute(select(Batch.id, newest_entry(Batch.id), Batch.version)
                               .where(Batch.batch_number == code)).first()
    if found is None:
        _not_registered(code)
    batch_id, entry, version = found  # the mark, read before the record: see lab.services.record_marks
    if g.get("label_refusal") is not None:
        record = _record(code)
    else:
        record = cache("batch_pages", PAGES_KEPT).get(batch_id, mark_of(entry, version), lambda: _record(code),
                                                       current_user.id, current_user.role, current_user.is_active)
    return render_template("batches/detail.html", batch_number=code, record=record)


def _record(code: str) -> Markup:
    """The batch page's content: steps, containers, shipments, expansion, quality, timeline, audit."""
    batch = get_batch_or_404(code, prints=False)
    overview, quality = batch_overview(batch), quality_record(batch)
    expansion = expansion_chart(batch, overview.definition)
    return Markup(render_template(
        "batches/_record.html", overview=overview, quality=quality, current=current_step(overview.steps),
        timeline=batch_timeline(overview, quality), expansion=expansion, waiting=[view_of(s) for s in pending_of(batch)],
        expansion_svg=Markup(expansion_svg(expansion)) if expansion else None))


@bp.route("/<batch_number>/steps/<step_key>", methods=["GET", "POST"])
def record(batch_number: str, step_key: str) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    step = get_step_or_404(batch, step_key)
    require_role(current_user, step.role, f"record {step.title}")
    form = StepEntryForm(batch_version=batch.version)
    submission = submission_named(batch, "step", step_key)  # values an instrument sent, to check and sign
    raw = {f.key: request.form.get(f"field-{f.key}", "") for f in step.fields}
    if request.method == "GET":  # defaults, or what a scan filled in (/scan of a container)
        raw = {f.key: request.args.get(f"field-{f.key}", f.default or "")[:200] for f in step.fields}
        raw = with_batch_dose(batch, step, {**raw, **(submission.values if submission else {})})  # the dose chosen at scheduling, not typed again
        definition = definition_for(batch)
        blocked = can_start(definition, step_key, batch_progress(batch, definition), batch.state)
        if blocked:
            raise StepNotAllowed(blocked)
        return render_template("batches/record.html", batch=batch, step=step, form=form, raw=raw,
                               errors={}, result=None, definition=definition,
                               step_info=step_context(batch, definition, step), submission=submission)
    errors: dict[str, str] = {}
    result: EntryResult | None = None
    status = 422
    if form.validate_on_submit():
        try:
            outcome = signing.attempt(form, lambda: recorded_from(submission, lambda opened: record_step(
                batch, step_key, raw, comment=form.comment.data or "", expected_version=form.batch_version.data,
                actor=current_user, credentials=signing.credentials(form), opened=opened), actor=current_user),
                passthrough=(EntryRefused,))
        except EntryRefused as error:
            db.session.rollback()
            errors, result = error.errors, error.result
            form.form_errors.append(str(error))
            if error.scans:  # the refused hand-off's scans stay in the custody trail
                record_mismatches(batch, error.scans, actor=current_user)
                db.session.commit()
                status = error.status
        else:
            if outcome.done:
                flash(f"{step.title} recorded for {batch.batch_number} and signed by {current_user.full_name}.",
                      "success")
                return redirect(url_for("batches.detail", batch_number=batch.batch_number,
                                        _anchor=f"step-{step_key}"))
            status = outcome.status
    batch = get_batch_or_404(batch_number)
    if status == 409:
        form.show_version(batch.version)
    if "comment" in errors:
        form.comment.errors = [errors.pop("comment")]
    definition = definition_for(batch)
    return render_template("batches/record.html", batch=batch, step=step, form=form, raw=raw, errors=errors,
                           result=result, definition=definition, step_info=step_context(batch, definition, step),
                           submission=submission), status


@bp.route("/<batch_number>/entries/<int:entry_id>/fields/<field_key>/correct", methods=["GET", "POST"])
def correct(batch_number: str, entry_id: int, field_key: str) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    entry = get_entry_or_404(batch, entry_id)
    step = get_step_or_404(batch, entry.step_key)
    try:
        spec = step.field(field_key)
    except KeyError:
        abort(404, f"{step.title} has no field {field_key!r}.")
    require_role(current_user, step.role, f"correct {step.title}")
    form = CorrectionForm(batch_version=batch.version)
    status = 200
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: correct_value(
            batch, entry, field_key, form.value.data or "", reason=form.reason.data or "",
            expected_version=form.batch_version.data, actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            assert outcome.value is not None
            flash(f"{spec.label} corrected; the old value stays on record.", "success")
            reconcile = [d.number for d in batch.deviations
                         if d.source == "correction" and d.opened_at == outcome.value.recorded_at]
            if reconcile:
                flash(f"Containers made from this value no longer match it: {', '.join(reconcile)} names them; "
                      "reconcile them and print their labels again.", "error")
            return redirect(url_for("batches.detail", batch_number=batch.batch_number, _anchor=f"step-{step.key}"))
        status = outcome.status
        batch = get_batch_or_404(batch_number)
        entry = get_entry_or_404(batch, entry_id)
        if status == 409:
            form.show_version(batch.version)
    elif request.method == "POST":
        status = 422
    current = current_values(entry).get(field_key)
    history = [v for v in entry.values if v.field_key == field_key]
    made = [c for c in batch.containers if c.created_entry_id == entry.id
            and c.kind in {create.kind for create in computed_creates(step)}]
    return render_template("batches/correct.html", batch=batch, entry=entry, step=step, spec=spec, form=form,
                           current=current, history=history, made=made), status


@bp.route("/<batch_number>/entries/<int:entry_id>/verify", methods=["GET", "POST"])
def verify(batch_number: str, entry_id: int) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    entry = get_entry_or_404(batch, entry_id)
    step = get_step_or_404(batch, entry.step_key)
    require_role(current_user, step.verifier_role, f"verify {step.title}")
    refusal = self_verification(entry, current_user)
    if refusal:  # said before a password is typed, not after
        abort(403, refusal)
    form = VerifyForm(batch_version=batch.version)
    status = 200
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: verify_entry(
            batch, entry, credentials=signing.credentials(form), expected_version=form.batch_version.data,
            actor=current_user))
        if outcome.done:
            flash(f"{step.title} verified and signed by {current_user.full_name}.", "success")
            # to the entry itself: now verified, it is folded, and the browser opens it at its anchor
            return redirect(url_for("batches.detail", batch_number=batch.batch_number, _anchor=f"entry-{entry.id}"))
        status = outcome.status
        batch = get_batch_or_404(batch_number)
        entry = get_entry_or_404(batch, entry_id)
        form.show_version(batch.version)
    elif request.method == "POST":
        status = 422
    view = entry_view(batch, entry)
    return render_template("batches/verify.html", batch=batch, step=step, view=view, form=form), status

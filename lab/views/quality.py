"""Release testing, QA review by exception, disposition, the certificate of analysis and the release
for infusion certificate."""

from __future__ import annotations

from collections.abc import Iterable
from io import BytesIO

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from lab.exceptions import InvalidInput, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Deviation, QcResult, utcnow
from lab.permissions import ACTIONS, require, require_role
from lab.quality_forms import DecisionForm, ResultCorrectionForm, ResultForm
from lab.services.disposition import EXCEPTIONAL_FIELDS, DecisionInput, decide, decisions_now
from lab.services.downloads import record_download
from lab.services.progress import definition_for
from lab.services.record_issue import snapshot
from lab.services.records import coa_data
from lab.services.release_status import (
    as_current,
    current_results,
    quality_record,
    release_basis,
)
from lab.services.results import correct_result, record_computed_result, record_result
from lab.services.review import review_batch
from lab.services.rfic import rfic_data
from lab.services.submissions import Opened, recorded_from
from lab.views import signing
from lab.views.batches import get_batch_or_404
from lab.views.records import issue_copy
from lab.views.submissions import submission_named
from labels.coa import render_coa
from labels.digest import sha256_hex
from labels.rfic import render_rfic
from labels.text import UnprintableText
from workflows.formatting import format_quantity
from workflows.model import DecisionSpec, ProcessDefinition, ReleaseTestSpec
from workflows.release import basis_refusal, result_refusal, spec_text

bp = Blueprint("quality", __name__)


def _test_or_404(definition: ProcessDefinition, key: str) -> ReleaseTestSpec:
    try:
        return definition.release_test(key)
    except KeyError:
        abort(404, f"Process {definition.key} v{definition.version} has no release test {key!r}.")


@bp.route("/batches/<batch_number>/results")
def results(batch_number: str) -> tuple[str, int]:
    return _results_page(get_batch_or_404(batch_number))


def _results_page(batch: Batch, posted: tuple[str, ResultForm] | None = None, status: int = 200) -> tuple[str, int]:
    """The release panel, one row per test. For a QC analyst each test that takes a result now
    carries its own form (its own one-time token): a value and the signature, or None where
    the test needs the full form (a value computed from the batch record, to be checked);
    ``waiting`` says why a test cannot be judged yet. ``posted`` is the row form just refused,
    shown again with its errors; ``unplaced`` is that form when its row no longer takes a result."""
    definition = definition_for(batch)
    record = quality_record(batch, definition)
    forms: dict[str, ResultForm | None] = {}
    waiting: dict[str, str] = {}
    if current_user.can_act_as(*ACTIONS["record_result"]):
        for row in record.panel:
            key = row.test.key
            if result_refusal(definition, row.test, batch.state, as_current(row.current) if row.current else None):
                continue
            if refusal := basis_refusal(row.test, row.basis):
                waiting[key] = refusal
            elif row.test.computed:
                forms[key] = None
            else:
                forms[key] = posted[1] if posted and posted[0] == key else ResultForm(
                    formdata=None, batch_version=batch.version)
    unplaced = posted[1] if posted and forms.get(posted[0]) is not posted[1] else None
    return render_template("quality/results.html", batch=batch, definition=definition, record=record,
                           forms=forms, waiting=waiting, unplaced=unplaced), status


@bp.route("/batches/<batch_number>/results/<test_key>", methods=["GET", "POST"])
def record(batch_number: str, test_key: str) -> str | Response | tuple[str, int]:
    """Record a result as typed or, with the "use_computed" button, the value computed from
    the batch record (the dose formulation filled), signed by the analyst who checked it.
    A form sent from its row of the results page ("inline") is answered there when refused."""
    batch = get_batch_or_404(batch_number)
    definition = definition_for(batch)
    test = _test_or_404(definition, test_key)
    require(current_user, "record_result", "record QC results")
    submission = submission_named(batch, "result", test_key)  # a result an instrument sent, to check and sign
    form = ResultForm(batch_version=batch.version, value=submission.values.get("value") if submission else None)
    status = 200
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: recorded_from(
            submission, lambda opened: _record(batch, test_key, form, opened), actor=current_user))
        if (result := outcome.value) is not None:
            flash(result.message, "error" if result.verdict == "fail" else "success")
            for deviation in _result_deviations(result):
                flash(f"Deviation {deviation.number} opened: {deviation.title}", "error")
            return redirect(url_for("quality.results", batch_number=batch.batch_number, _anchor=f"result-{result.id}"))
        status = outcome.status
        batch = get_batch_or_404(batch_number)
        form.show_version(batch.version)
    elif form.is_submitted():
        status = 422
    else:
        current = current_results(batch).get(test_key)
        refusal = (result_refusal(definition, test, batch.state, as_current(current) if current else None)
                   or basis_refusal(test, release_basis(batch, test, definition)))
        if refusal:
            raise StepNotAllowed(refusal)
    if request.form.get("inline"):  # sent from its row of the results page: answered there
        return _results_page(batch, (test_key, form), status)
    basis = release_basis(batch, test, definition)
    return render_template("quality/record.html", batch=batch, test=test, form=form,
                           specification=spec_text(test, basis), basis=basis,
                           computed=format_quantity(basis.computed, test.unit) if basis and basis.computed else "",
                           current=current_results(batch).get(test_key), submission=submission), status


def _record(batch: Batch, test_key: str, form: ResultForm, opened: Opened) -> QcResult:
    """The result the form asks for: the computed value, or the value typed (not both)."""
    common = {"comment": form.comment.data or "", "actor": current_user, "credentials": signing.credentials(form),
              "expected_version": form.batch_version.data}
    if not request.form.get("use_computed"):
        return record_result(batch, test_key, form.value.data or "", opened=opened, **common)
    if (form.value.data or "").strip():
        raise InvalidInput("The result was not recorded.", {
            "value": "Either type a measured result or record the computed one, not both: clear this field."})
    return record_computed_result(batch, test_key, **common)


def _result_deviations(result: QcResult) -> list[Deviation]:
    """The deviations ``result`` opened by itself (out of specification, or far from the computed value)."""
    return [d for d in result.batch.deviations if d.result_id == result.id]


@bp.route("/batches/<batch_number>/results/<int:result_id>/correct", methods=["GET", "POST"])
def correct(batch_number: str, result_id: int) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    found = next((r for r in batch.results if r.id == result_id), None)
    if found is None:
        abort(404, f"Batch {batch.batch_number} has no result {result_id}.")
    result: QcResult = found
    test = _test_or_404(definition_for(batch), result.test_key)
    require(current_user, "record_result", "correct QC results")
    form = ResultCorrectionForm(batch_version=batch.version)
    status = 200
    if form.validate_on_submit():
        outcome = signing.attempt(form, lambda: correct_result(
            batch, result, form.value.data or "", reason=form.reason.data or "", actor=current_user,
            credentials=signing.credentials(form), expected_version=form.batch_version.data))
        if (corrected := outcome.value) is not None:
            flash(f"{test.title} corrected; the old result stays on record. {corrected.message}", "success")
            return redirect(url_for("quality.results", batch_number=batch.batch_number,
                                    _anchor=f"result-{corrected.id}"))
        status = outcome.status
        batch = get_batch_or_404(batch_number)
        result = next(r for r in batch.results if r.id == result_id)
        form.show_version(batch.version)
    elif form.is_submitted():
        status = 422
    return render_template("quality/correct.html", batch=batch, test=test, result=result, form=form), status


@bp.route("/batches/<batch_number>/review")
def review(batch_number: str) -> str:
    batch = get_batch_or_404(batch_number)
    return render_template("quality/review.html", batch=batch, review=review_batch(batch))


@bp.route("/batches/<batch_number>/disposition", methods=["GET", "POST"])
def disposition(batch_number: str) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    definition = definition_for(batch)
    roles = tuple(sorted({d.role for d in definition.decisions}))
    if not roles:
        abort(404, f"Process {definition.key} v{definition.version} defines no QA decisions.")
    require_role(current_user, roles, "decide a batch's disposition")
    form = DecisionForm(batch_version=batch.version)
    now = decisions_now(batch, definition, current_user)
    # On submission every decision is a valid choice: the service says why one may not be taken now.
    form.decision.choices = _choices(definition.decisions if form.is_submitted() else now.offered)
    status = 200
    if form.validate_on_submit():
        data = DecisionInput(form.decision.data or "", form.reason.data or "",
                             **{key: getattr(form, key).data or "" for key in EXCEPTIONAL_FIELDS})
        outcome = signing.attempt(form, lambda: decide(
            batch, data, expected_version=form.batch_version.data, actor=current_user,
            credentials=signing.credentials(form)))
        if (taken := outcome.value) is not None:
            flash(f"{taken.title}: batch {batch.batch_number} is now {definition.states[taken.state_after].lower()}, "
                  f"signed by {current_user.full_name}.", "success")
            return redirect(url_for("batches.detail", batch_number=batch.batch_number, _anchor="disposition"))
        status = outcome.status
        batch = get_batch_or_404(batch_number)
        form.show_version(batch.version)
        now = decisions_now(batch, definition, current_user)
        form.decision.choices = _choices(now.offered)
    elif form.is_submitted():
        status = 422
    return render_template("quality/disposition.html", batch=batch, definition=definition, form=form,
                           now=now, exceptional_fields=EXCEPTIONAL_FIELDS), status


def _choices(decisions: Iterable[DecisionSpec]) -> list[SelectChoice]:
    return [SelectChoice(d.key, d.title) for d in decisions]


@bp.route("/batches/<batch_number>/coa.pdf")
def coa(batch_number: str) -> Response:
    batch = get_batch_or_404(batch_number)
    now = utcnow()
    try:
        pdf = render_coa(coa_data(batch, downloaded_by=current_user, now=now))
    except UnprintableText as error:
        abort(422, f"The certificate cannot be printed: {error}")
    record_download(current_user, "coa", batch=batch, digest=sha256_hex(pdf), now=now)
    db.session.commit()
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"CoA-{batch.batch_number}.pdf",
                     as_attachment=True)  # a document handed over: saved as a file, not only viewed


@bp.route("/batches/<batch_number>/rfic.pdf")
def rfic(batch_number: str) -> Response:
    """The release for infusion certificate: whoever may download the certificate of analysis
    may download it. It issues (stores and logs) the batch record version it carries the
    digest of, so that scanning it verifies like the record; refused (409) unless released."""
    batch = get_batch_or_404(batch_number)
    now = utcnow()
    copy = snapshot(batch)
    try:
        pdf = render_rfic(rfic_data(batch, record_digest=copy.digest, downloaded_by=current_user, now=now))
    except UnprintableText as error:
        abort(422, f"The release for infusion certificate cannot be printed: {error}")
    issue_copy(batch, copy, now, kind="rfic")
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"RfIC-{batch.batch_number}.pdf",
                     max_age=0, as_attachment=True)

"""Process versions under change control: the list, one version with what changed, uploading
a draft (QA or an administrator), and QA's signed approval with an effective date."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.file import FileField
from werkzeug.wrappers import Response
from wtforms import DateField, TextAreaField
from wtforms.validators import Length, Optional

from lab.exceptions import InvalidInput, LabError
from lab.extensions import db
from lab.forms import SigningForm
from lab.models import ProcessVersion, utcnow
from lab.permissions import require_role
from lab.sent_forms import OnceForm
from lab.services import processes as service
from lab.services.signatures import record_signatures
from lab.views import signing
from lab.views.common import apply_errors
from workflows.definition import DefinitionError
from workflows.diff import describe_changes

bp = Blueprint("processes", __name__, url_prefix="/processes")


class UploadForm(OnceForm):
    file = FileField("Definition file (TOML)")
    reason = TextAreaField("What the change is for", [Length(max=service.MAX_REASON)])


class ApproveForm(SigningForm):
    effective_on = DateField("Effective from (new batches use it from this date, lab time)", [Optional()])


def get_version_or_404(key: str, version: int) -> ProcessVersion:
    found = service.find_version(key[:64], version)
    if found is None:
        abort(404, f"No version {version} of process {key[:64]!r} is stored.")
    return found


def _may(*roles: str) -> bool:
    return bool(current_user.is_authenticated and current_user.can_act_as(*roles))


@bp.route("/")
def index() -> str:
    now = utcnow()
    may_upload = _may(*service.UPLOADERS)
    try:
        unstored = service.unstored_shipped() if may_upload else []
    except DefinitionError as error:
        unstored, broken = [], f"Refused: {error}"
    else:
        broken = ""
    return render_template("processes/index.html", overview=service.overview(now), may_upload=may_upload,
                           unstored=unstored, broken=broken, form=OnceForm())


@bp.route("/shipped", methods=["POST"])
def store_shipped() -> Response:
    require_role(current_user, service.UPLOADERS, "store the shipped process definitions")
    if not OnceForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    try:
        stored = service.store_shipped(actor=current_user)
    except DefinitionError as error:
        raise InvalidInput(f"Refused: {error}") from None
    db.session.commit()
    flash(f"Stored as drafts: {', '.join(f'{v.key} version {v.version}' for v in stored) or 'nothing'}. "
          "A QA officer approves each on its page.", "success")
    return redirect(url_for("processes.index"))


@bp.route("/upload", methods=["GET", "POST"])
def upload() -> str | Response | tuple[str, int]:
    require_role(current_user, service.UPLOADERS, "upload a process definition")
    form = UploadForm()
    status = 200
    if form.validate_on_submit():
        sent = request.files.get(form.file.name)
        try:
            if sent is None or not sent.filename:
                raise InvalidInput("Choose the definition file to upload.", {"file": "Choose a .toml file."})
            try:
                data = sent.stream.read(service.MAX_DEFINITION_BYTES + 1)
            finally:
                sent.close()
            definition = service.parse_upload(data, sent.filename)
            version = service.import_definition(definition, actor=current_user, origin="uploaded",
                                                reason=form.reason.data or "")
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        except LabError as error:
            db.session.rollback()
            form.form_errors.append(str(error))
            status = error.status
        else:
            db.session.commit()
            flash(f"{version.key} version {version.version} stored as a draft: another QA officer approves it "
                  "below before any batch uses it.", "success")
            return redirect(url_for("processes.detail", key=version.key, version=version.version))
    elif request.method == "POST":
        status = 422
    return render_template("processes/upload.html", form=form), status


def _page(version: ProcessVersion, form: ApproveForm) -> str:
    now = utcnow()
    definition = service.definition_of(version)
    previous = service.previous_of(version)
    changes = describe_changes(service.record_definition(previous), definition) if previous is not None else None
    may_approve = (_may(*service.APPROVERS) and version.approved_at is None
                   and version.uploaded_by_id != current_user.id)
    return render_template("processes/detail.html", version=version, definition=definition,
                           status=service.status_of(version, now), previous=previous, changes=changes,
                           signatures=record_signatures(version), form=form, may_approve=may_approve,
                           today=service.lab_date(now))


@bp.route("/<key>/<int:version>")
def detail(key: str, version: int) -> str:
    found = get_version_or_404(key, version)
    return _page(found, ApproveForm(effective_on=service.lab_date(utcnow())))


@bp.route("/<key>/<int:version>/definition.toml")
def source(key: str, version: int) -> Response:
    found = get_version_or_404(key, version)
    record = found.definition
    return Response(record.source_text, mimetype="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{record.source_name}"'})


@bp.route("/<key>/<int:version>/approve", methods=["POST"])
def approve(key: str, version: int) -> str | Response | tuple[str, int]:
    found = get_version_or_404(key, version)
    require_role(current_user, service.APPROVERS, "approve a process version")
    form = ApproveForm()
    status = 422
    if form.validate_on_submit():
        effective_on: date | None = form.effective_on.data
        outcome = signing.attempt(form, lambda: service.approve(
            found, effective_on=effective_on, actor=current_user, credentials=signing.credentials(form)))
        if outcome.done:
            flash(f"{found.key} version {found.version} approved and signed by {current_user.full_name}, "
                  f"effective from {effective_on.isoformat() if effective_on else ''}.", "success")
            return redirect(url_for("processes.detail", key=found.key, version=found.version))
        status = outcome.status
    elif form.effective_on.errors:
        form.effective_on.errors = ["Enter the date as YYYY-MM-DD."]
    found = get_version_or_404(key, version)
    return _page(found, form), status

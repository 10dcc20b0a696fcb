"""Importing a cell counter's export file from the step form (``lab.services.counter_import``).

The step form of a step that counts cells shows a small upload form; this view takes it and,
once the file is accepted, opens the pending submission where the person checks the values
with the file's sample ID and time and completes the entry. A refused file comes back on this
page with the reason (422), and nothing is saved.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template
from flask_login import current_user
from flask_wtf.file import FileField
from werkzeug.wrappers import Response
from wtforms import StringField
from wtforms.validators import Length

from lab.exceptions import ConcurrentChangeError, InvalidInput, LabError
from lab.extensions import db
from lab.forms import VersionedForm
from lab.models import Batch
from lab.permissions import require_role
from lab.services.counter_import import count_fields, import_counter_file, sample_id_help
from lab.services.submissions import submission_json
from lab.views.batches import get_batch_or_404, get_step_or_404
from lab.views.common import apply_errors
from workflows.model import StepSpec

bp = Blueprint("counter_files", __name__, url_prefix="/batches")


class CounterFileForm(VersionedForm):
    file = FileField("Counter export file (CSV)")
    volume_ml = StringField("Culture volume the count stands for (mL)", [Length(max=40)])


@bp.app_context_processor
def _upload_form() -> dict[str, Any]:
    return {"counter_upload": counter_upload}


def counter_upload(batch: Batch, step: StepSpec) -> dict[str, Any] | None:
    """What the step form's "Import a counter file" block shows; None for a step that takes no count."""
    if count_fields(step) is None:
        return None
    # formdata=None: built on a page that may answer another form's POST, it must not take that form's data
    return {"form": CounterFileForm(formdata=None, batch_version=batch.version), "help": sample_id_help(batch, step)}


@bp.route("/<batch_number>/steps/<step_key>/counter-file", methods=["GET", "POST"])
def upload(batch_number: str, step_key: str) -> str | Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    step = get_step_or_404(batch, step_key)
    if count_fields(step) is None:
        abort(404, f"{step.title} takes no cell count: no counter file is imported for it.")
    require_role(current_user, step.role, f"record {step.title}")
    form = CounterFileForm(batch_version=batch.version)
    status = 200
    if form.validate_on_submit():
        upload = form.file.data
        try:
            submission = import_counter_file(
                batch, step_key, upload.read() if upload else b"", upload.filename if upload else None,
                volume_ml=form.volume_ml.data or "", actor=current_user, token=None,
                expected_version=form.batch_version.data)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        except LabError as error:  # a duplicate, a stale page, a step that may not be recorded now
            db.session.rollback()
            form.form_errors.append(error.said_to(current_user.id))
            status = error.status
            if isinstance(error, ConcurrentChangeError):
                form.show_version(get_batch_or_404(batch_number).version)
        else:
            db.session.commit()
            return redirect(submission_json(submission)["sign_url"])
        batch = get_batch_or_404(batch_number)
    elif form.is_submitted():
        status = 422
    return render_template("batches/counter_file.html", batch=batch, step=step, form=form,
                           help=sample_id_help(batch, step)), status

"""The executed batch record (PDF) and the verification of a printed copy by its digest."""

from __future__ import annotations

from datetime import datetime
from io import BytesIO

from flask import Blueprint, abort, render_template, send_file
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from lab.extensions import db
from lab.models import Batch, utcnow
from lab.services.record_issue import Snapshot, issue_record, snapshot, verify_digest
from lab.views.batches import get_batch_or_404
from labels.digest import DigestError, parse_digest
from labels.record import render_record
from labels.record_data import Issue
from labels.text import UnprintableText

bp = Blueprint("records", __name__)


@bp.route("/batches/<batch_number>/record.pdf")
def record_pdf(batch_number: str) -> Response:
    """Any signed-in user, the auditor included, may download it; the download is logged."""
    batch = get_batch_or_404(batch_number, rows=False)
    copy = snapshot(batch)
    now = utcnow()
    try:
        pdf = render_record(copy.record, Issue(current_user.full_name, now), copy.digest)
    except UnprintableText as error:
        abort(422, f"The batch record cannot be printed: {error}")
    issue_copy(batch, copy, now)
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"record-{batch.batch_number}.pdf",
                     max_age=0, as_attachment=True)  # each copy is an issued, logged file


@bp.route("/verify/<path:text>")
def verify(text: str) -> tuple[str, int]:
    try:
        digest = parse_digest(text)
    except DigestError as error:
        abort(400, str(error))
    found = verify_digest(digest)
    if found is None:
        return render_template("records/unknown.html", digest=digest), 404
    if found.kind == "coi-report":  # a patient's chain-of-identity report
        return render_template("records/verify_coi.html", verification=found), 200
    return render_template("records/verify.html", verification=found), 200


def issue_copy(batch: Batch, copy: Snapshot, now: datetime, kind: str = "record") -> None:
    """Store ``copy`` and log its download as a ``kind`` by the signed-in user; commits. Once
    more if another first download of the same version was stored between our check and our
    insert (possible on SQLite, where the check takes no lock): the second attempt finds that
    version and only logs the download."""
    for attempt in (1, 2):
        try:
            issue_record(batch, copy, actor=current_user, now=now, kind=kind)
            db.session.commit()
            return
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise

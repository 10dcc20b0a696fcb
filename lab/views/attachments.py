"""Downloading an attached file (a certificate) by its id."""

from __future__ import annotations

import base64
from io import BytesIO

from flask import Blueprint, abort, send_file
from werkzeug.wrappers import Response

from lab.extensions import db
from lab.models.attachments import Attachment

bp = Blueprint("attachments", __name__, url_prefix="/attachments")


@bp.route("/<int:attachment_id>/<path:filename>")
def download(attachment_id: int, filename: str) -> Response:
    """Any signed-in user may read a certificate; the name in the URL is for the reader only."""
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None:
        abort(404, "No such attached file.")
    response = send_file(BytesIO(attachment.content), mimetype=attachment.content_type,
                         download_name=attachment.filename, as_attachment=True, max_age=0)
    # RFC 9530: the reader can check the copy against the hash the record and the trail show.
    response.headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(attachment.sha256)).decode()}:"
    return response

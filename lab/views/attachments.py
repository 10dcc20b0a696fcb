"""Attached files (certificates): the routes that accept one, and downloading one by its id."""

from __future__ import annotations

import base64
from collections.abc import Callable
from io import BytesIO
from typing import TypeVar

from flask import Blueprint, abort, current_app, request, send_file
from werkzeug.wrappers import Response

from lab.extensions import db
from lab.models.attachments import Attachment

bp = Blueprint("attachments", __name__, url_prefix="/attachments")
View = TypeVar("View", bound=Callable[..., object])
#: Room for the rest of an upload form besides its file.
FORM_ALLOWANCE = 256 * 1024


def accepts_attachment(view: View) -> View:
    """Mark a view whose form carries a certificate: its requests may be as large as an attachment
    (``ATTACHMENT_MAX_BYTES``); every other request keeps the small ``MAX_CONTENT_LENGTH``."""
    view.accepts_attachment = True  # type: ignore[attr-defined]
    return view


def allow_attachment_size() -> None:
    """Before anything reads the body (the CSRF check does): raise the limit for marked views."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "accepts_attachment", False):
        request.max_content_length = int(current_app.config["ATTACHMENT_MAX_BYTES"]) + FORM_ALLOWANCE


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

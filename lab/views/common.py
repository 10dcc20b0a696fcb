"""Helpers shared by views."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from io import BytesIO

from flask import abort, send_file
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.services.downloads import record_download
from labels.layout import LabelOverflow
from labels.text import UnprintableText


def item_label(kind: str, code: str, render: Callable[[], bytes]) -> Response:
    """A lot's or an instrument's label as a PDF, or a 422 saying why it cannot be printed.
    Each print is logged (``kind`` "lot_label" or "equipment_label", with the PDF's SHA-256)."""
    try:
        pdf = render()
    except (LabelOverflow, UnprintableText, ValueError) as error:
        abort(422, f"The label of {code} cannot be printed: {error}")
    record_download(current_user, kind, digest=hashlib.sha256(pdf).hexdigest(), detail=code)
    db.session.commit()
    return send_file(BytesIO(pdf), mimetype="application/pdf", download_name=f"label-{code}.pdf", max_age=0)


def apply_errors(form: FlaskForm, error: InvalidInput) -> None:
    """Show a service's refusal on the form: each message on the field it names; at the top,
    the refusal itself with the messages of fields this form does not have."""
    unplaced = []
    for name, message in error.errors.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, message] if isinstance(field.errors, list) else [message]
        else:
            unplaced.append(message)
    if unplaced or not error.errors:
        form.form_errors.extend([str(error), *unplaced])

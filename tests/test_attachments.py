"""Attached files (issue 13: certificates of analysis and calibration): only a PDF or an image,
decided by the file's first bytes; size-limited; stored with its SHA-256, which the trail keeps
(not the bytes); downloadable by a signed-in user with the type it was stored as."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Attachment, AuditEvent, utcnow
from lab.sent_forms import TOKEN_FIELD, new_token
from lab.services.attachments import store
from tests.factories import user

pytestmark = pytest.mark.requirements("MAT-3", "ALCOA-ORIGINAL")

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def _store(content: bytes, filename: str = "certificate.pdf") -> Attachment:
    with audit.action("test.attach", actor=user("tech1")):
        attachment = store(io.BytesIO(content), filename, field="certificate", actor=user("tech1"), now=utcnow())
    db.session.commit()
    return attachment


@pytest.mark.parametrize(("content", "kind"), [(PDF, "application/pdf"), (PNG, "image/png"),
                                               (JPEG, "image/jpeg")])
def test_a_pdf_or_an_image_is_kept_with_its_hash(app: Flask, users: object, content: bytes, kind: str) -> None:
    with app.app_context():
        attachment = _store(content, "../../etc/CoA lot 42.pdf")
        assert (attachment.content_type, attachment.size) == (kind, len(content))
        assert attachment.sha256 == hashlib.sha256(content).hexdigest()
        assert attachment.filename == "CoA lot 42.pdf"  # a name, never a path
        entry = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "attachments")).one()
        recorded = json.loads(entry.new_value or "")
        assert recorded["sha256"] == attachment.sha256 and "content" not in recorded


@pytest.mark.parametrize(("content", "filename", "message"), [
    (b"<html><script>alert(1)</script></html>", "certificate.pdf", "certificate.pdf is not a PDF, PNG or JPEG"),
    (b"MZ\x90\x00executable", "scan.png", "scan.png is not a PDF, PNG or JPEG"),
    (b"", "empty.pdf", "the file sent was empty"),
])
def test_anything_else_is_refused_and_nothing_is_kept(app: Flask, users: object, content: bytes, filename: str,
                                                      message: str) -> None:
    with app.app_context():
        with pytest.raises(InvalidInput) as refused:
            _store(content, filename)
        assert message in refused.value.errors["certificate"]
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Attachment)) == 0


def test_a_file_over_the_limit_is_refused_by_its_size(app: Flask, users: object) -> None:
    app.config["ATTACHMENT_MAX_BYTES"] = 1024 * 1024
    with app.app_context():
        with pytest.raises(InvalidInput) as refused:
            _store(PDF + b"0" * (1024 * 1024))
        assert "larger than 1 MB" in refused.value.errors["certificate"]


def test_a_signed_in_user_downloads_the_file_as_stored(app: Flask, users: object, client: FlaskClient,
                                                       login: Callable[[str], FlaskClient]) -> None:
    with app.app_context():
        attachment_id = _store(PNG, "photo.png").id
    anonymous = client.get(f"/attachments/{attachment_id}/photo.png")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    login("auditor1")
    response = client.get(f"/attachments/{attachment_id}/photo.png")
    assert response.status_code == 200 and response.data == PNG
    assert response.mimetype == "image/png"
    assert response.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(PNG).digest()).decode()}:"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/attachments/{attachment_id + 1}/photo.png").status_code == 404
    assert client.get("/attachments/99999999999999999999999/x.pdf").status_code == 404


def test_a_certificate_may_be_larger_than_any_other_request(app: Flask, inventory: object,
                                                            login: Callable[[str], FlaskClient]) -> None:
    """A 2 MB scanned certificate is accepted where a form carries one; the same body anywhere
    else is over MAX_CONTENT_LENGTH (1 MB) and refused with 413 before any form is read."""
    from tests.test_equipment import INCUBATOR, demo_code, log_form

    large = PDF + b"%" * (2 * 1024 * 1024)
    assert len(large) > app.config["MAX_CONTENT_LENGTH"]
    code = demo_code(app, INCUBATOR)
    client = login("tech1")
    refused = client.post(f"/equipment/{code}/out-of-service", data=b"reason=" + b"x" * len(large),
                          content_type="application/x-www-form-urlencoded")
    assert refused.status_code == 413
    # Encoded here, in memory: the test client would spool a body this large to a file it never closes.
    fields = log_form(None)
    boundary, body = encode_multipart(MultiDict([*fields.items(), (TOKEN_FIELD, new_token()),
                                                 ("certificate", FileStorage(io.BytesIO(large), "scan.pdf"))]))
    accepted = client.post(f"/equipment/{code}/log", data=body,
                           content_type=f"multipart/form-data; boundary={boundary}")
    assert accepted.status_code == 302
    with app.app_context():
        assert db.session.scalars(select(Attachment.size).order_by(Attachment.id.desc())).first() == len(large)

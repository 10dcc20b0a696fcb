"""Bad input on the release side: every refusal is a clear 4xx and writes nothing (never a 500)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent
from tests.factories import get_batch, page_text, signature
from tests.quality import record_results

LONG = "x" * 50_000
pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("A11-5")]


def audit_count(app: Flask) -> int:
    """Audit entries of anything but signing in (which records the time of the sign-in)."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action != "user.login")) or 0


def test_garbage_on_every_release_form_is_refused_with_nothing_written(app, make_batch, login):
    number = make_batch()
    record_results(app, number, endotoxin="9")
    with app.app_context():
        batch = get_batch(number)
        result_id, version, deviation = batch.results[0].id, batch.version, batch.deviations[0].number
    before = audit_count(app)
    qc = login("qc1")
    cases = [
        (qc, f"/batches/{number}/results/sterility", {"batch_version": version}, 422, "Enter the result of Sterility."),
        (qc, f"/batches/{number}/results/sterility", {}, 422, "reload the page"),
        (qc, f"/batches/{number}/results/sterility", {"value": LONG, "batch_version": version, **signature("qc1")},
         422, "255"),
        (qc, f"/batches/{number}/results/sterility", {"value": "no\x07growth", "batch_version": version,
                                                      **signature("qc1")}, 400, "control character (U+0007)"),
        (qc, f"/batches/{number}/results/sterility", {"value": "growth", "comment": LONG, "batch_version": version,
                                                      **signature("qc1")}, 422, "2000"),
        (qc, f"/batches/{number}/results/{result_id}/correct", {"batch_version": version}, 422,
         "Say why the result is corrected."),
        (qc, f"/batches/{number}/results/{result_id}/correct", {"value": "91", "reason": "Retyped.",
                                                                "batch_version": version - 1, **signature("qc1")},
         409, "changed this batch at"),
        (qc, f"/batches/{number}/results/0/correct", {}, 404, "has no result 0"),
    ]
    for client, url, data, status, message in cases:
        response = client.post(url, data=data)
        assert response.status_code == status, (url, data.keys(), page_text(response)[-800:])
        assert message in page_text(response), (url, message)
    qa = login("qa1")
    cases = [
        (qa, f"/batches/{number}/disposition", {}, 422, "reload the page"),
        (qa, f"/batches/{number}/disposition", {"decision": "release", "batch_version": "abc"}, 422, "reload"),
        (qa, f"/batches/{number}/disposition", {"decision": "reject", "batch_version": version, "reason": LONG,
                                                **signature("qa1")}, 422, "4000"),
        (qa, f"/batches/{number}/deviations/new", {"title": LONG, "description": "x"}, 422, "255"),
        (qa, f"/deviations/{deviation}/investigation", {"classification": "severe"}, 422, "Not a valid choice"),
        (qa, f"/deviations/{deviation}/investigation", {"root_cause": LONG}, 422, "4000"),
        (qa, f"/deviations/{deviation}/close", {}, 422, "cannot be closed before its investigation is complete"),
        (qa, "/deviations/DEV-9999-0001/close", {}, 404, "No deviation"),
    ]
    for client, url, data, status, message in cases:
        response = client.post(url, data=data)
        assert response.status_code == status, (url, page_text(response)[-800:])
        assert message in page_text(response), (url, message)
    assert login("auditor1").get(f"/deviations?batch={LONG[:5000]}").status_code == 200
    assert audit_count(app) == before


def test_an_admin_unlock_of_an_unlocked_account_is_refused(app, users, login):
    admin = login("admin")
    response = admin.post(f"/admin/users/{users['tech1']}/unlock", data={"reason": "Just in case."})
    assert response.status_code == 422
    assert "tech1 is not locked." in page_text(response)
    assert admin.post("/admin/users/9999/unlock", data={"reason": "x"}).status_code == 404
    assert login("qa1").post(f"/admin/users/{users['tech1']}/unlock", data={"reason": "x"}).status_code == 403

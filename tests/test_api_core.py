"""What every /api/v1 request shares (lab.api.core): a token, never a session; writes attributed
to the token in the audit trail, inside the hash chain."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab.audit_chain import canonical, entry_hash
from lab.extensions import db
from lab.models import AuditEvent
from lab.services.audit_verify import verify_chain

pytestmark = pytest.mark.requirements("API-1", "P11-10e")

EARLY_COUNT = ({"culture_day": "3", "viable_cells": "4.0e8", "viability_pct": "90"},)


def test_a_signed_in_browser_session_is_not_an_api_credential(app: Flask, users: dict[str, int],
                                                              login: Callable[[str], FlaskClient]) -> None:
    client = login("qa1")
    assert client.get("/").status_code == 200  # the session is live for the pages
    response = client.get("/api/v1/batches")
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    assert "Bearer" in response.get_json()["detail"] and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_api_write_names_its_token_in_the_chained_trail(app: Flask, make_batch: Callable[..., str],
                                                           api_token: Callable[..., dict[str, str]]) -> None:
    number = make_batch(until="harvest", days_ago=8, expansion=EARLY_COUNT)
    headers = api_token("tech1", "write", name="NC-200 bench 2")
    response = app.test_client().post(f"/api/v1/batches/{number}/steps/expansion/submissions",
                                      json={"values": {"viable_cells": "1.2e9", "viability_pct": "93"}},
                                      headers=headers)
    assert response.status_code == 202, response.get_json()
    with app.app_context():
        entries = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "submission.receive")).all()
        assert entries and {e.actor_username for e in entries} == {"tech1"}
        assert {e.via for e in entries} == {f"API token \u201cNC-200 bench 2\u201d ({headers['Authorization'][7:17]}\u2026)"}
        before = db.session.scalars(select(AuditEvent).where(AuditEvent.via.is_(None))).first()
        assert before is not None and b'"via"' not in canonical(before.__dict__)  # older entries keep their hashes
        row = {column.name: getattr(entries[0], column.name) for column in AuditEvent.__table__.columns}
        assert entry_hash(row) == row["hash"] and b'"via":"API token' in canonical(row)
        assert entry_hash({**row, "via": "API token \u201cother\u201d"}) != row["hash"]  # the token is chained
        report = verify_chain()
        assert report.findings.count == 0 and report.last_id >= max(e.id for e in entries)

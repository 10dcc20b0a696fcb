"""``GET /api/v1/audit``: the trail as stored, newest first, paged by entry id, with the filters of
the /audit page, for the same roles: the whole trail its reviewers, one batch's trail everyone who
reads that batch's record; an entry written through a token names it (``via``)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab import audit
from lab.audit import VIA
from lab.extensions import db
from lab.models import AuditEvent, Submission
from tests.factories import get_batch, user
from workflows.codes import CodeKind, make_code

pytestmark = pytest.mark.requirements("API-2")


def _get(client: FlaskClient, headers: dict[str, str], status: int = 200, **query: str) -> Any:
    response = client.get("/api/v1/audit", headers=headers, query_string=query)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_the_whole_trail_pages_newest_first(app: Flask, client: FlaskClient, make_batch, api_token) -> None:
    make_batch(until="receipt")
    headers = api_token("qa1")
    first = _get(client, headers, limit="5")
    ids = [e["id"] for e in first["items"]]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    with app.app_context():
        assert ids[0] == db.session.scalar(select(func.max(AuditEvent.id)))
        total = db.session.scalar(select(func.count(AuditEvent.id)))
    assert first["next_before"] == ids[-1]
    second = _get(client, headers, limit="5", before=str(first["next_before"]))
    assert second["items"][0]["id"] < ids[-1]
    everything = _get(client, headers, limit="200")
    assert len(everything["items"]) == min(total, 200)
    entry = first["items"][0]
    assert set(entry) == {"id", "occurred_at", "actor", "action", "operation", "table", "row_id", "field",
                          "old_value", "new_value", "reason", "batch_id", "batch_number", "via", "hash", "prev_hash"}
    assert entry["occurred_at"].endswith("Z") and len(entry["hash"]) == 64


def test_filters_as_on_the_page(app: Flask, client: FlaskClient, make_batch, api_token) -> None:
    number = make_batch(until="enrichment")
    headers = api_token("auditor1")
    found = _get(client, headers, batch=number, action="step.record", user="tech1")["items"]
    assert found and {(e["batch_number"], e["action"], e["actor"]["username"]) for e in found} == {
        (number, "step.record", "tech1")}
    with app.app_context():
        batch_id, tech1 = get_batch(number).id, user("tech1").id
    assert {(e["batch_id"], e["actor"]["id"]) for e in found} == {(batch_id, tech1)}
    assert {e["table"] for e in _get(client, headers, table="step_values")["items"]} == {"step_values"}


def test_an_entry_names_the_token_it_came_through(app: Flask, client: FlaskClient, make_batch, api_token) -> None:
    number = make_batch(until="receipt")
    with app.test_request_context("/api/v1/batches"):  # as an API request writes it
        setattr(g, VIA, "API token “counter” (ct_abc…)")
        with audit.action("submission.create", actor=user("tech1")):
            db.session.add(Submission(batch_id=get_batch(number).id, kind="step", key="receipt", values={},
                                      submitted_by_id=user("tech1").id))
        db.session.commit()
    [entry] = _get(client, api_token("qa1"), action="submission.create")["items"]
    assert entry["via"] == "API token “counter” (ct_abc…)" and entry["table"] == "submissions"


@pytest.mark.parametrize("username", ["tech1", "super1", "qc1"])
def test_the_process_roles_read_a_batch_trail_only(client: FlaskClient, make_batch, api_token, username: str) -> None:
    number = make_batch(until="receipt")
    headers = api_token(username)
    assert {e["batch_number"] for e in _get(client, headers, batch=number)["items"]} == {number}
    assert "review the audit trail" in _get(client, headers, 403)["detail"]


def test_a_clinician_reads_no_trail(client: FlaskClient, make_batch, sites, api_token) -> None:
    number = make_batch(until="receipt")
    headers = api_token("nurse1")
    assert _get(client, headers, 403)
    assert _get(client, headers, 403, batch=number)


@pytest.mark.requirements("API-4")
@pytest.mark.usefixtures("never_500")
@pytest.mark.parametrize(("query", "status", "field"), [
    ({"from": "25/11/2026"}, 422, "from"),
    ({"from": "2026-11-30", "to": "2026-11-01"}, 422, "to"),
    ({"action": "DROP TABLE"}, 422, "action"),
    ({"table": "passwords"}, 422, "table"),
    ({"batch": "B-123"}, 422, "batch"),
    ({"before": "-1"}, 422, "before"),
    ({"limit": "500"}, 422, "limit"),
    ({"page": "2"}, 400, "page"),
])
def test_the_trail_refuses_what_it_does_not_understand(client: FlaskClient, users, api_token,
                                                       query: dict[str, str], status: int, field: str) -> None:
    problem = _get(client, api_token("qa1"), status, **query)
    assert field in problem["errors"]


@pytest.mark.requirements("API-4")
def test_an_unknown_batch_user_or_entry_is_not_found(client: FlaskClient, users, api_token) -> None:
    headers = api_token("qa1")
    unknown = str(make_code(CodeKind.BATCH, "A9999", 26, 99999))
    assert f"No batch {unknown}" in _get(client, headers, 404, batch=unknown)["detail"]
    assert "No user 'nobody'" in _get(client, headers, 404, user="nobody")["detail"]
    assert "no entry 999999" in _get(client, headers, 404, before="999999")["detail"]

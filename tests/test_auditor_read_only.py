"""The auditor reads everything and changes nothing, whatever it sends: every POST route of the
app (enumerated from its URL map, so a new route is covered or this test fails) answers an
auditor with 403 and writes nothing; every GET route answers without error and writes
nothing but the log of downloads."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.audit_chain import HEAD_ID
from lab.extensions import db
from lab.models import AuditChainHead, Batch, Deviation, User
from tests.factories import page_text
from tests.routes import url_for_rule

pytestmark = pytest.mark.requirements("P11-10g")

#: POST routes every signed-in user may use: signing in and out change no record.
#: Routes of one's own session and account, which an auditor uses like anyone else.
SESSION_ROUTES = {"main.login", "main.logout", "account.password", "api_tokens.mine", "api_tokens.revoke"}
#: What a GET by an auditor may write: the download log and its audit entries (issue 5, item 6).
DOWNLOAD_TABLES = {"downloads", "issued_records", "audit_events", "audit_chain_head"}


def snapshot(app: Flask) -> dict[str, Any]:
    """Rows per table, and the chain head (which every audited write moves)."""
    with app.app_context():
        counts = {table.name: db.session.scalar(select(func.count()).select_from(table))
                  for table in db.metadata.sorted_tables}
        head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)
                                  .where(AuditChainHead.id == HEAD_ID)).one()
        return {**counts, "head": tuple(head)}


def test_every_post_route_refuses_the_auditor_and_writes_nothing(app: Flask, lab_records: dict[str, Any],
                                                                 login: Callable[[str], FlaskClient]) -> None:
    client = login("auditor1")
    before = snapshot(app)
    posts = [rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())
             and rule.endpoint not in SESSION_ROUTES and not rule.endpoint.startswith("api.")]
    assert len(posts) >= 15
    for rule in posts:
        url = url_for_rule(app, rule, lab_records)
        for body in ({}, lab_records["form"]):
            response = client.post(url, data=body)
            assert response.status_code in (403, 405), (rule.endpoint, response.status_code)
            if response.status_code == 403:
                assert "you are signed in as auditor" in page_text(response), rule.endpoint
    assert snapshot(app) == before


def test_every_api_post_route_refuses_the_auditors_write_token_and_writes_nothing(
        app: Flask, lab_records: dict[str, Any], api_token: Callable[..., dict[str, str]]) -> None:
    """The API's writes answer the auditor's token (a write token: the scope is not what stops
    it) as the pages answer the auditor: 403 with the reason, nothing written."""
    headers = api_token("auditor1", "write")
    client = app.test_client()
    before = snapshot(app)
    posts = [rule for rule in app.url_map.iter_rules()
             if "POST" in (rule.methods or ()) and rule.endpoint.startswith("api.")]
    assert posts
    for rule in posts:
        url = url_for_rule(app, rule, lab_records)
        if rule.endpoint == "api.counter_file":  # a file upload
            response = client.post(url, data={"file": (BytesIO(b"Sample ID,Viability\r\n"), "count.csv"),
                                              "volume_ml": "100"}, headers=headers)
        else:
            body = {"value": "95"} if "test_key" in rule.arguments else {"values": {"post_viable_cells": "1.0e9"}}
            response = client.post(url, json=body, headers=headers)
        assert response.status_code == 403, (rule.endpoint, response.status_code, response.get_data(as_text=True))
        assert "auditor" in response.get_json()["detail"], rule.endpoint
        assert response.mimetype == "application/problem+json", rule.endpoint
    assert snapshot(app) == before


def test_every_get_route_answers_the_auditor_and_writes_only_the_download_log(
        app: Flask, lab_records: dict[str, Any], login: Callable[[str], FlaskClient]) -> None:
    client = login("auditor1")
    before = snapshot(app)
    statuses = {}
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or ()):
            response = client.get(url_for_rule(app, rule, lab_records))
            statuses[rule.endpoint] = response.status_code
            response.close()
    assert all(status < 500 for status in statuses.values()), statuses
    assert [endpoint for endpoint, status in statuses.items() if status == 200] != []
    for endpoint in ("main.dashboard", "batches.detail", "patients.detail", "deviations.detail", "audit.index",
                     "audit.export", "quality.review", "quality.results", "containers.detail"):
        assert statuses[endpoint] == 200, endpoint
    after = snapshot(app)
    changed = {key for key in before if before[key] != after[key]}
    assert changed <= {*DOWNLOAD_TABLES, "head"}, changed


def test_the_auditor_sees_every_batch(app: Flask, lab_records: dict[str, Any],
                                      login: Callable[[str], FlaskClient]) -> None:
    client = login("auditor1")
    dashboard = page_text(client.get("/"))
    with app.app_context():
        numbers = db.session.scalars(select(Batch.batch_number)).all()
        assert db.session.scalar(select(func.count()).select_from(Deviation)) >= 1
        assert db.session.scalar(select(func.count()).select_from(User).where(User.role == "auditor")) == 1
    assert len(numbers) == 2
    for number in numbers:
        assert number in dashboard
        assert client.get(f"/batches/{number}").status_code == 200
        assert client.get(f"/audit?batch={number}").status_code == 200

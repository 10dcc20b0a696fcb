"""The auditor reads everything and changes nothing, whatever it sends: every POST route of the
app (enumerated from its URL map, so a new route is covered or this test fails) answers an
auditor with 403 and writes nothing; every GET route answers without error and writes
nothing but the log of downloads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.audit_chain import HEAD_ID
from lab.extensions import db
from lab.models import AuditChainHead, Batch, Container, Deviation, QcResult, User
from lab.services.deviations import report_deviation
from tests.factories import PASSWORD, entries, get_batch, page_text, step_values, user
from tests.quality import record_results

#: POST routes every signed-in user may use: signing in and out change no record.
SESSION_ROUTES = {"main.login", "main.logout"}
#: What a GET by an auditor may write: the download log and its audit entries (issue 5, item 6).
DOWNLOAD_TABLES = {"downloads", "issued_records", "audit_events", "audit_chain_head"}


@pytest.fixture
def lab_records(app: Flask, make_batch: Callable[..., str]) -> dict[str, Any]:
    """One record of every kind a route names, and the value of each URL argument."""
    number = make_batch()
    awaiting = make_batch(until="enrichment", ref="SLE-02", verify=False)
    record_results(app, number)
    with app.app_context():
        batch = get_batch(number)
        deviation = report_deviation(batch, title="Label smudged", description="Relabelled.", actor=user("tech1"))
        db.session.commit()
        result = db.session.scalars(select(QcResult).where(QcResult.batch_id == batch.id)).first()
        container = db.session.scalars(select(Container).where(Container.batch_id == batch.id)).first()
        assert result is not None and container is not None
        return {
            "batch_number": awaiting, "entry_id": entries(awaiting, "receipt")[0].id, "field_key": "volume_ml",
            "step_key": "enrichment", "result_id": result.id, "test_key": result.test_key, "code": container.code,
            "number": deviation.number, "patient_ref": "SLE-02", "user_id": user("tech1").id,
            "filename": "celltrail.css", "text": number,
            # the batch's own records: its results are in the released batch, its open entries in the other
            "by_endpoint": {"quality.correct": {"batch_number": number}},
            # a plausible body for any form: fields the forms read, the auditor's own signature
            "form": {**{f"field-{k}": v for k, v in step_values("receipt", when=datetime.now(UTC), batch=get_batch(awaiting)).items()},
                     "username": "auditor1", "password": PASSWORD, "batch_version": get_batch(awaiting).version,
                     "value": "185", "reason": "Inspection", "comment": "Inspection", "title": "Inspection",
                     "description": "Inspection", "decision": "release", "classification": "minor",
                     "root_cause": "x", "impact": "x", "corrective_action": "x", "preventive_action": "x",
                     "role": "admin", "status": "active", "full_name": "Audrey Auditor", "patient_ref": "SLE-09",
                     "initials": "AB", "date_of_birth": "1980-01-01", "weight_kg": "70", "indication": "SLE",
                     "event": "moved", "scanned": container.code, "to_location": "Freezer 2"},
        }


def snapshot(app: Flask) -> dict[str, Any]:
    """Rows per table, and the chain head (which every audited write moves)."""
    with app.app_context():
        counts = {table.name: db.session.scalar(select(func.count()).select_from(table))
                  for table in db.metadata.sorted_tables}
        head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)
                                  .where(AuditChainHead.id == HEAD_ID)).one()
        return {**counts, "head": tuple(head)}


def url_for_rule(app: Flask, rule: Any, values: dict[str, Any]) -> str:
    values = {**values, **values["by_endpoint"].get(rule.endpoint, {})}
    missing = set(rule.arguments) - set(values)
    assert not missing, f"{rule.endpoint}: give this test a value for {missing}"
    with app.test_request_context():
        adapter = app.url_map.bind("localhost")
        return adapter.build(rule.endpoint, {key: values[key] for key in rule.arguments})


def test_every_post_route_refuses_the_auditor_and_writes_nothing(app: Flask, lab_records: dict[str, Any],
                                                                 login: Callable[[str], FlaskClient]) -> None:
    client = login("auditor1")
    before = snapshot(app)
    posts = [rule for rule in app.url_map.iter_rules()
             if "POST" in (rule.methods or ()) and rule.endpoint not in SESSION_ROUTES]
    assert len(posts) >= 15
    for rule in posts:
        url = url_for_rule(app, rule, lab_records)
        for body in ({}, lab_records["form"]):
            response = client.post(url, data=body)
            assert response.status_code in (403, 405), (rule.endpoint, response.status_code)
            if response.status_code == 403:
                assert "you are signed in as auditor" in page_text(response), rule.endpoint
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

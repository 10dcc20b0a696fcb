"""Every form that changes a record must carry its one-time token (issue 12, item 7): a POST
without one is refused with a 400 that says why, and nothing is written. The same deviation
report posted three times without a token used to make three deviations.

These tests use a plain test client, which sends exactly the body it is given (the ``client``
fixture adds a fresh token to a form, as the page would)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Deviation, SentForm
from lab.sent_forms import new_token
from tests.factories import PASSWORD, get_batch, page_text
from tests.routes import url_for_rule

pytestmark = pytest.mark.requirements("PROC-17")

REPORT = {"title": "Incubator door found ajar", "description": "Found at 07:10, closed at once."}


def plain_client(app: Flask, username: str) -> FlaskClient:
    client = FlaskClient(app, app.response_class, use_cookies=True)
    response = client.post("/login", data={"username": username, "password": PASSWORD})
    assert response.status_code == 302, page_text(response)
    return client


def deviations(app: Flask, number: str) -> int:
    with app.app_context():
        return len(get_batch(number).deviations)


def test_a_form_without_its_token_is_refused_with_a_reason_and_writes_nothing(
        app: Flask, make_batch: Callable[..., str]) -> None:
    number = make_batch(until="enrichment", verify=False)
    client = plain_client(app, "tech1")
    before = deviations(app, number)
    for _ in range(3):
        response = client.post(f"/batches/{number}/deviations/new", data=REPORT)
        assert response.status_code == 400
        assert "one-time token" in page_text(response)
    assert deviations(app, number) == before


def test_the_same_form_with_its_token_is_saved_once(app: Flask, make_batch: Callable[..., str]) -> None:
    number = make_batch(until="enrichment", verify=False)
    client = plain_client(app, "tech1")
    before = deviations(app, number)
    body = {**REPORT, "form_token": new_token()}
    statuses = [client.post(f"/batches/{number}/deviations/new", data=body).status_code for _ in range(3)]
    assert statuses == [302, 409, 409]
    assert deviations(app, number) == before + 1


@pytest.mark.parametrize("token", ["\x00", "abc\x00def", "a" * 65, "<script>", "tok en", "é" * 10])
def test_a_malformed_token_is_refused_before_the_database(app: Flask, make_batch: Callable[..., str],
                                                          token: str) -> None:
    number = make_batch(until="enrichment", verify=False)
    client = plain_client(app, "tech1")
    response = client.post(f"/batches/{number}/deviations/new", data={**REPORT, "form_token": token})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deviation)) == 0
        assert db.session.scalar(select(func.count()).select_from(SentForm)) == 0


def test_signing_in_and_out_need_no_token(app: Flask, users: Any) -> None:
    """Signing in and out change no record and are not replayed harmfully: they are exempt."""
    client = plain_client(app, "tech1")
    assert client.post("/logout").status_code == 302
    assert client.get("/").status_code == 302  # signed out: sent to the sign-in page


def test_every_changing_route_refuses_a_form_without_its_token(app: Flask, lab_records: dict[str, Any]) -> None:
    """Every POST route but signing in and out, each as a user allowed to use it: 400, never saved."""
    refused = {}
    clients = {name: plain_client(app, name) for name in ("tech1", "super1", "qc1", "qa1", "admin")}
    for rule in app.url_map.iter_rules():
        if "POST" not in (rule.methods or ()) or rule.endpoint in {"main.login", "main.logout"}:
            continue
        if rule.endpoint.startswith("api."):  # no session or form there: a token per request (tests/test_api_*)
            continue
        url = url_for_rule(app, rule, lab_records)
        statuses = {client.post(url, data=lab_records["form"]).status_code for client in clients.values()}
        refused[rule.endpoint] = statuses
    assert len(refused) >= 15
    # 403 for roles that may not use it; 400 for the roles that may; never a write (no 302)
    assert all(statuses <= {400, 403} and 400 in statuses for statuses in refused.values()), refused

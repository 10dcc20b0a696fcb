"""No input gives a server error (issue 12, item 8): NUL and other control characters in any
form field, the one-time token included, are refused with a reason before they reach the
database; an integer too large for its column in a URL is a 404. Every POST route and every
URL with an integer argument of the URL map, as every role that may use it, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.routing import IntegerConverter

from lab.extensions import db
from lab.models import AuditEvent
from lab.sent_forms import new_token
from tests.factories import PASSWORD, page_text
from tests.routes import url_for_rule

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("A11-5")]

ROLE_USERS = ("tech1", "super1", "qc1", "qa1", "admin")
HUGE = (2**31, 2**63, 10**30)


def clients(app: Flask) -> dict[str, FlaskClient]:
    found = {}
    for name in ROLE_USERS:
        client = FlaskClient(app, app.response_class, use_cookies=True)
        assert client.post("/login", data={"username": name, "password": PASSWORD}).status_code == 302
        found[name] = client
    return found


def audit_entries(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def post_rules(app: Flask) -> list[Any]:
    return [rule for rule in app.url_map.iter_rules()
            if "POST" in (rule.methods or ()) and rule.endpoint not in {"main.login", "main.logout"}]


def test_a_nul_in_any_field_is_refused_with_a_reason(app: Flask, lab_records: dict[str, Any]) -> None:
    """Each field in turn holds a NUL, the rest of the form being plausible, as every role."""
    users = clients(app)
    before = audit_entries(app)
    form = {**lab_records["form"], "form_token": new_token()}
    rules = post_rules(app)
    assert len(rules) >= 15
    for rule in rules:
        url = url_for_rule(app, rule, lab_records)
        for field, value in form.items():
            body = {**form, "form_token": new_token(), field: f"{value}\x00"}
            for name, client in users.items():
                response = client.post(url, data=body)
                assert response.status_code == 400, (rule.endpoint, field, name, response.status_code)
                assert "control character (U+0000)" in page_text(response), (rule.endpoint, field)
    assert audit_entries(app) == before


def test_other_control_characters_are_refused(app: Flask, lab_records: dict[str, Any]) -> None:
    """Escape, backspace, DEL, a C1 control, in field values and names; tab and line breaks are text."""
    client = clients(app)["tech1"]
    before = audit_entries(app)
    form = {**lab_records["form"], "form_token": new_token()}
    bad = ("\x1b[2J", "\x08", "\x7f", "\x85", "\x1d")
    for rule in post_rules(app):
        url = url_for_rule(app, rule, lab_records)
        for number, (field, value) in enumerate(form.items()):
            char = bad[number % len(bad)]
            for body in ({**form, "form_token": new_token(), field: f"{value}{char}"},
                         {**form, "form_token": new_token(), f"{field}{char}": "x"}):
                response = client.post(url, data=body)
                assert response.status_code == 400, (rule.endpoint, field, response.status_code)
                assert f"control character (U+{ord(char[0]):04X})" in page_text(response)
    assert audit_entries(app) == before
    assert client.post("/patients/new", data={**form, "form_token": new_token(), "indication": "SLE\tflare\r\n"}
                       ).status_code == 302


def test_a_nul_in_the_form_token_alone_is_refused(app: Flask, lab_records: dict[str, Any]) -> None:
    users = clients(app)
    for rule in post_rules(app):
        url = url_for_rule(app, rule, lab_records)
        for client in users.values():
            response = client.post(url, data={**lab_records["form"], "form_token": "abc\x00"})
            assert response.status_code in (400, 403), (rule.endpoint, response.status_code)


def test_login_refuses_control_characters_without_an_error(app: Flask, users: Any) -> None:
    client = FlaskClient(app, app.response_class, use_cookies=True)
    for body in ({"username": "tech1\x00", "password": PASSWORD}, {"username": "tech1", "password": "a\x00b"}):
        assert client.post("/login", data=body).status_code == 400
    assert client.get("/login?next=/%00").status_code == 400


def test_integers_too_large_for_their_column_are_not_found(app: Flask, lab_records: dict[str, Any]) -> None:
    users = clients(app)
    rules = [rule for rule in app.url_map.iter_rules()
             if any(isinstance(converter, IntegerConverter) for converter in rule._converters.values())]
    assert {rule.endpoint for rule in rules} >= {"admin.user", "admin.unlock", "batches.verify"}
    for rule in rules:
        ints = [name for name, converter in rule._converters.items() if isinstance(converter, IntegerConverter)]
        for huge in HUGE:
            own = {**lab_records["by_endpoint"].get(rule.endpoint, {}), **dict.fromkeys(ints, huge)}
            url = url_for_rule(app, rule, {**lab_records, **own, "by_endpoint": {rule.endpoint: own}})
            for name, client in users.items():
                for method in sorted((rule.methods or set()) & {"GET", "POST"}):
                    data = {**lab_records["form"], "form_token": new_token()} if method == "POST" else None
                    response = client.open(url, method=method, data=data)
                    assert response.status_code in (403, 404), (rule.endpoint, huge, name, method,
                                                                 response.status_code)


def test_a_huge_entry_number_in_the_audit_trail_query_is_no_error(app: Flask, users: Any,
                                                                   login: Callable[[str], FlaskClient]) -> None:
    client = login("qa1")
    for before in ("999999999999999999", "9" * 19, "9" * 40):
        assert client.get(f"/audit?before={before}").status_code in (404, 422)  # no such entry; not a number


def test_the_issue_case(app: Flask, users: Any, login: Callable[[str], FlaskClient]) -> None:
    response = login("admin").get("/admin/users/999999999999999999999999999999")
    assert response.status_code == 404

"""Security headers on every response and a Secure session cookie (issue 12, item 6): a
Content-Security-Policy that allows no inline script or style, framing refused, no MIME
sniffing, no referrer to other sites, HSTS over HTTPS; and no page relies on what that policy
blocks (inline script, event-handler attributes, style attributes)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Config
from lab import create_app
from lab.extensions import db
from tests.routes import url_for_rule
from tests.test_expansion_chart import DAYS

pytestmark = pytest.mark.requirements("SEC-1")

#: What the CSP forbids in a page: a script without src, an on...= handler, a javascript: link,
#: a style element or attribute.
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\son[a-z]+\s*=|=\s*[\"']?\s*javascript:|\sstyle\s*=",
                    re.IGNORECASE)


def directives(response: Any) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


def assert_secured(response: Any) -> None:
    csp = directives(response)
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_every_kind_of_response_carries_the_headers(app: Flask, client: FlaskClient, users: Any) -> None:
    for url, status in (("/login", 200), ("/", 302), ("/login?next=%1b", 400), ("/static/celltrail.js", 200)):
        with client.get(url) as response:
            assert response.status_code == status
            assert_secured(response)
            assert "Strict-Transport-Security" not in response.headers  # plain HTTP: HSTS means nothing
            if response.mimetype == "text/html":
                assert INLINE.findall(response.get_data(as_text=True)) == [], url
    response = client.post("/login", data={"username": "x", "password": "y"})
    assert response.status_code == 401
    assert_secured(response)
    with client.get("/no-such-page", base_url="https://localhost") as response:
        assert response.status_code in (302, 404)
        assert_secured(response)


def test_hsts_over_https(client: FlaskClient, users: Any) -> None:
    response = client.get("/login", base_url="https://localhost")
    assert_secured(response)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert int(response.headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 31536000


@pytest.mark.parametrize("username", ["tech1", "qa1", "admin"])
def test_no_page_needs_inline_script_or_style(app: Flask, lab_records: dict[str, Any],
                                              login: Callable[[str], FlaskClient], username: str) -> None:
    client = login(username)
    found = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint == "static":
            continue
        with client.get(url_for_rule(app, rule, lab_records)) as response:
            assert_secured(response)
            if response.mimetype == "text/html":
                found[rule.endpoint] = INLINE.findall(response.get_data(as_text=True))
    assert len(found) >= 10
    assert {endpoint: inline for endpoint, inline in found.items() if inline} == {}


def test_the_expansion_chart_needs_no_inline_style(make_batch: Callable[..., str],
                                                  login: Callable[[str], FlaskClient]) -> None:
    number = make_batch("harvest", expansion=DAYS)
    html = login("tech1").get(f"/batches/{number}").get_data(as_text=True)
    assert 'id="expansion"' in html
    assert INLINE.findall(html) == []


# --- the session cookie ----------------------------------------------------------------------

@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """create_app with the deployment Config, a real key and exactly the environment given."""
    for name in list(os.environ):
        if name.startswith("LAB_") or name in ("DATABASE_URL", "FLASK_DEBUG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SECRET_KEY", secrets.token_hex(32))
    monkeypatch.setattr(Config, "SQLALCHEMY_DATABASE_URI", None)
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))
    apps: list[Flask] = []

    def _deploy(**env: str) -> Flask:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        apps.append(create_app(Config))
        return apps[-1]

    yield _deploy
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize(("env", "secure"), [
    ({}, True),
    ({"LAB_SESSION_COOKIE_SECURE": "true"}, True),
    ({"LAB_SESSION_COOKIE_SECURE": "false"}, False),  # a plain-HTTP test install, said explicitly
    ({"FLASK_DEBUG": "1"}, False),
])
def test_the_session_cookie_is_secure_unless_turned_off(deploy: Callable[..., Flask], env: dict[str, str],
                                                        secure: bool) -> None:
    app = deploy(**env)
    assert app.config["SESSION_COOKIE_SECURE"] is secure

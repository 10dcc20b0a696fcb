"""Every page a user can open, as every role, has a title of its own, one h1, a label for
each input and errors tied to their field (tests/htmlcheck.py says exactly what is checked).
The routes come from the app's URL map, so a new page is checked or this test fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ROLES
from tests.factories import get_batch, signature
from tests.htmlcheck import COLOURED, problems
from tests.routes import url_for_rule

pytestmark = pytest.mark.usefixtures("never_500")


def _html_pages(app: Flask, client: FlaskClient, lab_records: dict[str, Any]) -> dict[str, str]:
    """endpoint -> HTML of every route that answers a GET with a page."""
    found = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint in ("static", "main.scan", "records.verify"):
            continue
        response = client.get(url_for_rule(app, rule, lab_records))
        if response.mimetype == "text/html":
            found[f"{rule.endpoint} ({response.status_code})"] = response.get_data(as_text=True)
        response.close()
    return found


@pytest.mark.parametrize("username", sorted(ROLES))
def test_every_page_is_labelled_for_every_role(app: Flask, lab_records: dict[str, Any],
                                               login: Callable[[str], FlaskClient], username: str) -> None:
    client = login(username)
    pages = _html_pages(app, client, lab_records)
    pages["records.verify"] = client.get(f"/verify/{lab_records['text']}").get_data(as_text=True)
    assert len(pages) >= 15
    found = {endpoint: problems(html) for endpoint, html in pages.items()}
    assert {endpoint: p for endpoint, p in found.items() if p} == {}


def test_the_sign_in_and_error_pages_are_labelled(app: Flask, client: FlaskClient, users: dict[str, int]) -> None:
    assert problems(client.get("/login").get_data(as_text=True)) == []
    refused = client.post("/login", data={"username": "tech1", "password": "wrong"})
    assert refused.status_code == 401 and problems(refused.get_data(as_text=True)) == []
    assert problems(client.get("/nowhere").get_data(as_text=True)) == []


def test_a_refused_step_form_ties_each_error_to_its_field(app: Flask, make_batch, login) -> None:
    number = make_batch("enrichment")
    client = login("tech1")
    with app.app_context():
        version = get_batch(number).version
    response = client.post(f"/batches/{number}/steps/enrichment",
                           data={"field-pre_tnc": "lots", "batch_version": version, **signature("tech1")})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert problems(html) == []
    assert 'id="field-pre_tnc" name="field-pre_tnc" value="lots" aria-invalid="true" aria-describedby="field-pre_tnc-error"' in html
    assert '<p class="error" id="field-pre_tnc-error">' in html


def test_radio_groups_are_fieldsets_and_their_error_is_tied_to_them(app: Flask, make_batch, login) -> None:
    number = make_batch("receipt")
    client = login("tech1")
    assert problems(client.get(f"/batches/{number}/steps/receipt").get_data(as_text=True)) == []
    with app.app_context():
        version = get_batch(number).version
    response = client.post(f"/batches/{number}/steps/receipt", data={"batch_version": version, **signature("tech1")})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert problems(html) == []
    assert '<fieldset class="field has-error" aria-describedby="field-decision-error">' in " ".join(html.split())
    assert '<legend>Decision</legend>' in html



def test_out_of_limit_rows_say_so_in_words(app: Flask, make_batch, login) -> None:
    number = make_batch("harvest", expansion=({"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "62",
                                                  "comment": "Supervisor informed."},))
    client = login("tech1")
    for url in (f"/batches/{number}", "/inventory/", "/"):
        html = client.get(url).get_data(as_text=True)
        assert problems(html) == [], url
    flagged = [inner for _tag, _colour, inner in COLOURED.findall(client.get(f"/batches/{number}").get_data(as_text=True))]
    assert flagged and all("OUT OF LIMIT" in inner for inner in flagged)
    assert "⚠ OUT OF LIMIT: Viability" in " ".join(client.get(f"/batches/{number}").get_data(as_text=True).split())

"""What people do to forms at a bench: send one twice, go back after saving and send it again,
submit a page that went stale while someone else changed the record, scan a label into the
wrong place. Each gets a clear message, and nothing is recorded twice. The forms are filled
from the pages the app serves, hidden fields included, as a browser would."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.demo import INCUBATOR, equipment_code
from lab.extensions import db
from lab.models import MaterialLot
from tests.factories import entries, form_data, get_batch, page_text, signature, snapshot, step_values
from tests.quality import words

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("PROC-17", "PROC-6")]

Login = Callable[..., FlaskClient]
ALREADY_SENT = "This form was already sent and saved at"
NOT_TWICE = "nothing was recorded twice"


def hidden(html: str) -> dict[str, str]:
    """The hidden fields of the page's form (its one-time token, the batch version)."""
    return dict(re.findall(r'name="(form_token|batch_version)" type="hidden" value="([^"]*)"', html))


def step_page_form(app: Flask, client: FlaskClient, number: str, step_key: str, **overrides: str) -> dict[str, Any]:
    """Open the step's page and fill it in: what the browser sends when Save is pressed."""
    page = client.get(f"/batches/{number}/steps/{step_key}")
    assert page.status_code == 200, words(page)
    with app.app_context():
        raw = step_values(step_key, when=datetime.now(UTC), batch=get_batch(number), **overrides)
    return {**form_data(raw, signer="tech1"), **hidden(page.get_data(as_text=True))}


def test_a_step_form_sent_twice_is_recorded_once(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("enrichment")
    client = login("tech1")
    data = step_page_form(app, client, number, "enrichment")
    assert set(data) >= {"form_token", "batch_version"}
    assert client.post(f"/batches/{number}/steps/enrichment", data=data).status_code == 302
    after_first = snapshot(app, number)
    again = client.post(f"/batches/{number}/steps/enrichment", data=data)
    assert again.status_code == 409
    assert ALREADY_SENT in words(again) and NOT_TWICE in words(again)
    assert snapshot(app, number) == after_first
    with app.app_context():
        assert [e.step_key for e in get_batch(number).entries].count("enrichment") == 1


def test_the_back_button_after_saving_a_daily_count_does_not_add_a_second_one(
        app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest")  # expansion is repeatable: a resent count would be a new entry
    client = login("tech1")
    data = step_page_form(app, client, number, "expansion", culture_day="12")
    assert client.post(f"/batches/{number}/steps/expansion", data=data).status_code == 302
    count = len(get_entries(app, number, "expansion"))
    # Back to the cached form, Save again: the same token, the same values.
    again = client.post(f"/batches/{number}/steps/expansion", data=data)
    assert again.status_code == 409 and NOT_TWICE in words(again)
    assert len(get_entries(app, number, "expansion")) == count


def get_entries(app: Flask, number: str, step_key: str) -> list[int]:
    with app.app_context():
        return [e.id for e in entries(number, step_key)]


def test_a_refused_form_can_be_corrected_and_sent_with_the_same_token(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("enrichment")
    client = login("tech1")
    data = step_page_form(app, client, number, "enrichment")
    refused = client.post(f"/batches/{number}/steps/enrichment", data={**data, "field-pre_tnc": "lots"})
    assert refused.status_code == 422
    assert hidden(refused.get_data(as_text=True))["form_token"] == data["form_token"]
    assert client.post(f"/batches/{number}/steps/enrichment", data=data).status_code == 302


def test_a_verification_sent_twice_signs_once(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("enrichment", verify=False)
    client = login("tech2")
    with app.app_context():
        entry_id = get_batch(number).entries[0].id
    page = client.get(f"/batches/{number}/entries/{entry_id}/verify").get_data(as_text=True)
    data = {**hidden(page), **signature("tech2")}
    assert client.post(f"/batches/{number}/entries/{entry_id}/verify", data=data).status_code == 302
    before = snapshot(app, number)
    again = client.post(f"/batches/{number}/entries/{entry_id}/verify", data=data)
    assert again.status_code == 409 and NOT_TWICE in words(again)
    assert snapshot(app, number) == before


def test_a_qc_result_and_a_deviation_sent_twice_are_recorded_once(app: Flask, make_batch, login: Login) -> None:
    number = make_batch()
    qc = login("qc1")
    page = qc.get(f"/batches/{number}/results/sterility").get_data(as_text=True)
    data = {"value": "no growth to date", **hidden(page), **signature("qc1")}
    assert qc.post(f"/batches/{number}/results/sterility", data=data).status_code == 302
    before = snapshot(app, number)
    assert qc.post(f"/batches/{number}/results/sterility", data=data).status_code == 409
    assert snapshot(app, number) == before

    tech = login("tech1")
    page = tech.get(f"/batches/{number}/deviations/new").get_data(as_text=True)
    data = {"title": "Label smudged", "description": "Relabelled the bag.", **hidden(page)}
    assert tech.post(f"/batches/{number}/deviations/new", data=data).status_code == 302
    again = tech.post(f"/batches/{number}/deviations/new", data=data)
    assert again.status_code == 409 and ALREADY_SENT in words(again)
    with app.app_context():
        assert [d.title for d in get_batch(number).deviations].count("Label smudged") == 1


def test_a_stale_page_names_who_changed_the_batch_and_keeps_the_input(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("enrichment", verify=False)
    client = login("tech1")
    data = step_page_form(app, client, number, "enrichment", pre_tnc="4.1e9")
    # Meanwhile tech2 verifies the receipt at another bench.
    other = app.test_client()
    other.post("/login", data={"username": "tech2", "password": signature("tech2")["password"]})
    with app.app_context():
        entry_id = get_batch(number).entries[0].id
    page = other.get(f"/batches/{number}/entries/{entry_id}/verify").get_data(as_text=True)
    assert other.post(f"/batches/{number}/entries/{entry_id}/verify",
                      data={**hidden(page), **signature("tech2")}).status_code == 302
    before = snapshot(app, number)
    stale = client.post(f"/batches/{number}/steps/enrichment", data=data)
    assert stale.status_code == 409
    assert "Theo Second changed this batch at" in words(stale) and "Nothing of yours was saved" in words(stale)
    assert 'value="4.1e9"' in stale.get_data(as_text=True)  # the input is kept
    assert snapshot(app, number) == before
    # Reviewed, saved again from the refreshed form: accepted once.
    retry = client.post(f"/batches/{number}/steps/enrichment", data={**data, **hidden(stale.get_data(as_text=True))})
    assert retry.status_code == 302, (hidden(stale.get_data(as_text=True)), words(retry)[:3000])


def test_the_same_form_in_two_tabs_tells_its_author_the_first_one_stands(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest")
    client = login("tech1")
    first = step_page_form(app, client, number, "expansion", culture_day="12")
    second = step_page_form(app, client, number, "expansion", culture_day="12")
    assert first["form_token"] != second["form_token"]
    assert client.post(f"/batches/{number}/steps/expansion", data=first).status_code == 302
    count = len(get_entries(app, number, "expansion"))
    response = client.post(f"/batches/{number}/steps/expansion", data=second)
    assert response.status_code == 409
    assert "You changed this batch at" in words(response)
    assert "What you saved first stands and nothing was recorded twice." in words(response)
    assert len(get_entries(app, number, "expansion")) == count


@pytest.mark.requirements("P11-10h")
def test_a_lot_or_equipment_label_scanned_into_the_search_box_says_where_it_belongs(
        app: Flask, make_batch, login: Login) -> None:
    make_batch("receipt")
    client = login("tech1")
    with app.app_context():
        lot = db.session.scalars(db.select(MaterialLot).where(MaterialLot.material == "medium")).first()
        assert lot is not None
        code, name = lot.code, lot.name
    response = client.get("/scan", query_string={"code": code})
    assert response.status_code == 400
    assert f"{code} is a material lot ({name}" in page_text(response)
    assert "Scan it into the lot field of the step you are recording" in page_text(response)
    with app.app_context():
        incubator = equipment_code(INCUBATOR)
    response = client.get("/scan", query_string={"code": incubator})
    assert response.status_code == 400 and f"{incubator} is equipment" in page_text(response)


@pytest.mark.requirements("P11-10h")
def test_a_container_label_scanned_into_a_lot_field_is_named_for_what_it_is(
        app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest")
    client = login("tech1")
    with app.app_context():
        bag = next(c.code for c in get_batch(number).containers if c.kind == "culture_bag")
    data = step_page_form(app, client, number, "expansion", culture_day="12", feed_volume_ml="100",
                          medium_lot=bag)
    before = snapshot(app, number)
    response = client.post(f"/batches/{number}/steps/expansion", data=data)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    message = f"{bag} is a container code, not a material lot: scan the label of the material lot itself."
    assert f'<p class="error" id="field-medium_lot-error">⚠ {message}</p>' in page_text(response)
    assert 'aria-describedby="field-medium_lot-error"' in html
    assert snapshot(app, number) == before

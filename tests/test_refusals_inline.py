"""Refusals answer next to what caused them (issue 14, item 5): the scan box's JSON answer and
its full-page refusal, a step form's lot and container fields, a reprint without a reason."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.demo import INCUBATOR, OVERDUE_INCUBATOR, equipment_code
from lab.extensions import db
from lab.models import AuditEvent, LabelPrint
from lab.services.equipment import find, take_out_of_service
from tests.factories import demo_lot, get_batch, page_text, post_step, snapshot, user
from tests.htmlcheck import problems

JSON = {"Accept": "application/json"}


def error_next_to(page: str, field_id: str) -> str:
    """The text of the error tied to the field ``field_id``: the field names it (aria-describedby)
    and it follows the field; "" when there is none."""
    field = re.search(rf'<(?:input|textarea|select)\b[^>]*\bid="{re.escape(field_id)}"[^>]*>', page)
    assert field is not None, f"no field {field_id}"
    assert f'aria-describedby="{field_id}-error"' in field[0] and 'aria-invalid="true"' in field[0], field[0]
    error = re.search(rf'<p class="error" id="{re.escape(field_id)}-error">(.*?)</p>', page[field.end():], re.DOTALL)
    return re.sub(r"\s+", " ", error[1]) if error else ""


def prints_and_audit(app: Flask) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(LabelPrint)) or 0,
                db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def container_code(app: Flask, number: str, kind: str) -> str:
    with app.app_context():
        return [c.code for c in get_batch(number).containers if c.kind == kind][-1]


# --- the scan box ------------------------------------------------------------------------------

@pytest.mark.parametrize(("lot_number", "said"), [("TEX-2501", "EXPIRED on "), ("LV-CD19-0043", "QUARANTINED")])
def test_an_unusable_lot_in_the_scan_box_is_named_for_its_state(app, make_batch, login, lot_number, said):
    make_batch("receipt")
    client = login("tech1")
    code = demo_lot(app, lot_number)
    page = client.get("/scan", query_string={"code": code})
    assert page.status_code == 400
    text = page_text(page)
    assert f"{code} is a material lot (" in text and said in text and "do not use it" in text
    assert re.search(r'<input id="scan-code"[^>]*\bautofocus\b', text)  # the next scan is not lost
    assert f'Scanned: <span class="scanned-code">{code}</span>' in text

    answer = client.get("/scan", query_string={"code": code}, headers=JSON)
    assert answer.status_code == 400 and answer.mimetype == "application/json"
    assert set(answer.json) == {"refusal"} and said in answer.json["refusal"] and code in answer.json["refusal"]


def test_equipment_that_a_step_would_refuse_is_named_for_its_state_in_the_scan_box(app, make_batch, login):
    make_batch("receipt")
    client = login("tech1")
    with app.app_context():
        overdue, broken = equipment_code(OVERDUE_INCUBATOR), equipment_code(INCUBATOR)
        item = find(broken)
        assert item is not None
        take_out_of_service(item, "Door seal torn", actor=user("super1"))
        db.session.commit()
    answer = client.get("/scan", query_string={"code": overdue}, headers=JSON)
    assert answer.status_code == 400 and "CALIBRATION OVERDUE since " in answer.json["refusal"]
    answer = client.get("/scan", query_string={"code": broken}, headers=JSON)
    assert answer.status_code == 400 and "OUT OF SERVICE (Door seal torn)" in answer.json["refusal"]


def test_a_usable_lot_in_the_scan_box_still_says_where_it_belongs(app, make_batch, login):
    make_batch("receipt")
    code = demo_lot(app, "TEX-2610")
    answer = login("tech1").get("/scan", query_string={"code": code}, headers=JSON)
    assert answer.status_code == 400
    refusal = answer.json["refusal"]
    assert "Scan it into the lot field" in refusal and not re.search(r"EXPIRED|QUARANTINED", refusal)


def test_a_code_the_scan_box_opens_answers_its_location(app, make_batch, login):
    number = make_batch(until="transduction")
    client = login("tech1")
    answer = client.get("/scan", query_string={"code": number.lower()}, headers=JSON)
    assert (answer.status_code, answer.json) == (200, {"location": f"/batches/{number}"})
    assert "Accept" in answer.headers["Vary"]  # the same address answers HTML to a browser without script
    bag = container_code(app, number, "culture_bag")
    answer = client.get("/scan", query_string={"code": bag}, headers=JSON)
    assert answer.status_code == 200
    assert answer.json["location"] == f"/batches/{number}/steps/transduction?field-culture_bag={bag}"
    assert client.get("/scan", query_string={"code": bag}).headers["Location"] == answer.json["location"]
    unknown = client.get("/scan", query_string={"code": "B-2099-9999"}, headers=JSON)
    assert unknown.status_code in (400, 404) and set(unknown.json) == {"refusal"}
    empty = client.get("/scan", query_string={"code": "  "}, headers=JSON)
    assert (empty.status_code, empty.json) == (400, {"refusal": "Scan or type a batch number or COI."})


# --- step forms --------------------------------------------------------------------------------

@pytest.mark.parametrize(("until", "field", "lot_number", "said"), [
    ("activation", "medium_lot", "TEX-2501", "EXPIRED on "),
    ("transduction", "vector_lot", "LV-CD19-0043", "is QUARANTINED"),
])
def test_an_unusable_lot_is_refused_next_to_its_field(app, make_batch, login, until, field, lot_number, said):
    number = make_batch(until=until)
    client = login("tech1")
    code = demo_lot(app, lot_number)
    before = snapshot(app, number)
    response = post_step(app, client, number, until, **{field: code})
    assert response.status_code == 422
    error = error_next_to(page_text(response), f"field-{field}")
    assert code in error and said in error
    assert snapshot(app, number) == before


def test_a_container_of_another_patient_is_refused_next_to_its_field(app, make_batch, login):
    mine = make_batch(until="activation", ref="SLE-01")
    theirs = make_batch(until="activation", ref="SLE-02")
    stranger = container_code(app, theirs, "culture_bag")
    response = post_step(app, login("tech1"), mine, "activation", culture_bag=stranger)
    assert response.status_code == 409
    error = error_next_to(page_text(response), "field-culture_bag")
    assert "COI MISMATCH" in error and stranger in error


# --- reprints ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reason", [None, "   "])
def test_a_reprint_without_a_reason_is_refused_next_to_the_reason_on_the_container_page(
        app, make_batch, login, reason: str | None):
    number = make_batch(until="enrichment")
    client = login("tech1")
    code = container_code(app, number, "apheresis_bag")  # printed by the recorder
    before = prints_and_audit(app)
    query: dict[str, Any] = {} if reason is None else {"reason": reason}
    for route in ("label.pdf", "label.zpl"):
        response = client.get(f"/containers/{code}/{route}", query_string=query)
        assert response.status_code == 422 and response.mimetype == "text/html"
        page = page_text(response)
        assert "<h1>Apheresis bag" in page and code in page  # the container's page, with its form
        assert "a reprint needs a reason" in error_next_to(page, "reason")
        assert problems(response.get_data(as_text=True)) == []
    assert prints_and_audit(app) == before


def test_a_reprint_from_the_batch_page_is_refused_next_to_its_reason(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    code = container_code(app, number, "apheresis_bag")
    before = prints_and_audit(app)
    response = client.get(f"/containers/{code}/label.pdf", query_string={"from": "batch", "reason": " "})
    assert response.status_code == 422
    page = page_text(response)
    assert f'<h1>Batch <span class="code">{number}</span>' in page
    assert "a reprint needs a reason" in error_next_to(page, f"reprint-{code}")
    assert 'id="sheet-reason-error"' not in page

    response = client.get(f"/batches/{number}/labels.pdf", query_string={"paper": "Letter", "reason": ""})
    assert response.status_code == 422
    page = page_text(response)
    assert f'<h1>Batch <span class="code">{number}</span>' in page
    assert "a reprint needs a reason" in error_next_to(page, "sheet-reason")
    assert problems(response.get_data(as_text=True)) == []
    assert "<option selected>Letter</option>" in page
    assert prints_and_audit(app) == before

    too_long = client.get(f"/batches/{number}/labels.pdf", query_string={"reason": "x" * 501})
    assert too_long.status_code == 422 and "at most 500 characters" in error_next_to(page_text(too_long),
                                                                                      "sheet-reason")
    assert prints_and_audit(app) == before
    printed = client.get(f"/batches/{number}/labels.pdf", query_string={"reason": "smudged"})
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    assert prints_and_audit(app)[0] > before[0]


def test_the_forms_open_the_refused_page_at_the_reason(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    code = container_code(app, number, "apheresis_bag")
    batch_page = page_text(client.get(f"/batches/{number}"))
    assert f'action="/batches/{number}/labels.pdf#sheet-reason"' in batch_page
    container_page = page_text(client.get(f"/containers/{code}"))
    assert f'formaction="/containers/{code}/label.zpl#reason"' in container_page

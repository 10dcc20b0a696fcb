"""The disposition page offers only the decisions possible now, each naming its signature
meaning, and the exceptional release only for an out-of-specification result; the QC results
page is one table, one row per test, with each result entered and signed in its row."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from lab.demo import RELEASE_RESULTS
from lab.extensions import db
from lab.models import Disposition, QcResult, Signature
from lab.services.progress import definition_for
from tests.factories import get_batch, page_text, signature, snapshot
from tests.quality import EXCEPTIONAL, post_decision, record_results, state, version, words

RADIO = re.compile(r'<input type="radio" name="decision" value="([a-z_]+)"')


def offered(response) -> list[str]:
    return RADIO.findall(response.get_data(as_text=True))


def row(response, test_key: str) -> str:
    """The HTML of the results table's row of ``test_key``."""
    html = page_text(response)
    start = html.index(f'<tr id="test-{test_key}"')
    return html[start:html.index("</tr>", start)]


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                for model in (QcResult, Signature, Disposition)}



def test_a_conforming_batch_is_offered_release_and_reject_but_no_exceptional_release(app, in_review, login):
    page = login("qa1").get(f"/batches/{in_review}/disposition")
    assert page.status_code == 200
    assert offered(page) == ["release", "reject", "hold"]
    html = page_text(page)
    assert "exceptional" not in html.lower() and 'name="physician_name"' not in html
    text = words(page)
    assert "Release : possible. Your signature means: approved for release ." in text
    assert "Reject : possible. Your signature means: rejected ." in text
    assert "Put on hold : possible. Your signature means: reviewed ." in text
    assert "Not possible now" not in text
    assert 'class="flag-text"' not in html  # nothing on the page reads as an error


def test_an_out_of_specification_result_offers_the_exceptional_release_naming_it(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    assert state(app, number) == "qa_review"
    page = login("qa1").get(f"/batches/{number}/disposition")
    assert offered(page) == ["exceptional_release", "reject", "hold"]
    text = words(page)
    assert ("Exceptional release (out of specification) : possible. Your signature means: approved for release ."
            in text)
    assert "Exceptional release of Viability 72 % (specification ≥ 80 %)" in text
    assert "Release : Viability is out of specification: 72 % (specification ≥ 80 %)." in text  # why not the normal one
    html = page_text(page)
    for key in EXCEPTIONAL:
        assert f'name="{key}"' in html


def test_release_waits_for_the_results_and_for_an_open_deviation_and_says_why(app, make_batch, login):
    number = make_batch()
    record_results(app, number, potency=None)
    assert state(app, number) == "qc_testing"
    assert offered(login("qa1").get(f"/batches/{number}/disposition")) == ["reject", "hold"]
    record_results(app, number, **{**dict.fromkeys(RELEASE_RESULTS), "potency": "412"})
    response = login("tech1").post(f"/batches/{number}/deviations/new",
                                   data={"title": "Shipper logger missing", "description": "Not in the box."})
    assert response.status_code == 302
    page = login("qa1").get(f"/batches/{number}/disposition")
    assert offered(page) == ["reject", "hold"]
    assert re.search(r"Not possible now Release : Open deviation: DEV-\d{4}-\d+ \(investigate and close first\)\.",
                     words(page))


def test_a_decision_not_offered_is_refused_with_its_reason_and_nothing_written(app, in_review, login):
    qa = login("qa1")
    assert "exceptional_release" not in offered(qa.get(f"/batches/{in_review}/disposition"))
    before, rows = snapshot(app, in_review), counts(app)
    response = post_decision(app, qa, in_review, "exceptional_release", **EXCEPTIONAL)
    assert response.status_code == 409
    assert "No result is out of specification: use the normal release." in page_text(response)
    assert offered(response) == ["release", "reject", "hold"]  # the page shows what is possible instead
    response = post_decision(app, qa, in_review, "lift_hold", reason="Nothing to lift.")
    assert response.status_code == 409
    assert "'Lift the hold' is taken only when it is on hold" in page_text(response)
    assert (snapshot(app, in_review), counts(app)) == (before, rows)


def test_the_results_page_is_one_table_with_one_row_per_test(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="19.2")
    with app.app_context():
        tests = [t.key for t in definition_for(get_batch(number)).release_tests]
    page = login("qc1").get(f"/batches/{number}/results")
    html = page_text(page)
    assert html.count('<table class="list qc-results">') == 1
    assert re.findall(r'<tr id="test-([a-z0-9_]+)"', html) == tests
    assert "<strong>19.2 %</strong>" in row(page, "viability") and "OUT OF SPECIFICATION" in row(page, "viability")
    assert "✔ Quinn Analyst — performed" in " ".join(re.sub(r"<[^>]+>", "", row(page, "viability")).split())
    assert 'name="value"' in row(page, "vcn")  # no result yet: entered in its row
    assert 'name="value"' not in row(page, "viability")  # a final result is corrected, not entered again
    assert 'name="value"' in row(page, "sterility")  # interim: the final result follows
    assert 'name="value"' not in row(page, "dose") and "Record the final result" not in row(page, "dose")


def test_a_result_entered_in_its_row_is_recorded_and_signed(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    page = qc.get(f"/batches/{number}/results")
    assert 'name="password"' in row(page, "viability") and 'name="username"' in row(page, "viability")
    response = qc.post(f"/batches/{number}/results/viability",
                       data={"inline": "1", "value": "91.5", "batch_version": version(app, number), **signature("qc1")})
    assert response.status_code == 302
    assert f"/batches/{number}/results#result-" in response.headers["Location"]
    with app.app_context():
        [result] = get_batch(number).results
        assert (result.test_key, result.text, result.verdict, result.recorded_by.username) == (
            "viability", "91.5", "pass", "qc1")
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "qc_result")).all()
        assert (signed.record_id, signed.meaning) == (result.id, "performed")
    page = qc.get(f"/batches/{number}/results")
    assert 'name="username"' not in row(page, "endotoxin")  # later signatures of this sign-in: the password only


def test_an_invalid_value_answers_in_its_row_and_nothing_is_written(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    before = counts(app)
    response = qc.post(f"/batches/{number}/results/viability",
                       data={"inline": "1", "value": "191", "batch_version": version(app, number), **signature("qc1")})
    assert response.status_code == 422
    mine = row(response, "viability")
    assert "Viability 191 % is impossible: results lie between 0 and 100 %." in mine
    assert 'value="191"' in mine and 'aria-invalid="true"' in mine
    assert "impossible" not in row(response, "endotoxin")
    response = qc.post(f"/batches/{number}/results/sterility",
                       data={"inline": "1", "value": "no growth", "batch_version": version(app, number),
                             "username": "qc1", "password": "wrong"})
    assert response.status_code in (401, 403, 422)
    assert "⚠" in row(response, "sterility")
    assert counts(app) == before


def test_only_a_qc_analyst_gets_the_row_forms(app, in_review, login):
    page = login("qa1").get(f"/batches/{in_review}/results")
    assert page.status_code == 200
    assert 'name="value"' not in page_text(page) and "Save and sign" not in page_text(page)


def test_a_row_form_for_a_test_no_longer_open_answers_at_the_top_and_writes_nothing(app, make_batch, login):
    number = make_batch()
    record_results(app, number)  # sterility interim: its final result is still open
    qc = login("qc1")
    data = {"inline": "1", "value": "no growth", **signature("qc1")}
    assert qc.post(f"/batches/{number}/results/sterility", data={**data, "batch_version": version(app, number)}) \
        .status_code == 302
    before = counts(app)
    response = qc.post(f"/batches/{number}/results/sterility", data={**data, "batch_version": version(app, number)})
    assert response.status_code == 409
    assert 'name="value"' not in row(response, "sterility")
    assert "Sterility already has its final result (no growth): correct it, giving a reason." in page_text(response)
    assert counts(app) == before

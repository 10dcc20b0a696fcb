"""QC release results over HTTP: judged on entry, signed, OOS opens a deviation, corrections
keep the old result, and results after release (a late failure holds the batch)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Deviation, QcResult, Signature, SigningFailure
from tests.factories import entries, get_batch, page_text, signature, snapshot
from tests.quality import post_result, record_results, release, state, version, words

pytestmark = pytest.mark.requirements("PROC-10", "PROC-11")


def results_of(app, number: str, test_key: str) -> list[QcResult]:
    with app.app_context():
        return [r for r in get_batch(number).results if r.test_key == test_key]


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                for model in (QcResult, Deviation, Signature, SigningFailure)}


def test_a_result_is_judged_on_entry_and_signed_by_the_analyst(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    form = qc.get(f"/batches/{number}/results/viability")
    assert form.status_code == 200
    assert "≥ 80 %" in page_text(form)
    response = post_result(app, qc, number, "viability", "91.5 %")
    assert response.status_code == 302
    assert "Viability: 91.5 % meets the specification (≥ 80 %)." in page_text(qc.get(response.headers["Location"]))
    with app.app_context():
        [result] = get_batch(number).results
        assert (result.text, result.number, result.unit, result.verdict, result.is_final) == (
            "91.5", 91.5, "%", "pass", True)
        assert (result.recorded_by.username, result.spec_text, result.is_late) == ("qc1", "≥ 80 %", False)
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "qc_result")).all()
        assert (signed.record_id, signed.meaning, signed.printed_name) == (result.id, "performed", "Quinn Analyst")
    assert "✔ Quinn Analyst — performed" in words(qc.get(f"/batches/{number}/results"))


def test_an_out_of_specification_result_opens_a_deviation_by_itself(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    assert post_result(app, qc, number, "endotoxin", "7.2", comment="Retest requested.").status_code == 302
    with app.app_context():
        [deviation] = get_batch(number).deviations
        assert (deviation.source, deviation.status, deviation.result.text) == ("oos", "open", "7.2")
        assert deviation.title == "Out of specification: Endotoxin: 7.2 EU/mL is OUT OF SPECIFICATION (< 5 EU/mL)."
        assert deviation.description == "Retest requested."
    page = page_text(qc.get(f"/batches/{number}"))
    assert "Open deviations (1)" in page and "OUT OF SPECIFICATION" in page


@pytest.mark.parametrize(("test_key", "value", "message"), [
    ("endotoxin", "negative", "Endotoxin: enter a number such as 91.5, not 'negative'."),
    ("viability", "91 mg", "Viability is entered in %: convert it to %, not 'mg'."),
    ("viability", "191", "Viability 191 % is impossible: results lie between 0 and 100 %."),
    ("mycoplasma", "0.1", "Mycoplasma: choose one of 'negative', 'positive', not '0.1'."),
    ("endotoxin", "< 20", "cannot show whether the product meets < 5 EU/mL"),
    ("viability", "", "Enter the result of Viability."),
])
def test_a_result_of_the_wrong_type_or_unit_is_refused_and_nothing_is_written(app, make_batch, login, test_key,
                                                                              value, message):
    number = make_batch()
    qc = login("qc1")
    before, batch_before = counts(app), snapshot(app, number)
    response = post_result(app, qc, number, test_key, value)
    assert response.status_code == 422
    assert message in page_text(response)
    assert counts(app) == before
    assert snapshot(app, number) == batch_before


def test_unknown_tests_and_results_are_404(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    assert qc.get(f"/batches/{number}/results/purity").status_code == 404
    assert post_result(app, qc, number, "purity", "1").status_code == 404
    assert qc.get(f"/batches/{number}/results/999/correct").status_code == 404


@pytest.mark.parametrize("username", ["tech1", "qa1", "auditor1", "admin"])
def test_only_a_qc_analyst_records_results(app, make_batch, login, username):
    number = make_batch()
    client = login(username)
    before = counts(app)
    response = post_result(app, client, number, "viability", "91")
    assert response.status_code == 403
    assert "Only a qc analyst may record QC results" in page_text(response)
    assert counts(app) == before


def test_results_wait_for_the_product(app, make_batch, login):
    number = make_batch(until="receipt")
    qc = login("qc1")
    response = post_result(app, qc, number, "viability", "91")
    assert response.status_code == 409
    assert "The batch is scheduled: QC results cannot be recorded." in page_text(response)


def test_the_batch_goes_to_qa_review_when_the_results_are_in(app, make_batch, login):
    number = make_batch()
    assert state(app, number) == "qc_testing"
    record_results(app, number, rcl=None)
    assert state(app, number) == "qc_testing"  # RCL is needed before release
    assert post_result(app, login("qc1"), number, "rcl", "not detected").status_code == 302
    assert state(app, number) == "qa_review"


def test_an_interim_result_is_followed_by_the_final_one(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    assert post_result(app, qc, number, "sterility", "no growth to date").status_code == 302
    assert post_result(app, qc, number, "sterility", "no growth").status_code == 302
    interim, final = results_of(app, number, "sterility")
    assert (interim.verdict, interim.is_final, final.verdict, final.is_final) == ("interim", False, "pass", True)
    assert final.supersedes_id is None  # a new result, not a correction
    response = post_result(app, qc, number, "sterility", "no growth")
    assert response.status_code == 409
    assert "Sterility already has its final result (no growth): correct it, giving a reason." in page_text(response)


def test_a_correction_supersedes_the_result_and_keeps_it(app, make_batch, login):
    number = make_batch()
    qc = login("qc1")
    assert post_result(app, qc, number, "viability", "19.2").status_code == 302  # transposed digits: OOS
    [wrong] = results_of(app, number, "viability")
    url = f"/batches/{number}/results/{wrong.id}/correct"
    response = qc.post(url, data={"value": "", "reason": "", "batch_version": version(app, number), **signature("qc1")})
    assert response.status_code == 422
    assert "Say why the result is corrected." in page_text(response)
    response = qc.post(url, data={"value": "19.2", "reason": "Checked.", "batch_version": version(app, number),
                                  **signature("qc1")})
    assert response.status_code == 422
    assert "The corrected result is the same as the current one." in page_text(response)
    response = qc.post(url, data={"value": "91.2", "reason": "Transposed digits: the print-out reads 91.2 %.",
                                  "batch_version": version(app, number), **signature("qc1")})
    assert response.status_code == 302
    old, new = results_of(app, number, "viability")
    assert (old.id, old.text, new.text, new.supersedes_id, new.verdict) == (wrong.id, "19.2", "91.2", wrong.id, "pass")
    assert new.reason == "Transposed digits: the print-out reads 91.2 %."
    page = page_text(qc.get(f"/batches/{number}/results"))
    assert "<del>19.2 %</del>" in page and "<strong>91.2 %</strong>" in page
    assert "✔ Quinn Analyst — corrected" in words(qc.get(f"/batches/{number}/results"))
    with app.app_context():  # the OOS deviation stays open for QA to close with its investigation
        [deviation] = get_batch(number).deviations
        assert deviation.is_open and deviation.result_id == wrong.id
    response = qc.post(url, data={"value": "92", "reason": "Again.", "batch_version": version(app, number),
                                  **signature("qc1")})
    assert response.status_code == 409
    assert "followed by a later one: correct the current result" in page_text(response)


def test_a_late_result_after_release_is_accepted(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    qc = login("qc1")
    assert post_result(app, qc, number, "sterility", "no growth").status_code == 302
    assert post_result(app, qc, number, "vcn", "2.1").status_code == 302
    assert state(app, number) == "released"
    assert all(r.is_late for r in results_of(app, number, "vcn"))
    with app.app_context():
        assert get_batch(number).deviations == []
    page = page_text(login("qa1").get(f"/batches/{number}/review"))
    assert "Vector copy number: 2.1 copies/cell recorded after release" in page


def test_211_192_a_late_failing_result_puts_the_released_batch_on_hold_and_shows_on_the_dashboard(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    qc = login("qc1")
    response = post_result(app, qc, number, "sterility", "growth", comment="Gram-positive cocci at day 11.")
    assert response.status_code == 302
    with app.app_context():
        batch = get_batch(number)
        assert (batch.state, batch.held_from) == ("on_hold", "released")
        [deviation] = batch.deviations
        assert deviation.source == "oos" and deviation.is_open
        assert deviation.title.startswith("Late failing result after release: Sterility: growth")
        number_of_deviation = deviation.number
    tech = login("tech1")
    dashboard = words(tech.get("/"))
    assert "Released batches on hold: late failing result" in dashboard
    assert f"{number} (patient SLE-01) was released and is now ON HOLD." in dashboard
    assert number_of_deviation in dashboard
    with app.app_context():  # on hold, the released record stays closed
        entry_id, version = entries(number, "receipt")[0].id, get_batch(number).version
    response = tech.post(f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct",
                         data={"value": "181", "reason": "Typo.", "batch_version": version, **signature("tech1")})
    assert response.status_code == 409
    assert f"Batch {number} was released: its record is closed to corrections." in page_text(response)


def test_results_are_not_corrected_after_release(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    [viability] = results_of(app, number, "viability")
    qc = login("qc1")
    before = counts(app)
    response = qc.post(f"/batches/{number}/results/{viability.id}/correct",
                       data={"value": "92", "reason": "Retyped.", "batch_version": version(app, number),
                             **signature("qc1")})
    assert response.status_code == 409
    assert "The batch was released on these results: they can no longer be corrected." in page_text(response)
    assert counts(app) == before

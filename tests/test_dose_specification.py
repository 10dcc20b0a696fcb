"""The dose specification follows the batch's target dose, and the dose result is the one
formulation filled or, when QC measures it, compared with it (issue 11 item 7): through the
pure functions of workflows/release.py (definition version 2) and through HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.demo import Recorder
from lab.extensions import db
from lab.models import QcResult, Signature
from lab.services.batches import start_batch
from lab.services.patients import PatientInput, register_patient
from lab.services.progress import definition_for
from lab.services.release_status import batch_spec_text
from tests.factories import PASSWORD, get_batch, page_text, post_step, signature, snapshot, user
from tests.quality import post_result, version, words
from workflows.definition import DEFINITIONS_DIR, load_definition, load_definition_text
from workflows.model import Bound, ProcessDefinition, Specification
from workflows.release import (
    FAIL,
    PASS,
    Basis,
    BatchFacts,
    CurrentResult,
    ResultRefused,
    basis_refusal,
    basis_steps,
    batch_basis,
    batch_spec,
    blockers,
    check_result,
    computed_refusal,
    computed_result_text,
    discrepancy,
    spec_text,
)

pytestmark = pytest.mark.requirements("PROC-16")

V1 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
V2 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v2.toml")
DOSE = V2.release_test("dose")
#: What formulation of a 58 kg patient records for a target of 1 × 10⁶ cells/kg at 2 × 10⁶ cells/mL.
FILLED = {"formulation.target_dose_per_kg": 1e6, "formulation.car_t_per_ml": 2e6, "formulation.volume_per_bag_ml": 29.0,
          "formulation.bags": 1, "patient.weight_kg": 58.0}
FLAG_50 = ("Dose: CAR+ viable T cells: 1.5 × 10⁶ cells/kg differs from the 1.00 × 10⁶ cells/kg computed from "
           "Formulation and fill by 50 %, more than the 20 % allowed.")


def dose_basis(**values: float) -> Basis:
    return batch_basis(V2, DOSE, {**FILLED, **{f"formulation.{k}": v for k, v in values.items()}})


# --- the pure functions ---------------------------------------------------------------------


def test_the_dose_basis_is_read_from_formulation_and_the_patients_weight():
    assert basis_steps(DOSE) == ("formulation",)
    assert dose_basis() == Basis(target=1e6, computed=pytest.approx(1e6), target_label="target dose",
                                 steps=("Formulation and fill",))
    assert dose_basis(volume_per_bag_ml=26.1).computed == pytest.approx(9e5)  # what was filled, not the target
    missing = batch_basis(V2, DOSE, {"patient.weight_kg": 58.0})
    assert (missing.target, missing.computed) == (None, None)
    assert basis_steps(V1.release_test("dose")) == () and basis_steps(V2.release_test("viability")) == ()


@pytest.mark.parametrize(("target", "words_"), [
    (1e6, "8.00 × 10⁵–1.20 × 10⁶ cells/kg (80–120 % of the target dose 1.00 × 10⁶ cells/kg)"),
    (2e6, "1.60 × 10⁶–2.40 × 10⁶ cells/kg (80–120 % of the target dose 2.00 × 10⁶ cells/kg)"),
    (1.5e5, "1.20 × 10⁵–1.80 × 10⁵ cells/kg (80–120 % of the target dose 1.50 × 10⁵ cells/kg)"),
])
def test_the_specification_is_relative_to_the_batchs_target_dose(target, words_):
    found = dose_basis(target_dose_per_kg=target)
    assert spec_text(DOSE, found) == words_
    assert batch_spec(DOSE, found) == Specification(Bound(target * 0.8), Bound(target * 1.2))


def test_without_the_target_the_specification_is_the_rule_alone():
    assert spec_text(DOSE) == "80–120 % of the batch's target"
    missing = batch_basis(V2, DOSE, {"patient.weight_kg": 58.0})
    assert spec_text(DOSE, missing) == "80–120 % of the target dose (not recorded yet)"
    assert batch_spec(DOSE, missing) is None
    refusal = ("Dose: CAR+ viable T cells is judged against the target dose recorded at Formulation and fill, which "
               "is not recorded yet: record Formulation and fill first.")
    assert basis_refusal(DOSE, missing) == refusal
    assert computed_refusal(DOSE, missing) == "Dose: CAR+ viable T cells cannot be computed yet: Formulation and fill " \
                                              "is not recorded."
    with pytest.raises(ResultRefused, match="which is not recorded yet"):
        check_result(DOSE, "1e6", missing)
    assert basis_refusal(DOSE, dose_basis()) is None and computed_refusal(DOSE, dose_basis()) is None


@pytest.mark.parametrize(("target", "text", "verdict"), [
    (1e6, "1.2e6", PASS),  # the limits themselves pass
    (1e6, "8e5", PASS),
    (1e6, "7.99e5", FAIL),
    (1e6, "1.21e6 cells/kg", FAIL),
    (2e6, "1.2e6", FAIL),  # in specification for a target of 1 × 10⁶, not of 2 × 10⁶
    (2e6, "2.3e6", PASS),
    (1e6, "< 1e5", FAIL),
])
def test_a_dose_is_judged_against_its_batchs_target(target, text, verdict):
    check = check_result(DOSE, text, dose_basis(target_dose_per_kg=target))
    assert check.verdict == verdict
    assert check.specification == spec_text(DOSE, dose_basis(target_dose_per_kg=target))
    assert f"({check.specification})." in check.message


def test_a_measured_dose_far_from_the_computed_one_is_flagged_naming_both():
    check = check_result(DOSE, "1.5e6", dose_basis())
    assert (check.verdict, check.discrepancy) == (FAIL, FLAG_50)
    # Within the target range yet 29 % above what formulation filled (9.00 × 10⁵ cells/kg): kept, passes, flagged.
    filled_less = dose_basis(volume_per_bag_ml=26.1)
    check = check_result(DOSE, "1.16e6", filled_less)
    assert check.verdict == PASS
    assert check.discrepancy == ("Dose: CAR+ viable T cells: 1.16 × 10⁶ cells/kg differs from the 9.00 × 10⁵ cells/kg "
                                 "computed from Formulation and fill by 28.9 %, more than the 20 % allowed.")
    assert check_result(DOSE, "1.08e6", filled_less).discrepancy == ""  # 20 %: the tolerance itself is allowed
    assert check_result(DOSE, "1.081e6", filled_less).discrepancy != ""
    assert check_result(DOSE, "1.1e6", dose_basis()).discrepancy == ""
    assert check_result(DOSE, "< 1e5", dose_basis()).discrepancy == ""  # a censored result is no measured value
    assert discrepancy(V1.release_test("dose"), dose_basis(), "1.5e6") == ""  # v1 has no computed dose


@pytest.mark.parametrize(("computed", "text"), [
    (1e6, "1.00e6"), (999999.9999999999, "1.00e6"), (1234567.0, "1.23e6"), (1235000.0, "1.24e6"),
    (9996000.0, "1.00e7"), (32.25, "32.3"),
])
def test_the_computed_dose_is_written_as_a_result_rounded_half_up(computed, text):
    found = Basis(target=1e6, computed=computed, target_label="target dose", steps=("Formulation and fill",))
    assert computed_result_text(found) == text
    if computed > 1e5:
        assert check_result(DOSE, text, found).discrepancy == ""


def test_version_1_keeps_its_absolute_dose_specification():
    dose = V1.release_test("dose")
    assert spec_text(dose) == spec_text(dose, dose_basis(target_dose_per_kg=2e6)) == "8.00 × 10⁵–1.20 × 10⁶ cells/kg"
    assert check_result(dose, "1.3e6").verdict == FAIL
    assert check_result(dose, "1.3e6", dose_basis(target_dose_per_kg=2e6)).verdict == FAIL


def test_release_names_the_specification_the_dose_was_judged_against():
    check = check_result(DOSE, "1.5e6", dose_basis())
    facts = BatchFacts(progress={}, results={"dose": CurrentResult(check.verdict, True, check.text,
                                                                   check.specification)})
    assert ("Dose: CAR+ viable T cells is out of specification: 1.5 × 10⁶ cells/kg (specification 8.00 × 10⁵–1.20 × "
            "10⁶ cells/kg (80–120 % of the target dose 1.00 × 10⁶ cells/kg)).") in blockers(
        V2, V2.decision("release"), facts)


# --- through HTTP ----------------------------------------------------------------------------

SPEC_1E6 = "8.00 × 10⁵–1.20 × 10⁶ cells/kg (80–120 % of the target dose 1.00 × 10⁶ cells/kg)"


def dose_results(app: Flask, number: str) -> list[QcResult]:
    with app.app_context():
        return [r for r in get_batch(number).results if r.test_key == "dose"]


def result_count(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(QcResult)) or 0


def use_computed(app: Flask, client: Any, number: str, value: str = "", **extra: str) -> Any:
    return post_result(app, client, number, "dose", value, use_computed="1", **extra)


def test_before_formulation_the_dose_cannot_be_judged_and_says_why(app, make_batch, login, never_500):
    number = make_batch(until="formulation")
    qc = login("qc1")
    page = words(qc.get(f"/batches/{number}/results"))
    assert ("Dose: CAR+ viable T cells CAR+ viable T cells filled (formulation) per kg body weight; or measured: viable "
            "count × CD3+ × CAR+ 80–120 % of the target dose (not recorded yet) Final result needed before release "
            "Computed from the batch record: not yet, Formulation and fill not recorded") in page
    before, results = snapshot(app, number), result_count(app)
    message = ("Dose: CAR+ viable T cells is judged against the target dose recorded at Formulation and fill, which "
               "is not recorded yet: record Formulation and fill first.")
    for response in (qc.get(f"/batches/{number}/results/dose"), post_result(app, qc, number, "dose", "1e6")):
        assert response.status_code == 409
        assert message in words(response)
    response = use_computed(app, qc, number)
    assert response.status_code == 409
    assert "Dose: CAR+ viable T cells cannot be computed yet: Formulation and fill is not recorded." in words(response)
    assert (snapshot(app, number), result_count(app)) == (before, results)


def test_the_specification_follows_the_target_dose_typed_at_formulation(app, make_batch, login, never_500):
    number = make_batch(until="formulation")
    response = post_step(app, login("tech1"), number, "formulation", target_dose_per_kg="2e6", car_t_per_ml="2.0e6")
    assert response.status_code == 302
    qc = login("qc1")
    spec = "1.60 × 10⁶–2.40 × 10⁶ cells/kg (80–120 % of the target dose 2.00 × 10⁶ cells/kg)"
    page = words(qc.get(f"/batches/{number}/results"))
    assert f"× CD3+ × CAR+ {spec} Final result needed before release" in page
    assert "Computed from the batch record: 2.00 × 10⁶ cells/kg" in page
    assert f"Specification {spec}" in words(qc.get(f"/batches/{number}/results/dose"))
    with app.app_context():  # what the CoA and the batch record print
        batch = get_batch(number)
        assert batch_spec_text(batch, definition_for(batch).release_test("dose")) == spec
    # 1.02 × 10⁶ cells/kg met a target of 1 × 10⁶; for this batch it is out of specification, and far from the dose filled.
    response = post_result(app, qc, number, "dose", "1.02e6", comment="Measured on the QC sample.")
    assert response.status_code == 302
    [result] = dose_results(app, number)
    assert (result.text, result.verdict, result.spec_text) == ("1.02e6", FAIL, spec)
    with app.app_context():
        [deviation] = get_batch(number).deviations
        assert (deviation.source, deviation.result_id) == ("oos", result.id)
        assert deviation.title == ("Out of specification: Dose: CAR+ viable T cells: 1.02 × 10⁶ cells/kg is OUT OF "
                                   f"SPECIFICATION ({spec}).")
        assert deviation.description == (
            "Dose: CAR+ viable T cells: 1.02 × 10⁶ cells/kg differs from the 2.00 × 10⁶ cells/kg computed from "
            "Formulation and fill by 49 %, more than the 20 % allowed.\nMeasured on the QC sample.")


def test_qc_records_the_computed_dose_signed_as_any_result(app, make_batch, login, never_500):
    number = make_batch()
    qc = login("qc1")
    form = words(qc.get(f"/batches/{number}/results/dose"))
    assert f"Specification {SPEC_1E6}" in form
    assert "Record the computed result (1.00 × 10⁶ cells/kg)" in form
    response = use_computed(app, qc, number, comment="Calculation checked against the formulation record.")
    assert response.status_code == 302
    [result] = dose_results(app, number)
    with app.app_context():
        assert db.session.get(QcResult, result.id).recorded_by.username == "qc1"
    assert (result.text, result.number, result.verdict, result.is_final, result.spec_text) == (
        "1.00e6", 1e6, PASS, True, SPEC_1E6)
    assert result.comment == ("Computed from the batch record (Formulation and fill): formulation.car_t_per_ml * "
                              "formulation.volume_per_bag_ml * formulation.bags / patient.weight_kg.\n"
                              "Calculation checked against the formulation record.")
    with app.app_context():
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "qc_result")).all()
        assert (signed.record_id, signed.meaning, signed.printed_name) == (result.id, "performed", "Quinn Analyst")
        assert get_batch(number).deviations == []
    page = words(qc.get(f"/batches/{number}/results"))
    assert f"Dose: CAR+ viable T cells: 1.00 × 10⁶ cells/kg meets the specification ({SPEC_1E6})." in page
    assert "Computed from the batch record: 1.00 × 10⁶ cells/kg 1.00 × 10⁶ cells/kg pass" in page  # its row
    assert "✔ Quinn Analyst — performed" in page and "⚑" not in page


def test_a_measured_dose_far_from_the_computed_one_is_kept_and_flagged_with_a_deviation(app, make_batch, login, never_500):
    number = make_batch()
    qc = login("qc1")
    response = post_result(app, qc, number, "dose", "1.5e6", comment="Flow count of the QC sample.")
    assert response.status_code == 302
    flashed = words(qc.get(response.headers["Location"]))
    [result] = dose_results(app, number)  # kept as typed
    assert (result.text, result.verdict) == ("1.5e6", FAIL)
    with app.app_context():
        [deviation] = get_batch(number).deviations
        assert (deviation.source, deviation.result_id, deviation.is_open) == ("oos", result.id, True)
        assert deviation.description == f"{FLAG_50}\nFlow count of the QC sample."
        number_of_deviation = deviation.number
    assert f"Deviation {number_of_deviation} opened" in flashed
    page = words(qc.get(f"/batches/{number}/results"))
    assert f"⚑ {FLAG_50}" in page
    assert f"Deviation {number_of_deviation} (open)" in page
    review = words(login("qa1").get(f"/batches/{number}/review"))
    assert re.search(r"Out-of-limit values \(1\)", review)
    assert f"{FLAG_50} current result" in review


def test_a_measured_dose_within_tolerance_is_neither_flagged_nor_a_deviation(app, make_batch, login, never_500):
    number = make_batch()
    qc = login("qc1")
    assert post_result(app, qc, number, "dose", "1.1e6").status_code == 302
    [result] = dose_results(app, number)
    assert (result.verdict, result.spec_text) == (PASS, SPEC_1E6)
    with app.app_context():
        assert get_batch(number).deviations == []
    assert "⚑" not in words(qc.get(f"/batches/{number}/results"))


@pytest.mark.parametrize(("value", "extra", "message"), [
    ("1,0e6", {}, "Dose: CAR+ viable T cells: use a dot for decimals"),
    ("lots", {}, "Dose: CAR+ viable T cells: enter a number such as 1.2e9, not 'lots'."),
    ("1e6 cells", {}, "Dose: CAR+ viable T cells is entered in cells/kg: convert it to cells/kg, not 'cells'."),
    ("-5", {}, "Dose: CAR+ viable T cells -5 cells/kg is impossible"),
    ("1e12", {}, "Dose: CAR+ viable T cells 1e12 cells/kg is impossible"),
    ("1e6", {"use_computed": "1"}, "Either type a measured result or record the computed one, not both"),
])
def test_a_malformed_dose_is_refused_next_to_the_field_and_nothing_is_written(app, make_batch, login, never_500, value, extra,
                                                                             message):
    number = make_batch()
    qc = login("qc1")
    before, results = snapshot(app, number), result_count(app)
    response = post_result(app, qc, number, "dose", value, **extra)
    assert response.status_code == 422
    field_error = re.search(r'<p class="error" id="value-error">(.*?)</p>', page_text(response), re.DOTALL)
    assert field_error is not None and message in field_error.group(1)
    assert (snapshot(app, number), result_count(app)) == (before, results)


def test_a_correction_of_the_dose_is_judged_and_compared_again(app, make_batch, login, never_500):
    number = make_batch()
    qc = login("qc1")
    assert post_result(app, qc, number, "dose", "1.5e6").status_code == 302
    [wrong] = dose_results(app, number)
    response = qc.post(f"/batches/{number}/results/{wrong.id}/correct",
                       data={"value": "1.05e6", "reason": "Transcription error: the print-out reads 1.05e6.",
                             "batch_version": version(app, number), **signature("qc1")})
    assert response.status_code == 302
    _, corrected = dose_results(app, number)
    assert (corrected.text, corrected.verdict, corrected.spec_text) == ("1.05e6", PASS, SPEC_1E6)
    page = words(qc.get(f"/batches/{number}/results"))
    assert page.count("⚑") == 1  # the corrected result stays flagged on record; the correction is not


@pytest.fixture
def batch_on(app: Flask, users: dict[str, int], inventory: None) -> Callable[[ProcessDefinition], str]:
    """A batch pinned to ``definition``, recorded up to QC as make_batch records one."""
    def _make(definition: ProcessDefinition) -> str:
        with app.app_context():
            now = datetime.now(UTC)
            start = now - timedelta(days=14)
            patient = register_patient(PatientInput("SLE-11", "VO", date(1985, 4, 2), 58.0, "SLE"),
                                       actor=user("super1"), now=start)
            batch = start_batch(patient, actor=user("super1"), now=start, definition=definition)
            Recorder(user("tech1"), user("tech2"), PASSWORD, now).run(batch, start, expansion=(
                {"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "92"},))
            db.session.commit()
            return batch.batch_number
    return _make


def test_a_measured_dose_in_specification_but_far_from_the_computed_one_opens_a_deviation(app, batch_on, login,
                                                                                          never_500):
    """A definition whose computed dose is not the target (here: 10 % of the filled volume
    lost in the bag): in specification, yet 27.8 % above what was filled, is kept and flagged."""
    source = V2.source_text.replace("version = 2", "version = 99").replace(
        'computed = "formulation.car_t_per_ml * formulation.volume_per_bag_ml * formulation.bags / patient.weight_kg"',
        'computed = "formulation.car_t_per_ml * formulation.volume_per_bag_ml * 0.9 * formulation.bags / '
        'patient.weight_kg"')
    number = batch_on(load_definition_text(source, "cd19_car_t_v99.toml"))
    qc = login("qc1")
    assert "Computed from the batch record: 9.00 × 10⁵ cells/kg" in words(qc.get(f"/batches/{number}/results"))
    assert post_result(app, qc, number, "dose", "1.15e6", comment="Flow count of the QC sample.").status_code == 302
    [result] = dose_results(app, number)
    assert (result.text, result.verdict) == ("1.15e6", PASS)
    flag = ("Dose: CAR+ viable T cells: 1.15 × 10⁶ cells/kg differs from the 9.00 × 10⁵ cells/kg computed from "
            "Formulation and fill by 27.8 %, more than the 20 % allowed.")
    with app.app_context():
        [deviation] = get_batch(number).deviations
        assert (deviation.source, deviation.result_id, deviation.title, deviation.description) == (
            "limit", result.id, flag, "Flow count of the QC sample.")
    assert f"⚑ {flag}" in words(qc.get(f"/batches/{number}/results"))
    review = words(login("qa1").get(f"/batches/{number}/review"))
    assert f"{flag} current result" in review


def test_a_version_1_batch_keeps_its_absolute_dose_specification(app, batch_on, login, never_500):
    number = batch_on(V1)
    qc = login("qc1")
    page = words(qc.get(f"/batches/{number}/results"))
    assert "per kg body weight 8.00 × 10⁵–1.20 × 10⁶ cells/kg Final result needed before release" in page
    assert "Computed from the batch record" not in page
    assert "Record the computed result" not in words(qc.get(f"/batches/{number}/results/dose"))
    response = use_computed(app, qc, number)  # v1 computes no dose
    assert response.status_code == 409
    assert "Dose: CAR+ viable T cells is not computed from the batch record: enter the result." in words(response)
    assert post_result(app, qc, number, "dose", "1.3e6").status_code == 302
    [result] = dose_results(app, number)
    assert (result.verdict, result.spec_text) == (FAIL, "8.00 × 10⁵–1.20 × 10⁶ cells/kg")

"""Judging QC results and QA decisions without a database (workflows/release.py)."""

import pytest

from workflows.definition import DEFINITIONS_DIR, load_definition
from workflows.engine import next_state
from workflows.engine_types import StepProgress
from workflows.release import (
    FAIL,
    INTERIM,
    PASS,
    BatchFacts,
    CurrentResult,
    ResultRefused,
    blockers,
    check_result,
    correction_refusal,
    decision_refusal,
    pending,
    result_refusal,
    results_in,
    state_after_result,
)

pytestmark = pytest.mark.requirements("PROC-10", "PROC-12")

DEFINITION = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
TEST = DEFINITION.release_test
DONE = {s.key: StepProgress(entries=s.min_entries) for s in DEFINITION.steps}
PASSING = {"appearance": "conforms", "viability": "91", "cd3_identity": "96", "car_expression": "34",
           "dose": "1e6", "sterility": "no growth to date", "mycoplasma": "negative", "endotoxin": "< 0.5",
           "potency": "412", "rcl": "not detected"}


def current(**texts: str) -> dict[str, CurrentResult]:
    results = {}
    for key, text in texts.items():
        check = check_result(TEST(key), text)
        results[key] = CurrentResult(check.verdict, check.final, check.text)
    return results


def facts(results: dict[str, CurrentResult] | None = None, **changes) -> BatchFacts:
    return BatchFacts(**{"progress": DONE, "results": current(**PASSING) if results is None else results, **changes})


@pytest.mark.parametrize(("key", "text", "verdict", "canonical"), [
    ("viability", "91.5", PASS, "91.5"),
    ("viability", "80", PASS, "80"),  # ≥ 80 %: the limit itself passes
    ("viability", "79.9 %", FAIL, "79.9"),
    ("viability", " 91.5 pct ", PASS, "91.5"),
    ("endotoxin", "4.99", PASS, "4.99"),
    ("endotoxin", "5", FAIL, "5"),  # < 5 EU/mL: the limit itself fails
    ("endotoxin", "< 0.5 EU/mL", PASS, "< 0.5"),  # below the limit of quantitation
    ("endotoxin", "<5", PASS, "< 5"),
    ("endotoxin", "> 5", FAIL, "> 5"),
    ("potency", "> 1000", PASS, "> 1000"),
    ("dose", "1.2e6", PASS, "1.2e6"),
    ("dose", "1.3e6 cells/kg", FAIL, "1.3e6"),
    ("sterility", "No Growth", PASS, "no growth"),
    ("sterility", "growth", FAIL, "growth"),
    ("sterility", "no  growth to date", INTERIM, "no growth to date"),
    ("mycoplasma", "positive", FAIL, "positive"),
])
def test_a_result_is_judged_against_its_specification(key, text, verdict, canonical):
    check = check_result(TEST(key), text)
    assert (check.verdict, check.text) == (verdict, canonical)
    assert check.final is (verdict != INTERIM)
    assert TEST(key).title in check.message
    if verdict == FAIL:
        assert "OUT OF SPECIFICATION" in check.message


def test_the_verdict_says_the_specification_in_words():
    assert check_result(TEST("endotoxin"), "7").message == "Endotoxin: 7 EU/mL is OUT OF SPECIFICATION (< 5 EU/mL)."
    assert check_result(TEST("viability"), "91").message == "Viability: 91 % meets the specification (≥ 80 %)."
    assert check_result(TEST("endotoxin"), "7").number == 7.0


@pytest.mark.parametrize(("key", "text", "message"), [
    ("endotoxin", "negative", "Endotoxin: enter a number such as 91.5, not 'negative'."),
    ("endotoxin", "3 mg", "Endotoxin is entered in EU/mL: convert it to EU/mL, not 'mg'."),
    ("viability", "91,5", "Viability: use a dot for decimals"),
    ("viability", "120", "Viability 120 % is impossible: results lie between 0 and 100 %."),
    ("endotoxin", "< 0", "Endotoxin < 0 EU/mL is impossible"),
    ("endotoxin", "< 10", "Endotoxin < 10 EU/mL cannot show whether the product meets < 5 EU/mL"),
    ("viability", "> 50", "Viability > 50 % cannot show whether the product meets ≥ 80 %"),
    ("mycoplasma", "0.3", "Mycoplasma: choose one of 'negative', 'positive', not '0.3'."),
    ("sterility", "sterile", "Sterility: choose one of 'no growth', 'growth', 'no growth to date', not 'sterile'."),
    ("sterility", "   ", "Enter the result of Sterility."),
])
def test_a_result_of_the_wrong_type_unit_or_range_is_refused(key, text, message):
    with pytest.raises(ResultRefused) as info:
        check_result(TEST(key), text)
    assert message in str(info.value)


def test_results_are_in_when_each_test_has_what_qa_needs():
    assert results_in(DEFINITION, current(**PASSING))
    assert not results_in(DEFINITION, current(**{k: v for k, v in PASSING.items() if k != "mycoplasma"}))
    assert not results_in(DEFINITION, current(**{k: v for k, v in PASSING.items() if k != "sterility"}))
    assert results_in(DEFINITION, current(**{**PASSING, "viability": "60"}))  # in, though out of specification
    assert [t.key for t in pending(DEFINITION, current(**PASSING))] == ["vcn", "sterility"]


def test_the_automatic_transitions_move_a_batch_to_qa_review_once_results_are_in():
    assert next_state(DEFINITION, "in_process", DONE) == "qc_testing"
    assert next_state(DEFINITION, "in_process", DONE, results_in=True) == "qa_review"
    assert next_state(DEFINITION, "qc_testing", DONE, results_in=True) == "qa_review"
    assert next_state(DEFINITION, "released", DONE, results_in=True) == "released"


def test_release_needs_nothing_more_when_everything_conforms():
    assert blockers(DEFINITION, DEFINITION.decision("release"), facts()) == []


@pytest.mark.parametrize(("change", "reason"), [
    ({"progress": {**DONE, "storage": StepProgress()}}, "Steps not recorded: Storage (LN2 vapour phase)."),
    ({"progress": {**DONE, "harvest": StepProgress(entries=1, unverified=1)}},
     "Entries awaiting verification by a second person: Harvest and wash."),
    ({"results": current(**{k: v for k, v in PASSING.items() if k != "potency"})},
     "No result yet for Potency: IFN-γ release."),
    ({"results": current(**{**PASSING, "mycoplasma": "positive"})},
     "Mycoplasma is out of specification: positive (specification negative)."),
    ({"results": current(**{**PASSING, "viability": "61"})},
     "Viability is out of specification: 61 % (specification ≥ 80 %)."),
    ({"open_deviations": {"DEV-2026-0001": "limit"}}, "Open deviation: DEV-2026-0001 (investigate and close first)."),
    ({"unsigned": ("Harvest and wash: not signed by its author",)},
     "Missing or invalidated signatures: Harvest and wash: not signed by its author."),
])
def test_release_is_blocked_by_each_missing_condition(change, reason):
    assert blockers(DEFINITION, DEFINITION.decision("release"), facts(**change)) == [reason]


@pytest.mark.requirements("PROC-11")
def test_a_late_test_does_not_block_release_but_its_failure_does():
    assert blockers(DEFINITION, DEFINITION.decision("release"), facts(current(**PASSING))) == []
    failed_vcn = current(**{**PASSING, "vcn": "7"})
    assert blockers(DEFINITION, DEFINITION.decision("release"), facts(failed_vcn)) == [
        "Vector copy number is out of specification: 7 copies/cell (specification < 5 copies/cell)."]


@pytest.mark.requirements("PROC-14")
def test_exceptional_release_waives_the_out_of_specification_results_and_their_deviations_only():
    decision = DEFINITION.decision("exceptional_release")
    oos = current(**{**PASSING, "viability": "72"})
    assert blockers(DEFINITION, decision, facts(oos, open_deviations={"DEV-2026-0002": "oos"})) == []
    assert blockers(DEFINITION, decision, facts(oos, open_deviations={"DEV-2026-0003": "limit"})) == [
        "Open deviation: DEV-2026-0003 (investigate and close first)."]
    assert blockers(DEFINITION, decision, facts()) == ["No result is out of specification: use the normal release."]
    missing = current(**{k: v for k, v in {**PASSING, "viability": "72"}.items() if k != "rcl"})
    assert blockers(DEFINITION, decision, facts(missing)) == ["No result yet for Replication-competent lentivirus."]


def test_lifting_a_hold_needs_every_deviation_closed():
    decision = DEFINITION.decision("lift_hold")
    assert blockers(DEFINITION, decision, facts(open_deviations={"DEV-1": "oos", "DEV-2": "limit"})) == [
        "Open deviations: DEV-1, DEV-2 (investigate and close first)."]
    assert blockers(DEFINITION, DEFINITION.decision("reject"), facts(open_deviations={"DEV-1": "oos"})) == []


def test_a_decision_is_taken_only_from_its_source_states():
    assert decision_refusal(DEFINITION, DEFINITION.decision("release"), "qa_review") is None
    assert decision_refusal(DEFINITION, DEFINITION.decision("release"), "qc_testing") == (
        "The batch is in QC testing: 'Release' is taken only when it is in QA review.")
    assert decision_refusal(DEFINITION, DEFINITION.decision("lift_hold"), "released") == (
        "The batch is released: 'Lift the hold' is taken only when it is on hold.")


def test_when_results_may_be_recorded_and_corrected():
    sterility = TEST("sterility")
    assert result_refusal(DEFINITION, sterility, "scheduled", None) == (
        "The batch is scheduled: QC results cannot be recorded.")
    assert result_refusal(DEFINITION, sterility, "released", current(sterility="no growth to date")["sterility"]) is None
    assert result_refusal(DEFINITION, sterility, "qa_review", current(sterility="no growth")["sterility"]) == (
        "Sterility already has its final result (no growth): correct it, giving a reason.")
    assert correction_refusal(DEFINITION, "qa_review", was_released=False) is None
    assert "can no longer be corrected" in correction_refusal(DEFINITION, "on_hold", was_released=True)
    assert "can no longer be corrected" in correction_refusal(DEFINITION, "rejected", was_released=False)


@pytest.mark.requirements("PROC-11")
def test_a_failing_result_after_release_puts_the_batch_on_hold():
    growth = check_result(TEST("sterility"), "growth")
    assert state_after_result(DEFINITION, "released", growth) == "on_hold"
    assert state_after_result(DEFINITION, "shipped", growth) == "on_hold"
    assert state_after_result(DEFINITION, "qa_review", growth) is None  # before release: a deviation, no hold
    assert state_after_result(DEFINITION, "released", check_result(TEST("sterility"), "no growth")) is None

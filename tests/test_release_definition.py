"""The release panel and QA decisions as data: the shipped definition, and strict refusal of
malformed release tests and decisions (workflows/definition.py)."""

import pytest

from workflows.definition import DEFINITIONS_DIR, DefinitionError, load_definition, load_definition_text
from workflows.model import Bound, Specification
from workflows.release import spec_text

pytestmark = pytest.mark.requirements("PROC-1", "PROC-10")

SHIPPED = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")


def test_the_shipped_panel_is_domain_section_2():
    assert [t.key for t in SHIPPED.release_tests] == [
        "appearance", "viability", "cd3_identity", "car_expression", "dose", "vcn", "sterility", "mycoplasma",
        "endotoxin", "potency", "rcl", "residual_beads"]
    assert {t.key: spec_text(t) for t in SHIPPED.release_tests} == {
        "appearance": "Slightly turbid cell dispersion; bag intact",
        "viability": "≥ 80 %",
        "cd3_identity": "≥ 80 %",
        "car_expression": "≥ 10 %",
        "dose": "8.00 × 10⁵–1.20 × 10⁶ cells/kg",
        "vcn": "< 5 copies/cell",
        "sterility": "no growth",
        "mycoplasma": "negative",
        "endotoxin": "< 5 EU/mL",
        "potency": "> 50 pg/mL",
        "rcl": "not detected",
        "residual_beads": "< 100 beads/3e6 cells",
    }
    sterility = SHIPPED.release_test("sterility")
    assert (sterility.interim, sterility.before_release) == (("no growth to date",), "interim")
    assert SHIPPED.release_test("vcn").before_release == "none"  # obtained post-release (Aleksandrova 2024)
    beads = SHIPPED.release_test("residual_beads")
    assert (beads.required, beads.before_release) == (False, "none")  # TransAct leaves no beads
    assert SHIPPED.release_test("endotoxin").spec == Specification(None, Bound(5, inclusive=False))


def test_the_shipped_decisions_and_release_rules():
    decisions = {d.key: d for d in SHIPPED.decisions}
    assert list(decisions) == ["release", "exceptional_release", "reject", "hold", "lift_hold"]
    assert {d.role for d in SHIPPED.decisions} == {"qa_officer"}
    assert (decisions["release"].source, decisions["release"].target, decisions["release"].meaning) == (
        ("qa_review",), "released", "approved for release")
    assert decisions["reject"].meaning == "rejected"
    assert decisions["lift_hold"].target is None  # back to where it was held from
    assert not decisions["hold"].independent and decisions["release"].independent
    assert SHIPPED.release is not None
    assert SHIPPED.release.released_states == ("released", "shipped")
    assert SHIPPED.release.late_failure_state == "on_hold"


BASE = """
key = "mini"
version = 1
title = "Mini"
product = "Test"
initial_state = "open"
recording_states = ["open"]
[states]
open = "Open"
done = "Done"
[[steps]]
key = "count"
title = "Count"
role = "technician"
verify = false
  [[steps.fields]]
  key = "n"
  label = "N"
  type = "integer"
  min = 0
  max = 10
[release]
result_states = ["open"]
released_states = ["done"]
late_failure_state = "open"
"""
NUMBER = """
[[release_tests]]
key = "viability"
title = "Viability"
method = "Flow"
kind = "number"
unit = "%"
min = 0
max = 100
spec_min = 80
"""
RESULT = """
[[release_tests]]
key = "sterility"
title = "Sterility"
method = "Culture"
kind = "result"
choices = ["no growth", "growth"]
passing = ["no growth"]
"""
DECISION = """
[[decisions]]
key = "release"
title = "Release"
source = ["open"]
target = "done"
role = "qa_officer"
meaning = "approved for release"
requires = "release"
"""


def test_a_minimal_panel_loads():
    definition = load_definition_text(BASE + NUMBER + RESULT + DECISION, "mini.toml")
    assert [t.key for t in definition.release_tests] == ["viability", "sterility"]
    assert definition.decision("release").requires == "release"


@pytest.mark.parametrize(("text", "reason"), [
    (BASE.replace("[release]", "[unused]") + NUMBER, "definition: unknown key 'unused'"),
    (BASE[:BASE.index("[release]")] + NUMBER, "release tests need a [release] table"),
    (BASE + NUMBER.replace("spec_min = 80", "spec_min = 120"),
     "the specification ≥ 120 % lies outside the valid range 0 to 100: no result could meet it"),
    (BASE + NUMBER.replace("spec_min = 80", "spec_min = 0"),
     "every value in the valid range 0 to 100 meets the specification ≥ 0 %, so no result could fail it"),
    (BASE + NUMBER.replace("spec_min = 80", "spec_above = 5\nspec_below = 5"),
     "the specification > 5 and < 5 % is empty: no result could meet it"),
    (BASE + NUMBER.replace("spec_min = 80", "spec_min = 80\nspec_above = 70"), "give spec_min or spec_above, not both"),
    (BASE + NUMBER.replace("spec_min = 80", ""), "give a specification"),
    (BASE + NUMBER.replace("spec_min = 80", "spec_min = \"80\""), "'spec_min' must be a number, not '80'"),
    (BASE + NUMBER.replace('unit = "%"', ""), "release test 'viability': missing required key 'unit'"),
    (BASE + NUMBER.replace('kind = "number"', 'kind = "text"'), "unknown kind 'text' (use one of number, result)"),
    (BASE + NUMBER + 'choices = ["a", "b"]\n', "'choices' does not apply to a number test"),
    (BASE + NUMBER.replace("spec_min", "spec_minimum"), "unknown key 'spec_minimum'"),
    (BASE + NUMBER + 'before_release = "interim"\n', "a number test has no interim results"),
    (BASE + NUMBER + 'before_release = "later"\n', "unknown before_release 'later'"),
    (BASE + NUMBER + "required = false\n", "an optional test (required = false) cannot be needed before release"),
    (BASE + NUMBER + NUMBER, "duplicate release test key 'viability'"),
    (BASE + RESULT.replace('passing = ["no growth"]', 'passing = ["no growth", "growth"]'),
     "every choice passes, so no result could fail the specification"),
    (BASE + RESULT.replace('passing = ["no growth"]', 'passing = ["sterile"]'),
     "passing result 'sterile' is not one of the choices"),
    (BASE + RESULT.replace('choices = ["no growth", "growth"]', 'choices = ["no growth"]'),
     "a result test needs at least two choices"),
    (BASE + RESULT + 'interim = ["growth"]\n', "interim result 'growth' is also a final choice"),
    (BASE + RESULT + 'before_release = "interim"\n', 'before_release = "interim" needs interim results'),
    (BASE + DECISION.replace('target = "done"', 'target = "gone"'), "state 'gone' is not declared"),
    (BASE + DECISION.replace('target = "done"', ""), "give either a target state or resume = true"),
    (BASE + DECISION.replace('target = "done"', 'target = "done"\nresume = true'),
     "give either a target state or resume = true"),
    (BASE + DECISION.replace('meaning = "approved for release"', 'meaning = "approved"'), "unknown meaning 'approved'"),
    (BASE + DECISION.replace('requires = "release"', 'requires = "luck"'), "unknown requires 'luck'"),
    (BASE + DECISION.replace('role = "qa_officer"', 'role = "boss"'), "unknown role 'boss'"),
    (BASE + DECISION.replace('target = "done"', 'target = "open"'), "target 'open' is also a source state"),
    (BASE + DECISION + DECISION, "duplicate decision key 'release'"),
    (BASE.replace('late_failure_state = "open"', 'late_failure_state = "held"'), "state 'held' is not declared"),
])
def test_a_malformed_panel_or_decision_is_refused(text, reason):
    with pytest.raises(DefinitionError) as info:
        load_definition_text(text, "mini.toml")
    assert info.value.source_name == "mini.toml"
    assert reason in info.value.reason


SHIPPED_V2 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v2.toml")


def test_version_2_judges_the_dose_against_the_batchs_target_dose():
    dose = SHIPPED_V2.release_test("dose")
    assert (dose.spec, dose.target, dose.target_low_pct, dose.target_high_pct, dose.tolerance_pct) == (
        Specification(), "formulation.target_dose_per_kg", 80, 120, 20)
    assert dose.computed == ("formulation.car_t_per_ml * formulation.volume_per_bag_ml * formulation.bags / "
                             "patient.weight_kg")
    assert spec_text(dose) == "80–120 % of the batch's target"
    others = {t.key: spec_text(t) for t in SHIPPED_V2.release_tests if t.key != "dose"}
    assert others == {t.key: spec_text(t) for t in SHIPPED.release_tests if t.key != "dose"}


RELATIVE = """
[[release_tests]]
key = "dose"
title = "Dose"
method = "Computed from the count"
kind = "number"
unit = "cells/kg"
min = 0
max = 1e9
target = "count.n"
target_low_pct = 80
target_high_pct = 120
computed = "count.n * 2 / patient.weight_kg"
tolerance_pct = 20
"""


def test_a_relative_specification_with_a_computed_value_loads():
    dose = load_definition_text(BASE + RELATIVE, "mini.toml").release_test("dose")
    assert (dose.target, dose.computed, dose.spec) == ("count.n", "count.n * 2 / patient.weight_kg", Specification())


@pytest.mark.parametrize(("old", "new", "reason"), [
    ('target = "count.n"', 'target = "count.m"', "target 'count.m' is not a number field of a step (<step>.<field>)"),
    ("target_low_pct = 80", "target_low_pct = 100", "a target needs target_low_pct below 100 and target_high_pct"),
    ("target_high_pct = 120", "target_high_pct = 90", "a target needs target_low_pct below 100 and target_high_pct"),
    ('target = "count.n"', "", "target_low_pct and target_high_pct need a target"),
    ('computed = "count.n * 2 / patient.weight_kg"', 'computed = "count.x * 2"', "computed uses 'count.x'"),
    ('computed = "count.n * 2 / patient.weight_kg"', 'computed = "count.n * abs(count.n, 1)"',
     "computed: abs() takes"),
    ('computed = "count.n * 2 / patient.weight_kg"', 'computed = "count.n * "', "computed: "),
    ("tolerance_pct = 20", "tolerance_pct = 0", "a computed value needs tolerance_pct above 0"),
    ('computed = "count.n * 2 / patient.weight_kg"', "", "tolerance_pct needs a computed value"),
])
def test_a_malformed_relative_specification_is_refused(old, new, reason):
    with pytest.raises(DefinitionError) as info:
        load_definition_text(BASE + RELATIVE.replace(old, new), "mini.toml")
    assert reason in info.value.reason

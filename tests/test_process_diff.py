"""What changed between two versions of a definition, in words (workflows.diff)."""

from __future__ import annotations

import re

import pytest

from workflows.definition import DEFINITIONS_DIR, load_definition_text
from workflows.diff import MAX_CHANGES, describe_changes
from workflows.model import ProcessDefinition

pytestmark = pytest.mark.requirements("A11-10")

V2 = (DEFINITIONS_DIR / "cd19_car_t_v2.toml").read_text(encoding="utf-8")


def changed(text: str, *replacements: tuple[str, str], version: int = 3) -> ProcessDefinition:
    """Version 2's text with each (old, new) replaced once, as a new version."""
    for old, new in replacements:
        assert text.count(old) >= 1, old
        text = text.replace(old, new, 1)
    text = re.sub(r"^version = 2$", f"version = {version}", text, count=1, flags=re.MULTILINE)
    return load_definition_text(text, f"cd19_car_t_v{version}.toml")


@pytest.fixture
def v2() -> ProcessDefinition:
    return load_definition_text(V2, "cd19_car_t_v2.toml")


def said(old: ProcessDefinition, new: ProcessDefinition) -> list[str]:
    return [str(change) for change in describe_changes(old, new)]


def test_the_same_definition_has_no_changes(v2):
    assert describe_changes(v2, changed(V2)) == []
    assert describe_changes(v2, changed(V2, ("# Schema: workflows", "# The schema: workflows"))) == []


def test_a_changed_limit_says_the_field_the_side_and_both_values(v2):
    new = changed(V2, (("limit_min = 70  # ≥ 70 % (ARI-0001 viability spec, DOMAIN §2)\n\n  [[steps.fields]]\n"
                       "  key = \"cd3_purity_pct\""), "limit_min = 80\n\n  [[steps.fields]]\n  key = \"cd3_purity_pct\""))
    assert said(v2, new) == ["Step T-cell enrichment (enrichment): Viability after enrichment limit_min 70 → 80 %"]


def test_a_limit_added_and_a_valid_range_changed(v2):
    new = changed(V2, ("  limit_min = 50  # ≥ 50 mL", "  limit_max = 1500\n  limit_min = 50  # ≥ 50 mL"),
                  ("  min = 0\n  max = 2000\n", "  min = 0\n  max = 3000\n"))
    assert said(v2, new) == [
        "Step Apheresis receipt (receipt): Volume: valid range 0–2000 mL → 0–3000 mL",
        "Step Apheresis receipt (receipt): Volume: limit_max 1500 mL added",
    ]


def test_steps_and_fields_added_and_removed(v2):
    new = changed(V2, ('  [[steps.fields]]\n  key = "documents_complete"', '  [[steps.fields]]\n  key = "papers"'),
                  ('title = "Storage (LN2 vapour phase)"', 'title = "Storage in LN2"'))
    texts = said(v2, new)
    assert "Step Apheresis receipt (receipt): field added: Documents complete (papers)" in texts
    assert "Step Apheresis receipt (receipt): field removed: Documents complete (documents_complete)" in texts
    assert "Step Storage in LN2 (storage): step: title “Storage (LN2 vapour phase)” → “Storage in LN2”" in texts
    storage = V2.index("# --- 9. Storage")
    release = V2.index("# --- Release testing panel")
    without_storage = load_definition_text(V2[:storage] + V2[release:], "cd19_car_t_v3.toml")
    assert "Steps: step removed: Storage (LN2 vapour phase) (storage)" in said(v2, without_storage)
    assert "Steps: step added: Storage (LN2 vapour phase) (storage)" in said(without_storage, v2)


def test_a_window_a_specification_and_the_dose_range(v2):
    new = changed(V2, ("window = { after = \"activation\", min_days = 12, max_days = 13 }",
                       "window = { after = \"activation\", min_days = 11, max_days = 13 }"),
                  ("spec_min = 80  # ≥ 80 % (Kymriah", "spec_min = 85  # ≥ 85 % (Kymriah"),
                  ('initial_state = "scheduled"\n', ('initial_state = "scheduled"\ndose = { unit = "cells/kg", '
                   'min = 5e5, max = 1e6, default = 1e6 }\n')))
    texts = said(v2, new)
    assert ("Step Harvest and wash (harvest): step: time window day 12–13 after activation → "
            "day 11–13 after activation") in texts
    assert "Release tests: Viability: specification ≥ 80 % → ≥ 85 %" in texts
    assert ("Dose: target dose chosen at scheduling added: 5 × 10⁵–1 × 10⁶ cells/kg, default 1 × 10⁶ cells/kg"
            in texts)


def test_version_1_to_2_names_its_changes(v2):
    v1 = load_definition_text((DEFINITIONS_DIR / "cd19_car_t_v1.toml").read_text(encoding="utf-8"),
                              "cd19_car_t_v1.toml")
    texts = said(v1, v2)
    assert "Step Formulation and fill (formulation): containers made (product_bag): at most 50 → 10" in texts
    assert "Step Cryopreservation (cryopreservation): Run end: not before none → “run_start”" in texts
    assert "Containers: Final product bag: shelf life (days) none → 365" in texts
    assert len(texts) < MAX_CHANGES

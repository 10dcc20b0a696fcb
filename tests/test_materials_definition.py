"""Consumption and lot-derived values in process definitions (issue 13 item 1): what the parser
refuses, and what the engine takes from a lot's balance. Pure: no Flask, no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from workflows.definition import DEFINITIONS_DIR, DefinitionError, load_definition, load_definition_text
from workflows.engine import lot_uses, validate_entry
from workflows.engine_types import EntryContext, LotInfo

pytestmark = pytest.mark.requirements("MAT-2")

V2 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v2.toml")
V3_TEXT = (DEFINITIONS_DIR / "cd19_car_t_v3.toml").read_text(encoding="utf-8")
V3 = load_definition_text(V3_TEXT, "cd19_car_t_v3.toml")
NEXT_YEAR = date.today() + timedelta(days=365)
ACTIVATION = {"cells_seeded": "1e8", "transact_lot": "TRA-1", "transact_volume_ml": "2", "medium_lot": "TEX-1",
              "medium_volume_ml": "250", "cytokine_lot": "IL-1", "processor": "P-1"}


def context(**lots: LotInfo) -> EntryContext:
    base = {"TRA-1": LotInfo("TRA-1", "transact", "TransAct", NEXT_YEAR, "released", 10.0, "mL"),
            "TEX-1": LotInfo("TEX-1", "medium", "TexMACS", NEXT_YEAR, "released", 1000.0, "mL"),
            "IL-1": LotInfo("IL-1", "cytokine", "IL-7/IL-15", NEXT_YEAR, "released", 5.0, "vials")}
    return EntryContext(now=datetime.now(UTC), tz=ZoneInfo("UTC"), patient={"weight_kg": 60, "coi": "X"},
                        batch_coi="X", lots={**base, **lots})


def errors(raw: dict[str, str], ctx: EntryContext) -> dict[str, str]:
    result = validate_entry(V3.step("activation"), {**ACTIVATION, **raw}, ctx)
    return {k: v for k, v in result.errors.items() if k != "culture_bag" and k != "processor"}


def test_version_3_takes_amounts_from_lots_and_earlier_versions_take_none():
    step = V3.step("activation")
    ctx = context()
    result = validate_entry(step, ACTIVATION, ctx)
    values = {k: v for k, v in result.values.items()}
    assert lot_uses(step, values) == [("transact_lot", "TRA-1", 2.0), ("medium_lot", "TEX-1", 250.0)]
    assert [f.key for f in V3.step("enrichment").fields if f.uses_amount == 1] == [
        "cd4_microbeads_lot", "cd8_microbeads_lot", "tubing_set_lot"]
    assert not [f for s in V2.steps for f in s.fields if f.uses or f.uses_amount or f.from_lot]
    assert V3.step("transduction").field("titer_tu_per_ml").from_lot == "vector_lot"


def test_more_than_the_balance_is_refused_on_the_amount_field():
    ctx = context(**{"TRA-1": LotInfo("TRA-1", "transact", "TransAct", NEXT_YEAR, "released", 1.5, "mL")})
    assert errors({}, ctx)["transact_volume_ml"] == "Lot TRA-1 has only 1.5 mL left; this entry uses 2 mL."


def test_an_amount_in_another_unit_than_the_lot_is_refused():
    ctx = context(**{"TEX-1": LotInfo("TEX-1", "medium", "TexMACS", NEXT_YEAR, "released", 10.0, "bottles")})
    assert errors({}, ctx)["medium_volume_ml"] == (
        "Lot TEX-1 is counted in bottles; Medium volume is in mL: the amount cannot be taken from its balance.")


def test_a_lot_without_balance_is_not_counted():
    ctx = context(**{"TRA-1": LotInfo("TRA-1", "transact", "TransAct", NEXT_YEAR, "released")})
    assert "transact_volume_ml" not in errors({"transact_volume_ml": "50"}, ctx)


@pytest.mark.parametrize(("old", "new", "reason"), [
    ('  uses = "transact_volume_ml"\n', '  uses = "processor"\n',
     "uses = 'processor' is not a number field with a unit of this step"),
    ('  uses = "transact_volume_ml"\n', '  uses = "transact_volume_ml"\n  uses_amount = 1\n',
     "give uses or uses_amount, not both"),
    ("  uses_amount = 1  # one tubing set per run\n", "  uses_amount = -1\n", "uses_amount must be positive, not -1"),
    ('  from_lot = "vector_lot"\n', '  from_lot = "culture_bag"\n',
     "from_lot = 'culture_bag' is not a lot field of this step"),
    ('  uses = "vector_volume_ml"\n', '  uses = 7.5\n', "'uses' must be"),
])
def test_a_malformed_consumption_is_refused_with_the_file_and_the_reason(old, new, reason):
    assert old in V3_TEXT
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(V3_TEXT.replace(old, new, 1), "broken.toml")
    assert caught.value.source_name == "broken.toml"
    assert reason in caught.value.reason

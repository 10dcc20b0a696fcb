"""The process engine (workflows/engine.py) against the shipped CD19 CAR-T definition."""

import dataclasses
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from workflows import (
    ContainerInfo,
    EntryContext,
    EquipmentInfo,
    LotInfo,
    PriorEntry,
    StepProgress,
    StepState,
    can_start,
    compute_derived,
    format_number,
    formula,
    load_definition,
    next_state,
    scanned_codes,
    step_states,
    typed_value,
    validate_entry,
)
from workflows.codes import CodeKind, make_code
from workflows.definition import DEFINITIONS_DIR, load_definition_text
from workflows.model import FieldSpec, Limits

pytestmark = pytest.mark.requirements("A11-6")

DEFINITION = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
STEP = {step.key: step for step in DEFINITION.steps}
BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in November
NOW = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # 12:00 in the lab
TODAY = date(2026, 11, 25)
COI = str(make_code(CodeKind.COI, "A9999", 2026, 1))  # CH-A9999-26-000001-*
OTHER_COI = str(make_code(CodeKind.COI, "A9999", 2026, 2))  # CH-A9999-26-000002-Y
NEXT_YEAR = date(2027, 6, 30)

LOTS = {
    code: LotInfo(code, material, name, expiry, status)
    for code, material, name, expiry, status in [
        ("CD4-101", "cd4_microbeads", "CD4 MicroBeads", NEXT_YEAR, "released"),
        ("CD8-202", "cd8_microbeads", "CD8 MicroBeads", NEXT_YEAR, "released"),
        ("TS520-7", "tubing_set", "Tubing set TS520", NEXT_YEAR, "released"),
        ("TA-001", "transact", "TransAct", NEXT_YEAR, "released"),
        ("MED-11", "medium", "TexMACS GMP", NEXT_YEAR, "released"),
        ("IL2-5", "cytokine", "IL-2", NEXT_YEAR, "released"),
        ("VEC-7", "lentiviral_vector", "CD19 CAR LV", NEXT_YEAR, "released"),
        ("VEC-Q", "lentiviral_vector", "CD19 CAR LV", NEXT_YEAR, "quarantined"),
        ("VEC-R", "lentiviral_vector", "CD19 CAR LV", NEXT_YEAR, "rejected"),
        ("VEC-OLD", "lentiviral_vector", "CD19 CAR LV", date(2026, 10, 1), "released"),
        ("VEC-TODAY", "lentiviral_vector", "CD19 CAR LV", TODAY, "released"),
        ("CRYO-3", "cryomedium", "CryoStor CS10", NEXT_YEAR, "released"),
        ("BAG-9", "cryobag", "CryoMACS 250", NEXT_YEAR, "released"),
    ]
}
EQUIPMENT = {
    item.code: item
    for item in [
        EquipmentInfo("PRO-1", "cell_processor", "CliniMACS Prodigy", NEXT_YEAR),
        EquipmentInfo("BSC-01", "biosafety_cabinet", "Biosafety cabinet", NEXT_YEAR),
        EquipmentInfo("BSC-OFF", "biosafety_cabinet", "Biosafety cabinet", NEXT_YEAR, is_active=False),
        EquipmentInfo("INC-01", "incubator", "Incubator", NEXT_YEAR),
        EquipmentInfo("INC-02", "incubator", "Incubator", date(2026, 11, 1)),
        EquipmentInfo("INC-03", "incubator", "Incubator", None),
        EquipmentInfo("CRF-1", "controlled_rate_freezer", "Controlled-rate freezer", NEXT_YEAR),
        EquipmentInfo("LN2-1", "ln2_freezer", "LN2 freezer", None),
    ]
}


BATCH = "B-A9999-26-00001-5"
APHERESIS, CULTURE, BAG_1, BAG_2 = (str(make_code(CodeKind.CONTAINER, "A9999", 2026, n)) for n in range(1, 5))
CONTAINERS = {
    item.code: item
    for item in [
        ContainerInfo(APHERESIS, "apheresis_bag", "Apheresis bag", BATCH, COI, "in use"),
        ContainerInfo(CULTURE, "culture_bag", "Culture bag", BATCH, COI, "in use"),
        ContainerInfo(BAG_1, "product_bag", "Final product bag 1 of 2", BATCH, COI, "in use"),
        ContainerInfo(BAG_2, "product_bag", "Final product bag 2 of 2", BATCH, COI, "in use"),
    ]
}


def entry(values, *, hours_ago=0.0):
    return PriorEntry(values=values, recorded_at=NOW - timedelta(hours=hours_ago))


ACTIVATION = entry({"cells_seeded": 1e8}, hours_ago=30)  # day 1 of culture
HARVEST = entry(
    {"total_viable_cells": 3e9, "viability_pct": 92.0, "cd3_pct": 95.0, "car_pct": 40.0}, hours_ago=24
)


def context(**changes):
    ctx = EntryContext(
        now=NOW,
        tz=BERLIN,
        patient={"weight_kg": 58, "coi": COI},
        batch_coi=COI,
        prior={"activation": [ACTIVATION], "harvest": [HARVEST]},
        lots=LOTS,
        equipment=EQUIPMENT,
        batch_number=BATCH,
        containers=CONTAINERS,
    )
    return dataclasses.replace(ctx, **changes)


RECEIPT = {
    "coi_on_bag": COI,
    "collection_end": "2026-11-25 03:00",  # Berlin: 02:00 UTC, 9 h before NOW
    "shipping_temp_min": "4.1",
    "shipping_temp_max": "6.8",
    "volume_ml": "180",
    "bag_intact": "yes",
    "documents_complete": "yes",
    "decision": "accept",
}
ENRICHMENT = {
    "apheresis_bag": APHERESIS,
    "pre_tnc": "1e10",
    "post_viable_cells": "5.5e9",
    "post_viability_pct": "96",
    "cd3_purity_pct": "97.5",
    "cd4_microbeads_lot": "CD4-101",
    "cd8_microbeads_lot": "CD8-202",
    "tubing_set_lot": "TS520-7",
    "processor": "PRO-1",
}
TRANSDUCTION = {
    "culture_bag": CULTURE,
    "vector_lot": "VEC-7",
    "titer_tu_per_ml": "1e8",
    "vector_volume_ml": "0.5",
    "viable_cells": "1e7",
    "biosafety_cabinet": "BSC-01",
}
EXPANSION = {
    "culture_bag": CULTURE,
    "culture_day": "5",
    "viable_cells": "3e9",
    "viability_pct": "91.5",
    "feed_volume_ml": "",
    "medium_lot": "",
    "incubator": "INC-01",
}
FORMULATION = {
    "culture_bag": CULTURE,
    "target_dose_per_kg": "1e6",
    "car_t_per_ml": "5e5",
    "max_fill_ml": "70",
    "cryomedium_lot": "CRYO-3",
    "bag_lot": "BAG-9",
    "biosafety_cabinet": "BSC-01",
}
CRYO = {
    "product_bags": f"{BAG_1}\n{BAG_2}",
    "freezer": "CRF-1",
    "program": "CAR-T v3",
    "run_start": "2026-11-25 08:00",
    "run_end": "2026-11-25 10:30",
    "profile_ok": "yes",
}
STORAGE = {"product_bags": f"{BAG_1}\n{BAG_2}", "ln2_freezer": "LN2-1", "rack": "R2", "box": "B7", "position": "A3", "freezer_temp_c": "-165"}


def check(step_key, raw, base=None, **ctx_changes):
    """validate_entry for ``step_key`` with ``raw`` overriding the fields of ``base``."""
    return validate_entry(STEP[step_key], {**(base or {}), **raw}, context(**ctx_changes))


def error(step_key, base, field, text, **ctx_changes):
    result = check(step_key, {field: text}, base, **ctx_changes)
    assert list(result.errors) == [field], result.errors
    return result.errors[field]


# --- receipt: COI, date-times, limits, hold ----------------------------------------------------


def test_a_conforming_receipt():
    result = check("receipt", RECEIPT)
    assert result.ok and not result.needs_comment and not result.hold and result.window_message == ""
    assert list(result.values) == [f.key for f in STEP["receipt"].fields]
    assert result.values["coi_on_bag"].text == COI
    assert result.values["collection_end"].text == "2026-11-25T02:00Z"
    assert result.values["collection_end"].value == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert result.values["bag_intact"].value is True
    assert result.values["volume_ml"].value == 180.0
    hours = result.derived["hours_since_collection"]
    assert (hours.value, hours.unit, hours.out_of_limit, hours.limit_text) == (9.0, "h", False, "≤ 12 h")
    assert result.values["shipping_temp_max"].limit_text == "2–8 °C"
    assert result.values["volume_ml"].limit_text == "≥ 50 mL"
    assert result.values["decision"].limit_text == "accept"


@pytest.mark.requirements("PROC-3")
def test_fourteen_hours_since_collection_is_flagged():
    result = check("receipt", {"collection_end": "2026-11-24 22:00"}, RECEIPT)
    hours = result.derived["hours_since_collection"]
    assert result.ok and hours.value == 14.0 and hours.out_of_limit
    assert hours.message == "Hours from end of collection to receipt 14 h is above the limit of 12 h."
    assert result.exceptions == [hours] and result.needs_comment


def test_rejecting_the_bag_asks_for_a_hold_and_is_a_deviation():
    result = check("receipt", {"decision": "REJECT", "bag_intact": "n"}, RECEIPT)
    assert result.ok and result.hold
    assert result.values["decision"].text == "reject"
    assert result.values["decision"].message == "Decision is 'reject': expected accept."
    assert result.values["bag_intact"].message == "Bag intact is 'no': expected yes."
    assert [v.key for v in result.exceptions] == ["bag_intact", "decision"]


def test_coi_mismatch_is_refused_unmistakably():
    message = error("receipt", RECEIPT, "coi_on_bag", OTHER_COI)
    assert message == (
        f"COI MISMATCH: the bag is labelled {OTHER_COI} but this batch belongs to patient {COI}. "
        "Do not use this bag."
    )


def test_coi_typed_in_lower_case_without_hyphens_matches():
    result = check("receipt", {"coi_on_bag": " cha999926000001* \n"}, RECEIPT)
    assert result.ok and result.values["coi_on_bag"].text == COI


def test_coi_with_a_wrong_check_character_is_refused():
    message = error("receipt", RECEIPT, "coi_on_bag", "CH-A9999-26-000001-Y")
    assert message.startswith(
        "COI on the bag label: 'CH-A9999-26-000001-Y': the check character does not match"
    )


def test_malformed_coi_is_refused():
    message = error("receipt", RECEIPT, "coi_on_bag", "B-A9999-26-00001-5")
    assert message == (
        "COI on the bag label: 'B-A9999-26-00001-5' is not a COI (expected the form CH-A9999-26-000001-*)."
    )


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("2026-11-25T08:30", "2026-11-25T07:30Z"),
        ("2026-11-25 08:30", "2026-11-25T07:30Z"),
        ("2026-11-25 08:30:15", "2026-11-25T07:30:15Z"),
        ("2026-11-25T08:30:00+01:00", "2026-11-25T07:30:00Z"),
        ("2026-11-25T07:30Z", "2026-11-25T07:30Z"),
        ("2026-11-25t03:30-0400", "2026-11-25T07:30Z"),
        ("  2026-07-01 08:30 ", "2026-07-01T06:30Z"),  # summer time: UTC+2
    ],
)
def test_datetime_formats(typed, canonical):
    result = check("receipt", {"collection_end": typed}, RECEIPT)
    assert result.values["collection_end"].text == canonical
    assert (
        typed_value(STEP["receipt"].field("collection_end"), canonical)
        == result.values["collection_end"].value
    )


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("2026-11-25 12:06", "End of collection cannot be in the future (it is now 2026-11-25 12:00)."),
        ("2026-11-26 08:00", "End of collection cannot be in the future (it is now 2026-11-25 12:00)."),
        ("1999-12-31 23:00", "End of collection: 1999-12-31T22:00Z is before the year 2000; check the date."),
        (
            "25/11/2026 08:30",
            "End of collection: enter a date and time such as 2026-11-25 08:30, not '25/11/2026 08:30'.",
        ),
        (
            "2026-11-25",
            "End of collection: enter a date and time such as 2026-11-25 08:30, not '2026-11-25'.",
        ),
        (
            "2026-02-30 08:00",
            "End of collection: enter a date and time such as 2026-11-25 08:30, not '2026-02-30 08:00'.",
        ),
        (
            "2026-11-25 24:30",
            "End of collection: enter a date and time such as 2026-11-25 08:30, not '2026-11-25 24:30'.",
        ),
        ("", "Enter a value for End of collection."),
    ],
)
def test_datetime_refusals(typed, message):
    assert error("receipt", RECEIPT, "collection_end", typed) == message


def test_a_clock_a_few_minutes_fast_is_tolerated():
    assert check("receipt", {"collection_end": "2026-11-25 12:04"}, RECEIPT).ok


# --- numbers and units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical", "value"),
    [
        ("180", "180", 180.0),
        ("  180.5 ", "180.5", 180.5),
        ("180 mL", "180", 180.0),
        ("180ml", "180", 180.0),
        ("180 ML", "180", 180.0),
        ("+180", "180", 180.0),
        ("1.8E2", "1.8e2", 180.0),
        ("1.8e+2", "1.8e+2", 180.0),
        (".5e3", ".5e3", 500.0),
    ],
)
def test_number_formats(typed, canonical, value):
    result = check("receipt", {"volume_ml": typed}, RECEIPT)
    assert result.ok
    assert (result.values["volume_ml"].text, result.values["volume_ml"].value) == (canonical, value)
    assert typed_value(STEP["receipt"].field("volume_ml"), canonical) == value


@pytest.mark.parametrize("typed", ["5 C", "5 °C", "5degC", "5 DEGC", "5°c"])
def test_temperature_unit_aliases(typed):
    assert check("receipt", {"shipping_temp_min": typed}, RECEIPT).values["shipping_temp_min"].value == 5.0


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("abc", "Volume: enter a number such as 91.5, not 'abc'."),
        ("1,5", "Volume: use a dot for decimals and no thousands separators (for example 91.5), not '1,5'."),
        (
            "1,500",
            "Volume: use a dot for decimals and no thousands separators (for example 91.5), not '1,500'.",
        ),
        ("1 500", "Volume: use no thousands separators, not '1 500'."),
        ("NaN", "Volume: enter a number such as 91.5, not 'NaN'."),
        ("inf", "Volume: enter a number such as 91.5, not 'inf'."),
        ("-inf", "Volume: enter a number such as 91.5, not '-inf'."),
        ("1e309", "Volume: '1e309' is too large to be a measured value."),
        ("-5", "Volume must be between 0 and 2000 mL."),
        ("2001", "Volume must be between 0 and 2000 mL."),
        ("1.2.3", "Volume: enter a number such as 91.5, not '1.2.3'."),
        ("0x10", "Volume is entered in mL: convert it to mL, not 'x10'."),
        ("0.18 L", "Volume is entered in mL: convert it to mL, not 'L'."),
        ("180 %", "Volume is entered in mL: convert it to mL, not '%'."),
        ("", "Enter a value for Volume."),
        ("   ", "Enter a value for Volume."),
        ("9" * 5000, "Volume: '" + "9" * 40 + "…' is too large to be a measured value."),
    ],
)
def test_number_refusals(typed, message):
    assert error("receipt", RECEIPT, "volume_ml", typed) == message


@pytest.mark.requirements("PROC-3")
def test_number_below_its_limit_is_kept_and_flagged():
    volume = check("receipt", {"volume_ml": "49"}, RECEIPT).values["volume_ml"]
    assert (volume.value, volume.out_of_limit, volume.message) == (
        49.0,
        True,
        "Volume 49 mL is below the limit of 50 mL.",
    )


@pytest.mark.requirements("PROC-3")
def test_temperature_above_its_range_is_flagged():
    temp = check("receipt", {"shipping_temp_max": "9.0 °C"}, RECEIPT).values["shipping_temp_max"]
    assert temp.out_of_limit and temp.limit_text == "2–8 °C"
    assert temp.message == "Highest shipping temperature 9.0 °C is above the limit of 8 °C."


@pytest.mark.parametrize(("typed", "flagged"), [("70", False), ("69.9", True), ("100", False), ("62", True)])
def test_viability_limit_is_inclusive(typed, flagged):
    viability = check("expansion", {"viability_pct": typed}, EXPANSION).values["viability_pct"]
    assert viability.out_of_limit is flagged and viability.limit_text == "≥ 70 %"


def test_viability_messages():
    assert check("expansion", {"viability_pct": "62"}, EXPANSION).values["viability_pct"].message == (
        "Viability 62 % is below the limit of 70 %."
    )
    assert (
        error("expansion", EXPANSION, "viability_pct", "abc")
        == "Viability: enter a number such as 91.5, not 'abc'."
    )
    assert error("expansion", EXPANSION, "viability_pct", "101") == "Viability must be between 0 and 100 %."
    assert check("expansion", {"viability_pct": "91.5pct"}, EXPANSION).values["viability_pct"].value == 91.5


def test_cell_counts_suggest_e_notation():
    assert (
        error("expansion", EXPANSION, "viable_cells", "lots")
        == "Viable cells: enter a number such as 1.2e9, not 'lots'."
    )
    assert (
        error("expansion", EXPANSION, "viable_cells", "2e12")
        == "Viable cells must be between 0 and 1.00 × 10¹² cells."
    )
    assert (
        check("expansion", {"viable_cells": "1.2E9 cells"}, EXPANSION).values["viable_cells"].text == "1.2e9"
    )


# --- integers, uniqueness, optional fields -------------------------------------------------------


def test_integer_culture_day():
    result = check("expansion", {"culture_day": " +07 "}, EXPANSION)
    assert result.values["culture_day"].value == 7 and result.values["culture_day"].text == "7"
    assert (
        error("expansion", EXPANSION, "culture_day", "3.5")
        == "Culture day: enter a whole number such as 3, not '3.5'."
    )
    assert error("expansion", EXPANSION, "culture_day", "31") == "Culture day must be between 0 and 30."
    assert error("expansion", EXPANSION, "culture_day", "-1") == "Culture day must be between 0 and 30."
    assert error("expansion", EXPANSION, "culture_day", "3 days") == (
        "Culture day has no unit: enter the number alone, not '3 days'."
    )
    assert (
        error("expansion", EXPANSION, "culture_day", "1" * 30)
        == f"Culture day: '{'1' * 30}' is far too large."
    )


def test_a_culture_day_is_recorded_once():
    prior = {"activation": [ACTIVATION], "expansion": [entry({"culture_day": 3}), entry({"culture_day": 5})]}
    message = error("expansion", EXPANSION, "culture_day", "5", prior=prior)
    assert (
        message == "Culture day 5 is already recorded (entry 2 of 'Expansion (daily count)'): "
        "correct that entry instead."
    )
    assert check("expansion", {"culture_day": "6"}, EXPANSION, prior=prior).ok


def test_optional_fields_may_stay_empty_but_not_hold_garbage():
    result = check("expansion", {}, EXPANSION)
    assert result.ok
    assert (result.values["feed_volume_ml"].value, result.values["feed_volume_ml"].text) == (None, "")
    assert result.values["medium_lot"].value is None
    fed = check("expansion", {"feed_volume_ml": "250", "medium_lot": "med-11"}, EXPANSION)
    assert fed.values["medium_lot"].text == "MED-11" and fed.values["feed_volume_ml"].value == 250.0
    assert (
        error("expansion", EXPANSION, "feed_volume_ml", "lots")
        == "Feed volume: enter a number such as 91.5, not 'lots'."
    )


def test_missing_required_fields_are_each_named():
    result = validate_entry(STEP["storage"], {}, context())
    assert result.errors == {
        "product_bags": "Enter a value for Product bags.",
        "ln2_freezer": "Enter a value for LN2 freezer.",
        "rack": "Enter a value for Rack.",
        "box": "Enter a value for Box.",
        "position": "Enter a value for Position.",
        "freezer_temp_c": "Enter a value for Freezer temperature.",
    }
    assert result.values == {} and result.derived == {} and not result.ok


def test_unknown_raw_keys_are_ignored():
    assert check("storage", {"csrf_token": "x", "comment": "fine"}, STORAGE).ok


# --- text, choice, boolean ------------------------------------------------------------------------


def test_text_fields():
    result = check("cryopreservation", {"program": "  CAR-T\r\nv3\tslow  "}, CRYO)
    assert result.values["program"].text == "CAR-T\nv3\tslow"
    assert error("cryopreservation", CRYO, "program", "x" * 101) == (
        "Freezing program is limited to 100 characters; this has 101."
    )
    assert error("cryopreservation", CRYO, "program", "CAR\x00T") == (
        "Freezing program holds a control character (from a scanner or a paste): retype it."
    )
    assert error("cryopreservation", CRYO, "program", "CAR\x1b[1mT").startswith(
        "Freezing program holds a control"
    )
    assert check("storage", {"rack": "x" * 20}, STORAGE).ok
    assert error("storage", STORAGE, "rack", "x" * 21) == "Rack is limited to 20 characters; this has 21."


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("yes", "yes"),
        ("Y", "yes"),
        ("true", "yes"),
        ("1", "yes"),
        ("on", "yes"),
        ("No", "no"),
        ("n", "no"),
        ("FALSE", "no"),
        ("0", "no"),
    ],
)
def test_boolean_answers(typed, canonical):
    value = check("receipt", {"documents_complete": typed}, RECEIPT).values["documents_complete"]
    assert value.text == canonical and value.value is (canonical == "yes")
    assert value.out_of_limit is (canonical == "no")


def test_boolean_and_choice_refusals():
    assert error("receipt", RECEIPT, "bag_intact", "maybe") == "Bag intact: answer yes or no, not 'maybe'."
    assert (
        error("receipt", RECEIPT, "decision", "accepted")
        == "Decision must be one of: accept, reject (not 'accepted')."
    )


# --- lots and equipment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("VEC-Q", "Lot VEC-Q is QUARANTINED: it has not been released for use."),
        ("VEC-R", "Lot VEC-R is REJECTED: it must not be used."),
        ("VEC-OLD", "Lot VEC-OLD EXPIRED on 2026-10-01."),
        ("VEC-999", "No material lot 'VEC-999' is registered."),
        ("TA-001", "Lot TA-001 is TransAct (a transact); Vector lot needs a lentiviral vector lot."),
        ("VEC\x007", "Vector lot: 'VEC\\x007' is not a code that can be registered."),
    ],
)
def test_lot_refusals(code, message):
    assert error("transduction", TRANSDUCTION, "vector_lot", code) == message


def test_lot_expiring_today_may_still_be_used_and_codes_are_upper_cased():
    assert check("transduction", {"vector_lot": "VEC-TODAY"}, TRANSDUCTION).ok
    result = check("transduction", {"vector_lot": " vec-7 "}, TRANSDUCTION)
    assert result.values["vector_lot"].text == "VEC-7"


def test_lot_of_a_quarantine_status_other_than_the_known_ones():
    lots = {**LOTS, "VEC-X": LotInfo("VEC-X", "lentiviral_vector", "CD19 CAR LV", NEXT_YEAR, "recalled")}
    assert error("transduction", TRANSDUCTION, "vector_lot", "VEC-X", lots=lots) == (
        "Lot VEC-X has status 'recalled': only released lots may be used."
    )


def test_wrong_microbeads_are_refused():
    assert error("enrichment", ENRICHMENT, "cd4_microbeads_lot", "CD8-202") == (
        "Lot CD8-202 is CD8 MicroBeads (a cd8 microbeads); CD4 MicroBeads lot needs a cd4 microbeads lot."
    )


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("INC-02", ("Incubator INC-02 was due for calibration on 2026-11-01 (CALIBRATION OVERDUE): "
                   "use a calibrated instrument.")),
        ("BSC-01", "Biosafety cabinet BSC-01 is a biosafety cabinet; Incubator needs an incubator."),
        ("INC-99", "No equipment 'INC-99' is registered."),
    ],
)
def test_equipment_refusals(code, message):
    assert error("expansion", EXPANSION, "incubator", code) == message


def test_equipment_without_calibration_and_out_of_service():
    assert check("expansion", {"incubator": "inc-03"}, EXPANSION).values["incubator"].text == "INC-03"
    assert error("transduction", TRANSDUCTION, "biosafety_cabinet", "BSC-OFF") == (
        "Biosafety cabinet BSC-OFF is OUT OF SERVICE: use another one."
    )


def test_expiry_and_calibration_use_the_lab_date():
    # 23:30 UTC on 30 Nov is already 1 Dec in Berlin: a lot expiring on 30 Nov has expired.
    lots = {"VEC-N": LotInfo("VEC-N", "lentiviral_vector", "CD19 CAR LV", date(2026, 11, 30), "released")}
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert error("transduction", TRANSDUCTION, "vector_lot", "VEC-N", lots=lots, now=late) == (
        "Lot VEC-N EXPIRED on 2026-11-30."
    )


def test_scanned_codes_are_what_the_engine_looks_up():
    lots, equipment = scanned_codes(STEP["expansion"], {**EXPANSION, "medium_lot": " med-11 "})
    assert (lots, equipment) == ({"MED-11"}, {"INC-01"})


# --- derived values --------------------------------------------------------------------------------


@pytest.mark.requirements("PROC-5")
def test_moi_within_limits():
    moi = check("transduction", {}, TRANSDUCTION).derived["moi"]
    assert (moi.value, moi.text, moi.unit, moi.out_of_limit, moi.limit_text) == (
        5.0,
        "5.0",
        None,
        False,
        "5–10",
    )


@pytest.mark.requirements("PROC-3")
def test_moi_above_limit_is_flagged():
    moi = check("transduction", {"vector_volume_ml": "1.2"}, TRANSDUCTION).derived["moi"]
    assert moi.out_of_limit and moi.value == pytest.approx(12.0)
    assert moi.message == "MOI (TU per cell) 12 is above the limit of 10."


def test_moi_just_above_limit_is_not_shown_as_the_limit():
    moi = check("transduction", {"vector_volume_ml": "1.004"}, TRANSDUCTION).derived["moi"]
    assert moi.message == "MOI (TU per cell) 10.04 is above the limit of 10."


def test_moi_with_no_cells_is_not_computed():
    moi = check("transduction", {"viable_cells": "0"}, TRANSDUCTION).derived["moi"]
    assert (moi.value, moi.text, moi.out_of_limit) == (None, "", False)


def test_no_derived_values_while_a_field_is_refused():
    result = check("transduction", {"titer_tu_per_ml": "lots"}, TRANSDUCTION)
    assert result.derived == {} and set(result.errors) == {"titer_tu_per_ml"}


@pytest.mark.requirements("PROC-5")
def test_recovery_after_enrichment():
    result = check("enrichment", {}, ENRICHMENT)
    assert result.ok and result.derived["recovery_pct"].value == pytest.approx(55.0)


@pytest.mark.requirements("PROC-5")
def test_fold_expansion_since_seeding():
    fold = check("expansion", {}, EXPANSION).derived["fold_expansion"]
    assert fold.value == pytest.approx(30.0) and fold.label == "Fold expansion since seeding"


def test_fold_expansion_uses_the_latest_activation_values():
    prior = {"activation": [ACTIVATION, entry({"cells_seeded": 2e8})]}
    assert check("expansion", {}, EXPANSION, prior=prior).derived["fold_expansion"].value == pytest.approx(
        15.0
    )


def test_fold_expansion_without_activation_is_not_computed():
    assert check("expansion", {}, EXPANSION, prior={}).derived["fold_expansion"].value is None


@pytest.mark.requirements("PROC-5")
def test_car_t_cells_at_harvest():
    raw = {
        "culture_bag": CULTURE,
        "total_viable_cells": "3e9",
        "viability_pct": "92",
        "cd3_pct": "95",
        "car_pct": "40",
        "biosafety_cabinet": "BSC-01",
    }
    result = check("harvest", raw)
    assert result.derived["car_t_cells"].value == pytest.approx(1.14e9)
    assert check("harvest", {"car_pct": "8"}, raw).values["car_pct"].message == (
        "CAR+ of CD3+ cells 8 % is below the limit of 10 %."
    )


@pytest.mark.requirements("PROC-5")
def test_dose_for_a_58_kg_patient():
    result = check("formulation", {}, FORMULATION)
    derived = {key: value.value for key, value in result.derived.items()}
    assert derived["total_dose"] == pytest.approx(5.8e7)
    assert derived["dose_volume_ml"] == pytest.approx(116.0)
    assert derived["bags"] == 2 and isinstance(derived["bags"], int)
    assert derived["volume_per_bag_ml"] == pytest.approx(58.0)
    assert derived["dose_coverage"] == pytest.approx(1.14e9 / 5.8e7)
    assert result.exceptions == []
    assert result.derived["bags"].text == "2"


def test_too_dilute_a_product_needs_too_many_bags():
    result = check("formulation", {"car_t_per_ml": "1e5"}, FORMULATION)
    bags = result.derived["bags"]
    assert (bags.value, bags.out_of_limit, bags.limit_text) == (9, True, "≤ 4")
    assert bags.message == "Number of bags 9 is above the limit of 4."
    assert result.derived["volume_per_bag_ml"].value == pytest.approx(580 / 9)


def test_too_concentrated_a_product_gives_a_tiny_bag():
    per_bag = check("formulation", {"car_t_per_ml": "1e7"}, FORMULATION).derived["volume_per_bag_ml"]
    assert per_bag.value == pytest.approx(5.8) and per_bag.out_of_limit
    assert per_bag.message == "Volume per bag 5.8 mL is below the limit of 10 mL."


def test_harvest_too_small_for_the_dose():
    small = {"harvest": [entry({"total_viable_cells": 1e8, "cd3_pct": 90.0, "car_pct": 30.0})]}
    coverage = check("formulation", {}, FORMULATION, prior=small).derived["dose_coverage"]
    assert coverage.value == pytest.approx(2.7e7 / 5.8e7) and coverage.out_of_limit
    assert coverage.message == "Harvested CAR+ cells per dose 0.466 is below the limit of 1."


def test_dose_without_a_patient_weight_is_not_computed():
    result = check("formulation", {}, FORMULATION, patient={"coi": COI})
    assert result.ok
    assert all(value.value is None and not value.out_of_limit for value in result.derived.values())


def test_run_length_of_the_freezer():
    result = check("cryopreservation", {}, CRYO)
    assert (
        result.derived["run_hours"].value == pytest.approx(2.5)
        and not result.derived["run_hours"].out_of_limit
    )
    long_run = check("cryopreservation", {"run_start": "2026-11-25 06:00"}, CRYO).derived["run_hours"]
    assert long_run.message == "Run length 4.5 h is above the limit of 4 h."
    assert check("cryopreservation", {"profile_ok": "no"}, CRYO).values["profile_ok"].out_of_limit


def test_storage_temperature():
    assert check("storage", {}, STORAGE).ok and not check("storage", {}, STORAGE).needs_comment
    warm = check("storage", {"freezer_temp_c": "-140"}, STORAGE).values["freezer_temp_c"]
    assert warm.message == "Freezer temperature -140 °C is above the limit of -150 °C."
    assert warm.limit_text == "≤ -150 °C"
    assert (
        error("storage", STORAGE, "freezer_temp_c", "-250")
        == "Freezer temperature must be between -200 and 40 °C."
    )


@pytest.mark.requirements("PROC-5")
def test_compute_derived_for_a_stored_entry():
    step = STEP["receipt"]
    stored = {
        spec.key: typed_value(spec, text)
        for spec, text in zip(
            step.fields, [COI, "2026-11-25T02:00Z", "4.1", "6.8", "180", "yes", "yes", "accept"], strict=True
        )
    }
    assert stored["collection_end"] == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    derived = compute_derived(step, stored, context(now=datetime(2026, 11, 25, 16, 0, tzinfo=UTC)))
    assert derived["hours_since_collection"].value == 14.0 and derived["hours_since_collection"].out_of_limit


def test_typed_value_of_each_type():
    def spec(field_type, **kwargs):
        return FieldSpec(key="x", label="X", type=field_type, **kwargs)

    assert typed_value(spec("number", unit="mL", valid=Limits(0, 10)), "1.2e9") == 1.2e9  # no range check
    assert typed_value(spec("integer"), "12") == 12
    assert typed_value(spec("text"), " a\nb ") == "a\nb"
    assert typed_value(spec("choice", choices=("accept", "reject")), "Reject") == "reject"
    assert typed_value(spec("boolean"), "no") is False
    assert typed_value(spec("lot", material="medium"), "med-1") == "MED-1"
    assert typed_value(spec("equipment", equipment="incubator"), "INC-02") == "INC-02"
    assert typed_value(spec("coi"), "cha999926000001*") == COI
    assert typed_value(spec("datetime"), "2026-11-25T07:30:15Z") == datetime(
        2026, 11, 25, 7, 30, 15, tzinfo=UTC
    )
    assert typed_value(spec("number", unit="mL"), "") is None
    assert typed_value(spec("number", unit="mL"), None) is None
    with pytest.raises(ValueError, match="X: enter a number such as 91.5, not 'x'."):
        typed_value(spec("number", unit="mL"), "x")


# --- windows ------------------------------------------------------------------------------------------


@pytest.mark.requirements("P11-10f")
@pytest.mark.parametrize(
    ("hours_ago", "message"),
    [
        (24, ""),
        (30, ""),
        (71.9, ""),
        (10, "Lentiviral transduction is due on culture day 1–2 after Activation; today is day 0."),
        (72, "Lentiviral transduction is due on culture day 1–2 after Activation; today is day 3."),
    ],
)
def test_transduction_window(hours_ago, message):
    prior = {"activation": [entry({"cells_seeded": 1e8}, hours_ago=hours_ago)]}
    result = check("transduction", {}, TRANSDUCTION, prior=prior)
    assert result.window_message == message
    assert result.needs_comment is bool(message)


def test_harvest_window_counts_from_the_first_activation_entry():
    prior = {
        "activation": [
            entry({"cells_seeded": 1e8}, hours_ago=24 * 14),
            entry({"cells_seeded": 1e8}, hours_ago=1),
        ]
    }
    raw = {
        "total_viable_cells": "3e9",
        "viability_pct": "92",
        "cd3_pct": "95",
        "car_pct": "40",
        "biosafety_cabinet": "BSC-01",
    }
    result = check("harvest", raw, prior=prior)
    assert (
        result.window_message
        == "Harvest and wash is due on culture day 12–13 after Activation; today is day 14."
    )


def test_no_window_message_without_the_reference_step():
    assert check("transduction", {}, TRANSDUCTION, prior={}).window_message == ""


# --- step states, can_start, next_state --------------------------------------------------------------


def progress(**entries):
    return {
        key: value if isinstance(value, StepProgress) else StepProgress(entries=value)
        for key, value in entries.items()
    }


@pytest.mark.requirements("P11-10f")
def test_step_states_of_a_new_batch():
    assert set(step_states(DEFINITION, {}).values()) == {StepState.PENDING}


@pytest.mark.requirements("P11-10f")
def test_step_states_along_the_way():
    states = step_states(
        DEFINITION,
        progress(
            receipt=StepProgress(entries=1, unverified=0),
            enrichment=1,
            activation=1,
            transduction=StepProgress(entries=1, unverified=1),
            expansion=3,
        ),
    )
    assert states["receipt"] == StepState.VERIFIED
    assert states["enrichment"] == StepState.DONE  # no verification: ends at DONE
    assert states["transduction"] == StepState.DONE  # waiting for verification
    assert states["expansion"] == StepState.IN_PROGRESS
    assert states["harvest"] == StepState.PENDING


def test_expansion_is_done_once_harvest_is_recorded():
    states = step_states(DEFINITION, progress(expansion=4, harvest=StepProgress(entries=1, unverified=1)))
    assert states["expansion"] == StepState.DONE and states["harvest"] == StepState.DONE


ALL_DONE = progress(**{step.key: 1 for step in DEFINITION.steps})


@pytest.mark.requirements("P11-10f")
@pytest.mark.parametrize(
    ("step_key", "done", "state", "reason"),
    [
        ("receipt", {}, "scheduled", None),
        ("enrichment", {"receipt": 1}, "in_process", None),
        (
            "activation",
            {"receipt": 1},
            "in_process",
            "Record 'T-cell enrichment' first: steps are done in order.",
        ),
        (
            "harvest",
            {"receipt": 1, "enrichment": 1, "activation": 1, "transduction": 1},
            "in_process",
            "Record 'Expansion (daily count)' first: steps are done in order.",
        ),
        (
            "receipt",
            {"receipt": 1},
            "in_process",
            "'Apheresis receipt' is already recorded; correct a value instead.",
        ),
        (
            "expansion",
            {"receipt": 1, "enrichment": 1, "activation": 1, "transduction": 1, "expansion": 2},
            "in_process",
            None,
        ),
        (
            "expansion",
            {"receipt": 1, "enrichment": 1, "activation": 1, "transduction": 1, "expansion": 2, "harvest": 1},
            "in_process",
            "'Expansion (daily count)' is closed: 'Harvest and wash' has been recorded since.",
        ),
        ("enrichment", {"receipt": 1}, "on_hold", "The batch is on hold: no step can be recorded."),
        ("storage", {}, "released", "The batch is released: no step can be recorded."),
        ("storage", {}, "qc_testing", "The batch is in QC testing: no step can be recorded."),
    ],
)
def test_can_start(step_key, done, state, reason):
    assert can_start(DEFINITION, step_key, progress(**done), state) == reason


def test_can_start_unknown_step():
    with pytest.raises(KeyError):
        can_start(DEFINITION, "infusion", {}, "in_process")


@pytest.mark.requirements("P11-10f")
def test_can_start_honours_min_entries():
    text = DEFINITION.source_text.replace("min_entries = 1", "min_entries = 2")
    definition = load_definition_text(text, "two_counts.toml")
    done = progress(receipt=1, enrichment=1, activation=1, transduction=1, expansion=1)
    assert can_start(definition, "harvest", done, "in_process") == (
        "Record 'Expansion (daily count)' first: steps are done in order."
    )
    assert (
        can_start(definition, "harvest", {**done, "expansion": StepProgress(entries=2)}, "in_process") is None
    )


@pytest.mark.requirements("P11-10f")
@pytest.mark.parametrize(
    ("state", "done", "expected"),
    [
        ("scheduled", {}, "scheduled"),
        ("scheduled", {"receipt": 1}, "in_process"),
        ("scheduled", {"receipt": StepProgress(entries=1, hold=True)}, "on_hold"),
        ("in_process", {"receipt": 1, "enrichment": StepProgress(entries=1, hold=True)}, "on_hold"),
        ("in_process", {**ALL_DONE, "storage": StepProgress(entries=1, unverified=1)}, "in_process"),
        ("in_process", {**ALL_DONE, "enrichment": StepProgress(entries=1, unverified=1)}, "qc_testing"),
        ("in_process", ALL_DONE, "qc_testing"),
        ("scheduled", ALL_DONE, "qc_testing"),  # fires start_processing, then complete_manufacturing
        ("qc_testing", ALL_DONE, "qc_testing"),
        ("on_hold", {"receipt": 1}, "on_hold"),
        ("released", {"receipt": StepProgress(entries=1, hold=True)}, "released"),
    ],
)
def test_next_state(state, done, expected):
    assert next_state(DEFINITION, state, progress(**done)) == expected


# --- format_number ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.2e9, "1.20 × 10⁹"),
        (1_200_000_000, "1200000000"),
        (5.8e7, "5.80 × 10⁷"),
        (1e12, "1.00 × 10¹²"),
        (-3.456e6, "-3.46 × 10⁶"),
        (0.0005, "5.00 × 10⁻⁴"),
        (-2.5e-7, "-2.50 × 10⁻⁷"),
        (999_999.0, "1.00 × 10⁶"),
        (100_000.0, "1.00 × 10⁵"),
        (99_999.0, "99999"),
        (12.3456, "12.3"),
        (1234.5, "1235"),
        (7.5, "7.5"),
        (10.0, "10"),
        (58.0, "58"),
        (0.0123, "0.0123"),
        (0.001, "0.001"),
        (2.675, "2.68"),
        (0.0, "0"),
        (-0.0, "0"),
        (-150.0, "-150"),
        (4, "4"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


# --- formulas (workflows/formula.py) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "values", "result"),
    [
        ("a / b", {"a": 1.0, "b": 4.0}, 0.25),
        ("-a ** 2 + (b - 1) * 3", {"a": 2.0, "b": 2.0}, -1.0),
        ("ceil(a) + floor(b) + abs(-2) + round(a)", {"a": 1.2, "b": 2.7}, 2 + 2 + 2 + 1),
        ("round(a, 2)", {"a": 3.14159}, 3.14),
        ("min(a, b, 3) + max(a, b)", {"a": 1.0, "b": 5.0}, 6.0),
        ("days_between(s.recorded_at, now)", {"s.recorded_at": NOW - timedelta(hours=36), "now": NOW}, 1.5),
        ("hours_between(s.recorded_at, now)", {"s.recorded_at": NOW - timedelta(hours=36), "now": NOW}, 36.0),
        ("a / b", {"a": 1.0, "b": 0.0}, None),  # division by zero
        ("a / b", {"a": 1.0, "b": None}, None),  # input not recorded
        ("a / b", {"a": 1.0}, None),  # step not recorded
        ("a * 10", {"a": 1e308}, None),  # overflow to inf
        ("ceil(a * 10)", {"a": 1e308}, None),
        ("a ** 0.5", {"a": -4.0}, None),  # complex
        ("10 ** 10 ** 10", {}, None),  # would run for ever with integers
        ("a / b", {"a": 1.0, "b": "text"}, None),  # not a number: never an exception
    ],
)
def test_formula_evaluation(expression, values, result):
    formula.check(
        expression,
        {name: formula.NUMBER for name in ("a", "b")}
        | {"s.recorded_at": formula.DATETIME, "now": formula.DATETIME},
    )
    assert formula.evaluate(expression, values) == (pytest.approx(result) if result is not None else None)


def test_formula_names_in_order():
    assert formula.names("ceil(x / activation.cells_seeded) + max(x, y)") == (
        "x",
        "activation.cells_seeded",
        "y",
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("max(a)", "max() takes 2 or more arguments, not 1"),
        ("round(a, 1, 2)", "round() takes 1 to 2 arguments, not 3"),
        ("round(a, b)", "round(): the number of digits must be a whole number such as 2"),
        ("ceil(x=a)", "ceil() takes plain arguments only"),
        ("hours_between(a, now)", "hours_between() takes date-times, but 'a' is not one"),
        ("a * 1e400", "a number in the formula is too large"),
        ("a if b else 1", "'a if b else 1' is not allowed in a formula"),
        ("a.b.c", "'a.b.c' is not allowed in a formula"),
        ("-now", "'now' is a date-time"),
        ("a +", "formula 'a +' is not a valid expression"),
        ("a; b", "formula 'a; b' is not a valid expression"),
        ("c", "unknown name 'c'"),
        ("note", "'note' is a text field and cannot be used in a formula"),
    ],
)
def test_formula_check_refusals(expression, message):
    kinds = {"a": formula.NUMBER, "b": formula.NUMBER, "now": formula.DATETIME, "note": "a text field"}
    with pytest.raises(formula.FormulaError) as info:
        formula.check(expression, kinds)
    assert message in str(info.value)

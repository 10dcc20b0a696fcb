"""Loading and validating process definitions (workflows/definition.py)."""

import hashlib
import shutil

import pytest

from workflows.definition import (
    DEFINITIONS_DIR,
    DefinitionError,
    latest,
    load_definition,
    load_definition_text,
    load_directory,
)
from workflows.model import StepSpec

pytestmark = pytest.mark.requirements("PROC-1")

SHIPPED = DEFINITIONS_DIR / "cd19_car_t_v1.toml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")

# The keys lab/ code and the demo data rely on.
EXPECTED_FIELDS = {
    "receipt": [
        "coi_on_bag",
        "collection_end",
        "shipping_temp_min",
        "shipping_temp_max",
        "volume_ml",
        "bag_intact",
        "documents_complete",
        "decision",
    ],
    "enrichment": [
        "apheresis_bag",
        "pre_tnc",
        "post_viable_cells",
        "post_viability_pct",
        "cd3_purity_pct",
        "cd4_microbeads_lot",
        "cd8_microbeads_lot",
        "tubing_set_lot",
        "processor",
    ],
    "activation": [
        "culture_bag",
        "cells_seeded",
        "transact_lot",
        "transact_volume_ml",
        "medium_lot",
        "cytokine_lot",
        "processor",
    ],
    "transduction": [
        "culture_bag",
        "vector_lot",
        "titer_tu_per_ml",
        "vector_volume_ml",
        "viable_cells",
        "biosafety_cabinet",
    ],
    "expansion": [
        "culture_bag",
        "culture_day",
        "viable_cells",
        "viability_pct",
        "feed_volume_ml",
        "medium_lot",
        "incubator",
    ],
    "harvest": ["culture_bag", "total_viable_cells", "viability_pct", "cd3_pct", "car_pct", "biosafety_cabinet"],
    "formulation": [
        "culture_bag",
        "target_dose_per_kg",
        "car_t_per_ml",
        "max_fill_ml",
        "cryomedium_lot",
        "bag_lot",
        "biosafety_cabinet",
    ],
    "cryopreservation": ["product_bags", "freezer", "program", "run_start", "run_end", "profile_ok"],
    "storage": ["product_bags", "ln2_freezer", "rack", "box", "position", "freezer_temp_c"],
}
EXPECTED_DERIVED = {
    "receipt": ["hours_since_collection"],
    "enrichment": ["recovery_pct"],
    "activation": [],
    "transduction": ["moi"],
    "expansion": ["fold_expansion"],
    "harvest": ["car_t_cells"],
    "formulation": ["total_dose", "dose_volume_ml", "bags", "volume_per_bag_ml", "dose_coverage"],
    "cryopreservation": ["run_hours"],
    "storage": [],
}


@pytest.fixture(scope="module")
def shipped():
    return load_definition(SHIPPED)


# --- the shipped definition ---------------------------------------------------------------


def test_shipped_definition_loads_with_its_hash(shipped):
    assert (shipped.key, shipped.version) == ("cd19-car-t", 1)
    assert shipped.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert shipped.source_name == "cd19_car_t_v1.toml"
    assert shipped.source_text == SHIPPED_TEXT


def test_loading_the_stored_text_gives_the_same_definition(shipped):
    again = load_definition_text(SHIPPED_TEXT, "stored with batch B-A9999-26-00001-5")
    assert again.sha256 == shipped.sha256
    assert again.steps == shipped.steps
    assert again.source_name == "stored with batch B-A9999-26-00001-5"


def test_shipped_states_transitions_and_steps(shipped):
    assert list(shipped.states) == [
        "scheduled",
        "in_process",
        "qc_testing",
        "qa_review",
        "released",
        "rejected",
        "on_hold",
        "shipped",
    ]
    assert shipped.initial_state == "scheduled"
    assert shipped.recording_states == ("scheduled", "in_process")
    assert [(t.event, t.source, t.target, t.when) for t in shipped.transitions] == [
        ("hold", ("scheduled", "in_process"), "on_hold", "hold_requested"),
        ("start_processing", ("scheduled",), "in_process", "first_step_recorded"),
        ("complete_manufacturing", ("in_process",), "qc_testing", "all_steps_complete"),
        ("results_in", ("qc_testing",), "qa_review", "release_results_in"),
    ]
    assert {s.key: [f.key for f in s.fields] for s in shipped.steps} == EXPECTED_FIELDS
    assert {s.key: [d.key for d in s.derived] for s in shipped.steps} == EXPECTED_DERIVED
    assert list(EXPECTED_FIELDS) == [s.key for s in shipped.steps]
    assert all(step.instructions for step in shipped.steps)


def test_shipped_limits_units_and_rules(shipped):
    receipt = shipped.step("receipt")
    assert (receipt.verify, receipt.hold.field, receipt.hold.equals) == (True, "decision", "reject")
    temp = receipt.field("shipping_temp_max")
    assert (temp.unit, temp.valid.min, temp.valid.max, temp.limits.min, temp.limits.max) == (
        "°C",
        -50,
        50,
        2,
        8,
    )
    assert receipt.field("volume_ml").limits.min == 50
    assert receipt.field("bag_intact").expected is True
    assert receipt.field("decision").deviation_choices == ("reject",)
    assert receipt.derived[0].limits.max == 12 and receipt.derived[0].unit == "h"

    transduction = shipped.step("transduction")
    assert (transduction.window.after, transduction.window.min_days, transduction.window.max_days) == (
        "activation",
        1,
        2,
    )
    moi = transduction.derived[0]
    assert (moi.label, moi.unit, moi.limits.min, moi.limits.max) == ("MOI (TU per cell)", None, 5, 10)
    assert transduction.field("titer_tu_per_ml").unit == "TU/mL"

    expansion = shipped.step("expansion")
    assert expansion.repeatable and expansion.min_entries == 1
    day = expansion.field("culture_day")
    assert (day.type, day.unit, day.unique_in_step) == ("integer", None, True)
    assert not expansion.field("feed_volume_ml").required and not expansion.field("medium_lot").required
    assert expansion.field("incubator").equipment == "incubator"

    harvest = shipped.step("harvest")
    assert (harvest.window.min_days, harvest.window.max_days) == (12, 13)
    assert [harvest.field(k).limits.min for k in ("viability_pct", "cd3_pct", "car_pct")] == [80, 80, 10]

    formulation = shipped.step("formulation")
    assert formulation.field("target_dose_per_kg").default == "1e6"
    assert formulation.field("max_fill_ml").default == "70"
    bags = formulation.derived[2]
    assert (bags.key, bags.integer, bags.limits.max) == ("bags", True, 4)
    assert formulation.field("bag_lot").material == "cryobag"

    assert shipped.step("cryopreservation").field("program").max_length == 100
    assert shipped.step("storage").field("freezer_temp_c").limits.max == -150
    assert [f.unit for f in shipped.step("enrichment").fields[1:5]] == ["cells", "cells", "%", "%"]


def test_material_and_equipment_kinds(shipped):
    materials = {f.material for s in shipped.steps for f in s.materials}
    equipment = {f.equipment for s in shipped.steps for f in s.equipment}
    assert materials == {
        "cd4_microbeads",
        "cd8_microbeads",
        "tubing_set",
        "transact",
        "medium",
        "cytokine",
        "lentiviral_vector",
        "cryomedium",
        "cryobag",
    }
    assert equipment == {
        "cell_processor",
        "biosafety_cabinet",
        "incubator",
        "controlled_rate_freezer",
        "ln2_freezer",
    }


def test_load_directory_and_latest(shipped):
    definitions = load_directory()
    assert definitions[("cd19-car-t", 1)].sha256 == shipped.sha256
    assert latest(definitions, "cd19-car-t").version == 4
    with pytest.raises(KeyError):
        latest(definitions, "no-such-process")


def test_latest_picks_the_highest_version(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "a_v1.toml")
    for version in (3, 2):
        (tmp_path / f"a_v{version}.toml").write_text(
            SHIPPED_TEXT.replace("version = 1\n", f"version = {version}\n", 1), encoding="utf-8"
        )
    definitions = load_directory(tmp_path)
    assert sorted(definitions) == [("cd19-car-t", 1), ("cd19-car-t", 2), ("cd19-car-t", 3)]
    assert latest(definitions, "cd19-car-t").source_name == "a_v3.toml"


def test_load_directory_refuses_two_files_with_the_same_key_and_version(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "first.toml")
    shutil.copy(SHIPPED, tmp_path / "second.toml")
    with pytest.raises(DefinitionError) as info:
        load_directory(tmp_path)
    assert "first.toml" in str(info.value) and "second.toml" in str(info.value)
    assert "'cd19-car-t' version 1" in info.value.reason


def test_definition_error_carries_source_and_reason():
    error = DefinitionError("x.toml", "bad")
    assert (str(error), error.source_name, error.reason) == ("x.toml: bad", "x.toml", "bad")
    assert isinstance(error, ValueError)


# --- malformed definitions -----------------------------------------------------------------

RECEIPT_VOLUME = 'key = "volume_ml"\n  label = "Volume"\n  type = "number"\n  unit = "mL"\n'

BROKEN = [
    # (id, text to find, replacement, expected reason)
    ("toml-syntax", 'title = "Apheresis receipt"', 'title = "Apheresis receipt', "invalid TOML"),
    (
        "typo-in-key",
        "limit_min = 50",
        "limt_min = 50",
        "step 'receipt', field 'volume_ml': unknown key 'limt_min'",
    ),
    ("unknown-top-key", 'product = "', 'produkt = "', "definition: unknown key 'produkt'"),
    (
        "missing-product",
        'product = "Autologous anti-CD19 CAR T cells, cryopreserved"\n',
        "",
        "definition: missing required key 'product'",
    ),
    (
        "wrong-type",
        "verify = true",
        'verify = "yes"',
        "step 'receipt': 'verify' must be true or false, not 'yes'",
    ),
    (
        "definition-key-slug",
        'key = "cd19-car-t"',
        'key = "CD19 CAR-T"',
        "key 'CD19 CAR-T' may use only a-z, 0-9 and -",
    ),
    (
        "step-key-slug",
        'key = "receipt"',
        'key = "Receipt"',
        "steps[0]: key 'Receipt' may use only a-z, 0-9 and _",
    ),
    (
        "field-key-slug",
        'key = "volume_ml"',
        'key = "volume-ml"',
        "key 'volume-ml' may use only a-z, 0-9 and _",
    ),
    ("version-zero", "version = 1\n", "version = 0\n", "version must be a positive whole number, not 0"),
    ("version-string", "version = 1\n", 'version = "1"\n', "'version' must be a whole number, not '1'"),
    ("duplicate-step", 'key = "storage"', 'key = "receipt"', "step 'receipt': duplicate step key 'receipt'"),
    (
        "duplicate-field",
        'key = "shipping_temp_max"',
        'key = "shipping_temp_min"',
        "step 'receipt': duplicate field key 'shipping_temp_min'",
    ),
    (
        "duplicate-derived",
        'key = "volume_per_bag_ml"',
        'key = "bags"',
        "step 'formulation': duplicate derived key 'bags'",
    ),
    ("derived-same-as-field", 'key = "car_t_cells"', 'key = "car_pct"', "duplicate derived key 'car_pct'"),
    ("unknown-field-type", 'type = "coi"', 'type = "barcode"', "field 'coi_on_bag': unknown type 'barcode'"),
    (
        "number-without-unit",
        RECEIPT_VOLUME,
        RECEIPT_VOLUME.replace('  unit = "mL"\n', ""),
        "field 'volume_ml': missing required key 'unit'",
    ),
    (
        "number-without-range",
        "  min = 0\n  max = 2000\n",
        "  max = 2000\n",
        "field 'volume_ml': missing required key 'min'",
    ),
    (
        "min-above-max",
        "min = -200\n  max = 40",
        "min = 40\n  max = -200",
        "field 'freezer_temp_c': min 40 is greater than max -200",
    ),
    (
        "limits-reversed",
        "limit_min = 0.5  # design default (see above)\n  limit_max = 4",
        "limit_min = 5\n  limit_max = 4",
        "derived 'run_hours': limit_min 5 is greater than limit_max 4",
    ),
    (
        "limit-outside-valid",
        "limit_min = 50",
        "limit_min = 5000",
        "limit_min 5000 lies outside the valid range 0 to 2000",
    ),
    ("limit-not-finite", "limit_max = 8", "limit_max = inf", "'limit_max' must be a finite number"),
    (
        "choice-without-choices",
        '  choices = ["accept", "reject"]\n',
        "",
        "field 'decision': missing required key 'choices'",
    ),
    (
        "deviation-not-a-choice",
        'deviation_choices = ["reject"]',
        'deviation_choices = ["rejected"]',
        "deviation choice 'rejected' is not one of the choices",
    ),
    (
        "duplicate-choice",
        'choices = ["accept", "reject"]',
        'choices = ["accept", "Accept", "reject"]',
        "'choices' lists 'Accept' twice",
    ),
    (
        "option-for-another-type",
        'type = "choice"\n',
        'type = "choice"\n  unit = "mL"\n',
        "field 'decision': 'unit' does not apply to a choice field",
    ),
    (
        "default-not-a-number",
        'default = "70"',
        'default = "seventy"',
        "field 'max_fill_ml': default 'seventy' is not valid",
    ),
    (
        "default-outside-range",
        'default = "1e6"',
        'default = "1e9"',
        "default '1e9' lies outside the valid range 10000 to 1e8",
    ),
    (
        "default-on-a-lot",
        'material = "cryobag"\n',
        'material = "cryobag"\n  default = "BAG-1"\n',
        "'default' does not apply to a lot field",
    ),
    (
        "lot-without-material",
        '  material = "transact"\n',
        "",
        "field 'transact_lot': missing required key 'material'",
    ),
    ("material-slug", 'material = "transact"', 'material = "Trans Act"', "material 'Trans Act' may use only"),
    (
        "equipment-without-kind",
        '  equipment = "incubator"\n',
        "",
        "field 'incubator': missing required key 'equipment'",
    ),
    (
        "unknown-role",
        'role = "technician"',
        'role = "technicain"',
        "step 'receipt': unknown role 'technicain'",
    ),
    (
        "unknown-verifier-role",
        "verify = true\n",
        'verify = true\nverifier_role = "boss"\n',
        "unknown verifier_role 'boss'",
    ),
    (
        "initial-state-undeclared",
        'initial_state = "scheduled"',
        'initial_state = "schedule"',
        "initial_state: state 'schedule' is not declared in [states]",
    ),
    (
        "recording-state-undeclared",
        'recording_states = ["scheduled", "in_process"]',
        'recording_states = ["scheduled", "processing"]',
        "recording_states: state 'processing' is not declared",
    ),
    (
        "transition-source-undeclared",
        'source = ["scheduled"]',
        'source = ["sheduled"]',
        "transition 'start_processing': source: state 'sheduled' is not declared",
    ),
    (
        "transition-target-undeclared",
        'target = "qc_testing"',
        'target = "qc"',
        "transition 'complete_manufacturing': target: state 'qc' is not declared",
    ),
    (
        "transition-when-unknown",
        'when = "all_steps_complete"',
        'when = "all_steps_done"',
        "transition 'complete_manufacturing': unknown condition when = 'all_steps_done'",
    ),
    (
        "transition-loop",
        'target = "in_process"',
        'target = "scheduled"',
        "target 'scheduled' is also a source",
    ),
    (
        "state-key-slug",
        'on_hold = "On hold"',
        '"on hold" = "On hold"',
        "states: state 'on hold' may use only",
    ),
    (
        "window-after-later-step",
        'window = { after = "activation", min_days = 1',
        'window = { after = "harvest", min_days = 1',
        "step 'transduction', window: after = 'harvest' is not an earlier step",
    ),
    (
        "window-after-itself",
        'window = { after = "activation", min_days = 12',
        'window = { after = "harvest", min_days = 12',
        "step 'harvest', window: after = 'harvest' is not an earlier step",
    ),
    (
        "window-days-reversed",
        "min_days = 12, max_days = 13",
        "min_days = 13, max_days = 12",
        "min_days 13 is greater than max_days 12",
    ),
    (
        "hold-field-not-choice",
        'hold = { field = "decision"',
        'hold = { field = "volume_ml"',
        "step 'receipt', hold: field 'volume_ml' is not a choice field of this step",
    ),
    (
        "hold-equals-not-a-choice",
        'equals = "reject"',
        'equals = "rejected"',
        "hold: equals 'rejected' is not one of the choices of 'decision'",
    ),
    (
        "min-entries-zero",
        "min_entries = 1",
        "min_entries = 0",
        "step 'expansion': min_entries must be at least 1",
    ),
    (
        "min-entries-not-repeatable",
        "verify = true\n",
        "verify = true\nmin_entries = 2\n",
        "step 'receipt': min_entries 2 needs repeatable = true",
    ),
    (
        "unique-in-non-repeatable-step",
        "limit_min = 50",
        "limit_min = 50\n  unique_in_step = true",
        "unique_in_step applies only to fields of repeatable steps",
    ),
    ("reserved-step-key", 'key = "storage"', 'key = "patient"', "'patient' is reserved for formulas"),
    (
        "formula-syntax",
        'formula = "viable_cells / activation.cells_seeded"',
        'formula = "viable_cells / / activation.cells_seeded"',
        "derived 'fold_expansion': formula 'viable_cells / / activation.cells_seeded' is not a valid",
    ),
    (
        "formula-unknown-name",
        'formula = "viable_cells / activation.cells_seeded"',
        'formula = "viable_cell / activation.cells_seeded"',
        "derived 'fold_expansion': unknown name 'viable_cell'",
    ),
    (
        "formula-unknown-field-of-earlier-step",
        'formula = "viable_cells / activation.cells_seeded"',
        'formula = "viable_cells / activation.seeded"',
        "step 'activation' has no field 'seeded'",
    ),
    (
        "formula-later-step",
        'formula = "titer_tu_per_ml * vector_volume_ml / viable_cells"',
        'formula = "titer_tu_per_ml * vector_volume_ml / harvest.total_viable_cells"',
        "derived 'moi': 'harvest.total_viable_cells' refers to step 'harvest', which is not an earlier step",
    ),
    (
        "formula-derived-below",
        'formula = "ceil(dose_volume_ml / max_fill_ml)"',
        'formula = "ceil(volume_per_bag_ml / max_fill_ml)"',
        "derived 'bags': 'volume_per_bag_ml' is defined after 'bags'",
    ),
    (
        "formula-code-injection",
        'formula = "hours_between(run_start, run_end)"',
        "formula = \"__import__('os').system('rm -rf /')\"",
        "is not allowed in a formula",
    ),
    (
        "formula-attribute-call",
        'formula = "hours_between(run_start, run_end)"',
        'formula = "run_start.timestamp()"',
        "is not allowed in a formula",
    ),
    (
        "formula-comparison",
        'formula = "hours_between(run_start, run_end)"',
        'formula = "hours_between(run_start, run_end) > 2"',
        "'hours_between(run_start, run_end) > 2' is not allowed",
    ),
    (
        "formula-text-field",
        'formula = "hours_between(run_start, run_end)"',
        'formula = "hours_between(run_start, program)"',
        "'program' is a text field and cannot be used in a formula",
    ),
    (
        "formula-datetime-arithmetic",
        'formula = "hours_between(run_start, run_end)"',
        'formula = "run_end - run_start"',
        "'run_end' is a date-time: use hours_between()",
    ),
    (
        "formula-wrong-argument-count",
        'formula = "ceil(dose_volume_ml / max_fill_ml)"',
        'formula = "ceil(dose_volume_ml, max_fill_ml)"',
        "ceil() takes 1 argument, not 2",
    ),
    (
        "formula-gives-a-datetime",
        'formula = "hours_between(run_start, run_end)"',
        'formula = "run_end"',
        "gives a date-time, not a number",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "reason"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_malformed_definition_is_refused_with_file_and_reason(tmp_path, old, new, reason):
    assert old in SHIPPED_TEXT, "the test no longer matches the shipped file"
    path = tmp_path / "broken_v1.toml"
    path.write_text(SHIPPED_TEXT.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.source_name == "broken_v1.toml"
    assert str(info.value).startswith("broken_v1.toml: ")
    assert reason in info.value.reason


def test_bytes_that_are_not_utf8_are_refused(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(SHIPPED_TEXT.replace("°C", "deg").encode("utf-8") + "# é\n".encode("latin-1"))
    with pytest.raises(DefinitionError, match=r"^latin1\.toml: the file is not UTF-8 text"):
        load_definition(path)


def test_text_errors_name_the_source():
    with pytest.raises(DefinitionError) as info:
        load_definition_text('key = "x"\n', "inline.toml")
    assert str(info.value) == "inline.toml: definition: missing required key 'version'"


MINI = """
key = "mini"
version = 7
title = "Mini"
product = "Test"
initial_state = "open"
recording_states = ["open"]
[states]
open = "Open"
[[steps]]
key = "count"
title = "Count"
role = "qc_analyst"
verify = false
  [[steps.fields]]
  key = "n"
  label = "N"
  type = "integer"
  min = 0
  max = 10
"""


def test_a_minimal_definition_gets_the_defaults():
    definition = load_definition_text(MINI, "mini.toml")
    assert definition.transitions == ()
    step = definition.steps[0]
    assert step == StepSpec(key="count", title="Count", role="qc_analyst", verify=False, fields=step.fields)
    assert (step.fields[0].unit, step.fields[0].required, step.fields[0].max_length) == (None, True, 500)


MINI_HEAD = MINI[: MINI.index("[[steps]]")]
MINI_STEP = MINI[MINI.index("[[steps]]") : MINI.index("  [[steps.fields]]")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (MINI.replace("[[steps]]", "[[stepz]]"), "definition: unknown key 'stepz'"),
        ("steps = 3\n" + MINI_HEAD, "definition: 'steps' must be a list, not 3"),
        ("steps = []\n" + MINI_HEAD, "definition: at least one [[steps]] is needed"),
        ("steps = [1]\n" + MINI_HEAD, "definition: 'steps' must be an array of tables ([[steps]])"),
        (MINI.replace("[states]\nopen", "[states]\n[other]\nopen"), "definition: unknown key 'other'"),
        (MINI_HEAD + MINI_STEP + "fields = []\n", "step 'count': at least one [[steps.fields]] is needed"),
        (MINI.replace('  type = "integer"\n', ""), "step 'count', field 'n': missing required key 'type'"),
        (MINI.replace('  key = "n"\n', ""), "step 'count', fields[0]: missing required key 'key'"),
        (
            MINI.replace('open = "Open"', 'open = ""'),
            "states: the title of 'open' must be a non-empty string",
        ),
        (MINI.replace('title = "Count"', 'title = "  "'), "step 'count': 'title' must not be empty"),
        (
            MINI.replace("max = 10", "max = 10\n  limit_min = -1"),
            "limit_min -1 lies outside the valid range 0 to 10",
        ),
        (MINI.replace('key = "count"', 'key = "now"'), "step 'now': 'now' is reserved for formulas"),
        (MINI.replace('key = "n"', 'key = "recorded_at"'), "'recorded_at' is reserved for formulas"),
        (MINI.replace('key = "n"', 'key = "now"'), "field 'now': 'now' is reserved for formulas"),
        (
            MINI + '  [[steps.derived]]\n  key = "now"\n  label = "Now"\n  formula = "n"\n',
            "step 'count', derived 'now': 'now' is reserved for formulas",
        ),
    ],
)
def test_malformed_minimal_definition(text, reason):
    with pytest.raises(DefinitionError) as info:
        load_definition_text(text, "mini.toml")
    assert info.value.source_name == "mini.toml"
    assert reason in info.value.reason

"""Containers in the process definition and the engine: what steps create, and the
chain-of-identity checks on every container scanned at a hand-off."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_workflow_engine import (
    APHERESIS,
    BAG_1,
    BAG_2,
    BATCH,
    COI,
    CONTAINERS,
    CRYO,
    CULTURE,
    ENRICHMENT,
    OTHER_COI,
    STEP,
    STORAGE,
    check,
    error,
)
from workflows.codes import CodeKind, make_code
from workflows.definition import DEFINITIONS_DIR, DefinitionError, load_definition
from workflows.engine_types import ContainerInfo
from workflows.model import MAX_CREATED, CreateSpec

pytestmark = pytest.mark.requirements("COI-3")

SHIPPED_TEXT = (DEFINITIONS_DIR / "cd19_car_t_v1.toml").read_text(encoding="utf-8")
STRANGER = str(make_code(CodeKind.CONTAINER, "A9999", 2026, 77))
SIBLING = str(make_code(CodeKind.CONTAINER, "A9999", 2026, 78))


def with_containers(*extra: ContainerInfo) -> dict[str, ContainerInfo | None]:
    return {**CONTAINERS, **{item.code: item for item in extra}}


def test_the_shipped_process_creates_and_hands_over_containers():
    definition = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
    kinds = definition.container_kinds
    assert (kinds["product_bag"].stock, kinds["qc_sample"].stock) == ("bag", "tube")
    assert kinds["product_bag"].regulatory == ("FOR AUTOLOGOUS USE ONLY",)
    creates = {s.key: s.creates for s in definition.steps if s.creates}
    assert creates == {  # a fixed count is its own maximum; a computed one is bounded by MAX_CREATED
        "receipt": (CreateSpec("apheresis_bag", 1, "volume_ml", None, 1),),
        "enrichment": (CreateSpec("culture_bag", 1, None, "apheresis_bag", 1),),
        "formulation": (CreateSpec("product_bag", "bags", "volume_per_bag_ml", "culture_bag", MAX_CREATED),
                        CreateSpec("qc_sample", 3, None, "culture_bag", 3),
                        CreateSpec("retain_sample", 2, None, "culture_bag", 2)),
    }
    assert load_definition(DEFINITIONS_DIR / "cd19_car_t_v2.toml").step("formulation").creates[0].max == 10
    handoffs = {s.key: [(f.key, f.container, f.sets_status) for f in s.handoffs] for s in definition.steps}
    assert handoffs["enrichment"] == [("apheresis_bag", "apheresis_bag", "consumed")]
    assert handoffs["formulation"] == [("culture_bag", "culture_bag", "consumed")]
    assert handoffs["storage"] == [("product_bags", "product_bag", "stored")]
    assert definition.step("storage").field("product_bags").all_of_kind


def test_a_container_of_this_batch_is_accepted():
    result = check("enrichment", {}, ENRICHMENT)
    assert result.ok, result.errors
    assert result.values["apheresis_bag"].text == APHERESIS


def test_a_container_typed_in_lower_case_without_hyphens_is_accepted():
    typed = APHERESIS.replace("-", "").lower()
    assert check("enrichment", {"apheresis_bag": typed}, ENRICHMENT).values["apheresis_bag"].text == APHERESIS


def test_a_container_of_another_patient_is_an_unmistakable_refusal():
    stranger = ContainerInfo(STRANGER, "apheresis_bag", "Apheresis bag", "B-A9999-26-00002-3", OTHER_COI, "in use")
    message = error("enrichment", ENRICHMENT, "apheresis_bag", STRANGER, containers=with_containers(stranger))
    assert message.startswith("COI MISMATCH: ")
    assert STRANGER in message and OTHER_COI in message and COI in message and "Do not use it" in message


def test_a_container_of_another_batch_of_the_same_patient_is_refused():
    sibling = ContainerInfo(SIBLING, "apheresis_bag", "Apheresis bag", "B-A9999-26-00009-X", COI, "in use")
    message = error("enrichment", ENRICHMENT, "apheresis_bag", SIBLING, containers=with_containers(sibling))
    assert "belongs to batch B-A9999-26-00009-X" in message and BATCH in message


def test_a_container_of_the_wrong_kind_is_refused():
    message = error("enrichment", ENRICHMENT, "apheresis_bag", CULTURE)
    assert message == f"{CULTURE} is Culture bag; Apheresis bag needs an apheresis bag."


def test_an_unknown_container_is_refused():
    assert error("enrichment", ENRICHMENT, "apheresis_bag", STRANGER) == (
        f"Apheresis bag: no container {STRANGER} is registered.")


def test_a_consumed_container_cannot_be_used_again():
    used = dataclasses.replace(CONTAINERS[APHERESIS], status="consumed")
    message = error("enrichment", ENRICHMENT, "apheresis_bag", APHERESIS, containers=with_containers(used))
    assert "is consumed" in message


def test_a_wrong_check_character_is_refused_before_any_lookup():
    wrong = APHERESIS[:-1] + ("A" if APHERESIS[-1] != "A" else "B")
    assert "check character does not match" in error("enrichment", ENRICHMENT, "apheresis_bag", wrong)


def test_every_product_bag_must_be_scanned_into_storage():
    message = error("storage", STORAGE, "product_bags", BAG_1)
    assert message == f"Product bags: scan every one; not scanned: {BAG_2} (Final product bag 2 of 2)."


def test_bags_scanned_twice_or_separated_by_spaces_count_once():
    result = check("storage", {"product_bags": f"{BAG_1} {BAG_2}\n{BAG_1}"}, STORAGE)
    assert result.ok, result.errors
    assert result.values["product_bags"].text == f"{BAG_1}\n{BAG_2}"


def test_a_stranger_among_the_product_bags_is_refused():
    stranger = ContainerInfo(STRANGER, "product_bag", "Final product bag 1 of 1", "B-A9999-26-00002-3",
                             OTHER_COI, "in use")
    message = error("cryopreservation", CRYO, "product_bags", f"{BAG_1}\n{STRANGER}\n{BAG_2}",
                    containers=with_containers(stranger))
    assert message.startswith("COI MISMATCH")


def test_shipped_bags_are_no_longer_expected_in_storage():
    shipped = dataclasses.replace(CONTAINERS[BAG_2], status="shipped")
    assert check("storage", {"product_bags": BAG_1}, STORAGE, containers=with_containers(shipped)).ok


BROKEN = [
    ("unknown-kind", 'kind = "qc_sample"', 'kind = "qc_tube"', "container kind 'qc_tube' is not declared"),
    ("count-not-integer", 'count = "bags"', 'count = "dose_volume_ml"', "is not an integer field or integer derived"),
    ("count-zero", "count = 3", "count = 0", "count must be at least 1"),
    ("volume-unknown", 'volume = "volume_per_bag_ml"', 'volume = "volume_per_bag"', "is not a number field"),
    ("parent-not-container", 'parent = "apheresis_bag"', 'parent = "pre_tnc"', "is not a container field"),
    ("field-kind", 'container = "apheresis_bag"', 'container = "apheresis"', "is not declared in [container_kinds]"),
    ("status", 'sets_status = "stored"', 'sets_status = "frozen"', "sets_status 'frozen' is not one of"),
    ("location", 'location = "{incubator}"', 'location = "{incubater}"', "location names {incubater}"),
    ("stock", 'stock = "tube"', 'stock = "vial"', "unknown stock 'vial'"),
    ("handoff-on-lot", 'material = "cd4_microbeads"', 'material = "cd4_microbeads"\n  handoff = "x"',
     "'handoff' does not apply to a lot field"),
]


@pytest.mark.parametrize(("old", "new", "reason"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_malformed_container_definitions_are_refused(tmp_path, old, new, reason):
    assert old in SHIPPED_TEXT, "the test no longer matches the shipped file"
    path = tmp_path / "broken_v1.toml"
    path.write_text(SHIPPED_TEXT.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.source_name == "broken_v1.toml" and reason in info.value.reason


def test_a_step_that_creates_nothing_has_no_creates():
    assert STEP["transduction"].creates == () and STEP["transduction"].handoffs[0].key == "culture_bag"

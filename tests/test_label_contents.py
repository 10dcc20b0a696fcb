"""What each container's label says, read back from the PDF and the ZPL the app serves (issue 11, item 6).

Labels follow their container kind in the batch's process definition: the apheresis bag
describes the starting material and its collection, QC and retain tubes what the sample is
and when it was taken, the product bag the product, its CAR+ cells and dose, its fill and
expiry; a batch pinned to a definition without label settings (version 1) still prints
sensible labels. Every value is written by workflows/formatting.py.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from lab.services.progress import definition_for
from lab.services.signatures import current_values
from tests.factories import get_batch, page_text
from tests.readback import page_texts, text_of
from tests.test_labels_pdf import weight_text
from tests.test_labels_zpl import text_fields
from workflows.definition import DEFINITIONS_DIR
from workflows.formatting import decimal, format_datetime, format_number, format_quantity

pytestmark = pytest.mark.requirements("LBL-1", "LBL-2")

REASON = "read back"


def labels_of(client, code: str) -> dict[str, str]:
    """The text of the container's label as PDF and as ZPL (fields joined by " | ")."""
    pdf = client.get(f"/containers/{code}/label.pdf", query_string={"reason": REASON})
    zpl = client.get(f"/containers/{code}/label.zpl", query_string={"reason": REASON})
    assert pdf.status_code == zpl.status_code == 200, page_text(pdf)[:500]
    return {"pdf": text_of(pdf.data), "zpl": " | ".join(f.text for f in text_fields(zpl.get_data(as_text=True)))}


def facts(app: Flask, number: str) -> dict:
    """The stored facts of the batch's containers, by kind: code, description, the time its entry made it."""
    with app.app_context():
        batch = get_batch(number)
        definition = definition_for(batch)
        receipt = next(e for e in batch.entries if e.step_key == "receipt")
        found: dict = {"product": definition.product, "investigational": definition.investigational,
                       "collected": datetime.fromisoformat(current_values(receipt)["collection_end"].text),
                       "weight_kg": batch.patient.weight_kg, "kinds": definition.container_kinds}
        for container in batch.containers:
            kind = definition.container_kinds[container.kind]
            entry = container.created_entry
            concentration = current_values(entry).get("car_t_per_ml")
            found.setdefault(container.kind, []).append({
                "code": container.code, "description": kind.description, "made_at": entry.performed_at,
                "volume_ml": container.volume_ml, "count": container.count, "number": container.number,
                "car_t_per_ml": concentration.text if concentration else None,
                "shelf_life_days": kind.shelf_life_days})
        return found


def on_both(texts: dict[str, str], *expected: str) -> None:
    for output, text in texts.items():
        for fact in expected:
            assert fact in text, f"{fact!r} is not on the {output} label"


def nowhere(texts: dict[str, str], *unexpected: str) -> None:
    for output, text in texts.items():
        for fact in unexpected:
            assert fact not in text, f"{fact!r} is on the {output} label"


@pytest.fixture
def full_batch(make_batch) -> str:
    return make_batch()


def test_the_apheresis_bag_label_describes_the_starting_material_and_its_collection(app, full_batch, login):
    stored = facts(app, full_batch)
    [bag] = stored["apheresis_bag"]
    texts = labels_of(login("tech1"), bag["code"])
    assert bag["description"] and bag["description"] != stored["product"]
    on_both(texts, bag["description"], f"Collected {format_datetime(stored['collected'])}",
            f"Volume {format_quantity(bag['volume_ml'], 'mL')}", "FOR AUTOLOGOUS USE ONLY")
    nowhere(texts, stored["product"], "Filled", "Expires", "CAR+", stored["investigational"])


@pytest.mark.parametrize("kind", ["qc_sample", "retain_sample"])
def test_qc_and_retain_tubes_say_what_the_sample_is_and_when_it_was_taken(app, full_batch, login, kind):
    stored = facts(app, full_batch)
    tubes = stored[kind]
    assert len(tubes) >= 2
    client = login("tech1")
    for tube in tubes:
        texts = labels_of(client, tube["code"])
        on_both(texts, tube["description"], f"Sampled {format_datetime(tube['made_at'])}")
        nowhere(texts, "Collected", format_datetime(stored["collected"]), stored["product"])


def test_the_culture_bag_label_says_it_holds_cells_in_culture(app, full_batch, login):
    stored = facts(app, full_batch)
    [bag] = stored["culture_bag"]
    texts = labels_of(login("tech1"), bag["code"])
    on_both(texts, bag["description"], f"Collected {format_datetime(stored['collected'])}")
    nowhere(texts, stored["product"], "Expires", "CAR+")


def test_a_product_bag_label_states_its_cells_dose_fill_and_expiry(app, full_batch, login):
    stored = facts(app, full_batch)
    [bag] = stored["product_bag"]
    texts = labels_of(login("tech1"), bag["code"])
    cells = decimal(bag["car_t_per_ml"]) * decimal(bag["volume_ml"])
    expires = bag["made_at"] + timedelta(days=bag["shelf_life_days"])
    on_both(texts, stored["product"], "Bag 1 of 1", f"Volume {format_quantity(bag['volume_ml'], 'mL')}",
            f"CAR+ viable T cells {format_number(cells)}",
            f"Dose {format_quantity(cells / decimal(stored['weight_kg']), 'cells/kg')} "
            f"({weight_text(stored['weight_kg'])})",
            f"Filled {format_datetime(bag['made_at'])}", f"Expires {format_datetime(expires)}",
            stored["investigational"], *stored["kinds"]["product_bag"].warnings)
    nowhere(texts, "All 1 bags")


def test_a_fill_of_two_bags_numbers_them_and_states_the_dose_of_both(app, two_bag_batch, login):
    number, client = two_bag_batch, login("tech1")
    with app.app_context():
        fill = next(e for e in get_batch(number).entries if e.step_key == "formulation")
        target = current_values(fill)["target_dose_per_kg"].text
    stored = facts(app, number)
    bags = stored["product_bag"]
    assert [b["number"] for b in bags] == [1, 2] and {b["count"] for b in bags} == {2}
    weight = decimal(stored["weight_kg"])
    total = sum(decimal(b["car_t_per_ml"]) * decimal(b["volume_ml"]) for b in bags)
    target_total = decimal(target) * weight  # what formulation computed the fill for
    assert format_number(total) == format_number(target_total)
    record = " ".join(page_texts(client.get(f"/batches/{number}/record.pdf").data))
    assert f"Total dose (computed) {format_quantity(total, 'cells')}" in record
    for bag in bags:
        cells = decimal(bag["car_t_per_ml"]) * decimal(bag["volume_ml"])
        volume = format_quantity(bag["volume_ml"], "mL")
        on_both(labels_of(client, bag["code"]), f"Bag {bag['number']} of 2", f"CAR+ viable T cells {format_number(cells)}",
                f"Volume {volume}",
                f"All 2 bags {format_quantity(total, 'cells')}, {format_quantity(total / weight, 'cells/kg')}")
        assert f"{bag['code']} Final product bag {bag['number']} of 2 {volume}" in record


def test_dates_print_in_utc_whatever_the_lab_zone_as_the_record_does(app, full_batch, login):
    """A lab in New York reads the same text on the bag as in the executed batch record."""
    app.config["TIMEZONE"] = "America/New_York"
    stored = facts(app, full_batch)
    [bag] = stored["product_bag"]
    client = login("tech1")
    texts = labels_of(client, bag["code"])
    filled = bag["made_at"].astimezone(UTC)
    expires = filled + timedelta(days=bag["shelf_life_days"])
    lines = (f"Filled {format_datetime(filled)}", f"Expires {format_datetime(expires)}",
             f"Collected {format_datetime(stored['collected'], UTC)}")
    assert all(line.endswith(" UTC") for line in lines)
    on_both(texts, *lines)
    record = " ".join(page_texts(client.get(f"/batches/{full_batch}/record.pdf").data))
    assert format_datetime(filled) in record and format_datetime(expires) in record


@pytest.fixture
def version_1(app: Flask, tmp_path: Path) -> None:
    """New batches start on version 1 of the definition, which has no label settings."""
    shutil.copyfile(DEFINITIONS_DIR / "cd19_car_t_v1.toml", tmp_path / "cd19_car_t_v1.toml")
    app.config["WORKFLOW_DIR"] = str(tmp_path)


def test_a_batch_pinned_to_version_1_still_prints_sensible_labels(app, version_1, make_batch, login):
    number = make_batch()
    stored = facts(app, number)
    assert not any(kind.description or kind.dates for kind in stored["kinds"].values())
    client = login("tech1")
    collected = f"Collected {format_datetime(stored['collected'])}"
    [product] = stored["product_bag"]
    texts = labels_of(client, product["code"])
    on_both(texts, stored["product"], collected, f"Filled {format_datetime(product['made_at'])}", "Bag 1 of 1",
            "FOR AUTOLOGOUS USE ONLY", f"Volume {format_quantity(product['volume_ml'], 'mL')}")
    nowhere(texts, "Expires", "NOT EVALUATED")
    [apheresis] = stored["apheresis_bag"]
    on_both(labels_of(client, apheresis["code"]), stored["product"], collected)
    for tube in stored["qc_sample"] + stored["retain_sample"]:
        texts = labels_of(client, tube["code"])
        on_both(texts, collected)
        nowhere(texts, stored["product"])  # a tube names the kind of sample, not the product

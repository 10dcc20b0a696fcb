"""Every fact a container label and the executed batch record both print reads the same (issue 11, item 1).

The demo lab is seeded once; for every demo batch the test reads back what the app serves:
each container's label as a PDF and as ZPL, the batch's sheet of labels, and its executed
batch record. Volume, CAR+ viable T cells, dose, dates, COI, batch number and bag n of m are
looked for, as text written by workflows/formatting.py, on the labels and in the record.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pdfplumber
import pypdf
import pytest
from flask import Flask
from sqlalchemy import select

from config import TestingConfig
from lab import create_app
from lab.demo import seed
from lab.extensions import db
from lab.models import Batch, Container
from lab.services.labels import label_data
from lab.services.progress import container_title, definition_for
from lab.services.signatures import current_values
from labels.pdf import layout_sheet
from tests.conftest import empty_tables
from tests.factories import PASSWORD
from tests.readback import page_texts
from tests.test_labels_pdf import weight_text
from tests.test_labels_zpl import text_fields
from workflows.formatting import decimal, format_datetime, format_number, format_quantity

pytestmark = pytest.mark.requirements("ALCOA-CONSISTENT")

REASON = "facts-agree check"
APPENDIX = "Appendix: audit trail"


@dataclass
class Printed:
    """One container as its labels and its batch's record print it, and the stored facts to find there."""

    code: str
    kind: str
    title: str  # as the record's container table names it ("QC sample 1 of 3")
    number: int
    count: int
    volume_ml: float | None
    made_by_step: str  # title of the step whose entry made the container
    made_at: datetime
    car_t_per_ml: str | None  # as recorded by the entry that filled it
    weight_kg: float
    shelf_life_days: int | None
    labels: dict[str, str] = field(default_factory=dict)  # "pdf", "zpl", "sheet" -> text read back


@dataclass
class BatchPrint:
    number: str
    coi: str
    collection_end: datetime | None
    record: str
    containers: list[Printed]


def _sheet_texts(app: Flask, number: str, pdf: bytes) -> dict[str, str]:
    """The text of each label of a batch's sheet, read within its own cut outline."""
    with app.app_context():
        batch = db.session.scalars(select(Batch).where(Batch.batch_number == number)).one()
        labels = [label_data(c, reprint=True, now=datetime.now().astimezone()) for c in batch.containers]
    found = {}
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        for placement in layout_sheet(labels, "A4"):
            page = document.pages[placement.page]
            box = placement.box
            crop = page.crop((box.x, page.height - box.y1, box.x1, page.height - box.y))
            found[labels[placement.index].code] = " ".join((crop.extract_text() or "").split())
    return found


def _record_text(pdf: bytes) -> str:
    """The record's text up to its audit-trail appendix: the facts, not the stored values they came from."""
    found = []
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        text = " ".join(page.extract_text().split())
        if APPENDIX in text:
            found.append(text[:text.index(APPENDIX)])
            break
        found.append(text)
    return " ".join(found)


def _container(container: Container) -> Printed:
    batch = container.batch
    definition = definition_for(batch)
    kind = definition.container_kinds.get(container.kind)
    entry = container.created_entry
    concentration = current_values(entry).get("car_t_per_ml")
    return Printed(
        code=container.code, kind=container.kind, title=container_title(container, definition),
        number=container.number, count=container.count, volume_ml=container.volume_ml,
        made_by_step=definition.step(entry.step_key).title, made_at=entry.performed_at,
        car_t_per_ml=concentration.text if concentration else None, weight_kg=batch.patient.weight_kg,
        shelf_life_days=kind.shelf_life_days if kind else None,
    )


def _collection_end(batch: Batch) -> datetime | None:
    receipt = next((e for e in batch.entries if e.step_key == "receipt"), None)
    value = current_values(receipt).get("collection_end") if receipt else None
    return datetime.fromisoformat(value.text) if value else None


@pytest.fixture(scope="module")
def printed(_schema: None) -> Iterator[list[BatchPrint]]:
    """Every demo batch with the labels and record the app serves for it (the demo seeded once)."""
    app = create_app(TestingConfig)
    empty_tables(app)
    with app.app_context():
        seed(PASSWORD)
        db.session.commit()
        batches = [(b.batch_number, b.patient.coi, _collection_end(b), [_container(c) for c in b.containers])
                   for b in db.session.scalars(select(Batch).order_by(Batch.id))]
    client = app.test_client()
    response = client.post("/login", data={"username": "tech1", "password": PASSWORD})
    assert response.status_code == 302
    result = []
    for number, coi, collected, containers in batches:
        for container in containers:
            pdf = client.get(f"/containers/{container.code}/label.pdf", query_string={"reason": REASON})
            zpl = client.get(f"/containers/{container.code}/label.zpl", query_string={"reason": REASON})
            assert pdf.status_code == zpl.status_code == 200, container.code
            [container.labels["pdf"]] = page_texts(pdf.data)
            container.labels["zpl"] = " | ".join(f.text for f in text_fields(zpl.get_data(as_text=True)))
        if not containers:
            continue  # no label: nothing to compare
        sheet = client.get(f"/batches/{number}/labels.pdf", query_string={"reason": REASON})
        assert sheet.status_code == 200, number
        for code, found in _sheet_texts(app, number, sheet.data).items():
            next(c for c in containers if c.code == code).labels["sheet"] = found
        record = client.get(f"/batches/{number}/record.pdf")
        assert record.status_code == 200, number
        result.append(BatchPrint(number, coi, collected, _record_text(record.data), containers))
    yield result
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def on_every_label(container: Printed, fact: str) -> None:
    for output, found in container.labels.items():
        assert fact in found, f"{container.code} ({container.kind}): {fact!r} is not on its {output} label"


def product_bags(printed: list[BatchPrint]) -> Iterator[tuple[BatchPrint, Printed]]:
    for batch in printed:
        for container in batch.containers:
            if container.car_t_per_ml is not None and container.volume_ml is not None:
                yield batch, container


def test_the_demo_has_every_kind_of_container_and_each_is_read_back_three_ways(printed):
    kinds = {c.kind for batch in printed for c in batch.containers}
    assert kinds >= {"apheresis_bag", "culture_bag", "product_bag", "qc_sample", "retain_sample"}
    assert len(list(product_bags(printed))) >= 2
    for batch in printed:
        for container in batch.containers:
            assert set(container.labels) == {"pdf", "zpl", "sheet"}, container.code


def test_code_coi_and_batch_number_read_the_same_on_labels_and_record(printed):
    for batch in printed:
        assert f"Batch number {batch.number}" in batch.record
        assert f"COI {batch.coi}" in batch.record
        for container in batch.containers:
            for fact in (container.code, batch.coi, batch.number):
                on_every_label(container, fact)
            assert f"{container.code} {container.title}" in batch.record, container.code


def test_volumes_read_the_same_on_labels_and_record(printed):
    checked = 0
    for batch in printed:
        for container in batch.containers:
            if container.volume_ml is None:
                continue
            volume = format_quantity(container.volume_ml, "mL")
            on_every_label(container, f"Volume {volume}")
            assert f"{container.code} {container.title} {volume}" in batch.record, (container.code, volume)
            checked += 1
    for batch, bag in product_bags(printed):
        assert f"Volume per bag (computed) {format_quantity(bag.volume_ml, 'mL')}" in batch.record, bag.code
    assert checked >= 4


def test_bag_n_of_m_reads_the_same_on_labels_and_record(printed):
    for batch, bag in product_bags(printed):
        on_every_label(bag, f"Bag {bag.number} of {bag.count}")
        assert f"Number of bags (computed) {bag.count}" in batch.record, bag.code
        if bag.count > 1:  # the record's container table names each bag "Final product bag n of m"
            assert f"{bag.code} {bag.title}" in batch.record and bag.title.endswith(f" {bag.number} of {bag.count}")


def test_car_t_cells_and_dose_read_the_same_on_labels_and_record(printed):
    for batch, bag in product_bags(printed):
        assert bag.car_t_per_ml is not None and bag.volume_ml is not None
        cells = decimal(bag.car_t_per_ml) * decimal(bag.volume_ml)
        total = cells * bag.count  # the bags of one fill hold the same volume
        per_kg = total / decimal(bag.weight_kg)
        on_every_label(bag, f"CAR+ viable T cells {format_number(cells)}")
        on_every_label(bag, f"Dose {format_quantity(cells / decimal(bag.weight_kg), 'cells/kg')} "
                            f"({weight_text(bag.weight_kg)})")
        if bag.count > 1:
            on_every_label(bag, f"All {bag.count} bags {format_quantity(total, 'cells')}")
        # The record's table of product bags prints each bag's cells and dose per kg as its label does.
        dose = f"{format_quantity(cells / decimal(bag.weight_kg), 'cells/kg')} ({weight_text(bag.weight_kg)})"
        assert f"{format_number(cells)} {dose}" in batch.record, bag.code
        # The record prints what formulation computed the fill for: the whole dose, and the target dose per kg
        # (in the dose specification), which the bags hold exactly.
        assert f"Total dose (computed) {format_quantity(total, 'cells')}" in batch.record, bag.code
        assert f"target dose {format_quantity(per_kg, 'cells/kg')}" in batch.record, bag.code


def test_the_record_prints_the_weight_the_label_counts_the_dose_per_kg_for(printed):
    """The label says "Dose 1.00 × 10⁶ cells/kg (64.5 kg)"; the record must name the same weight
    (agreed format: every digit recorded, ``weight_text``), else a reader cannot check the dose."""
    for batch, bag in product_bags(printed):
        weight = weight_text(bag.weight_kg)
        on_every_label(bag, f"({weight})")
        assert weight in batch.record, (bag.code, f"the record does not print the patient weight {weight}")


def test_dates_read_the_same_on_labels_and_record(printed):
    checked = 0
    for batch in printed:
        for container in batch.containers:
            pdf = container.labels["pdf"]
            if "Collected" in pdf:
                assert batch.collection_end is not None
                collected = format_datetime(batch.collection_end)
                on_every_label(container, f"Collected {collected}")
                assert f"End of collection {collected}" in batch.record, container.code
                checked += 1
            made = format_datetime(container.made_at)
            made_in_record = re.compile(re.escape(container.made_by_step) + r"[^:]{0,60}Entry \d+: performed by "
                                        r"[^:]{1,80} at " + re.escape(made))
            for word in ("Filled", "Sampled"):
                if word in pdf:
                    on_every_label(container, f"{word} {made}")
                    assert made_in_record.search(batch.record), (container.code, word, made)
                    checked += 1
            if container.shelf_life_days:
                expires = format_datetime(container.made_at + timedelta(days=container.shelf_life_days))
                on_every_label(container, f"Expires {expires}")
                assert expires in batch.record, (container.code, "expiry not in the record's product bags")
                checked += 1
    assert checked >= 10


def test_a_volume_at_a_half_is_rounded_up_on_labels_and_record(printed):
    """SLE-01's bag holds 32.25 mL: its label, like its record, says 32.3 mL (half up), never 32.2 mL."""
    halves = [(batch, bag) for batch, bag in product_bags(printed)
              if bag.volume_ml is not None and decimal(bag.volume_ml).as_tuple().exponent == -2
              and decimal(bag.volume_ml).as_tuple().digits[-1] == 5]
    assert halves, "the demo has a bag whose volume ends in a half at the printed digit"
    for batch, bag in halves:
        assert bag.volume_ml is not None
        up = decimal(bag.volume_ml).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        on_every_label(bag, f"Volume {up} mL")
        assert f"{bag.code} {bag.title} {up} mL" in batch.record
        down = up - Decimal("0.1")
        assert f"{down} mL" not in container_texts(bag) and f"{down} mL" not in batch.record


def container_texts(container: Printed) -> str:
    return " | ".join(container.labels.values())

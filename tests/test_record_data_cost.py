"""GET /batches/<n>/record.pdf: its queries do not grow with the batch's entries, and the part of
the record kept per mark (lab.services.batch_record) is never printed stale."""

from __future__ import annotations

import pytest
from flask import Flask

from lab.services.signatures import current_values
from tests.factories import PASSWORD, get_batch
from tests.queries import statements
from tests.readback import cells_text, page_texts

pytestmark = pytest.mark.requirements("P11-10b")


def _days(count: int) -> tuple[dict[str, str], ...]:
    return tuple({"culture_day": str(day), "viable_cells": f"{day}.0e8", "viability_pct": "90"}
                 for day in range(1, count + 1))


def _record(client, number: str) -> bytes:
    response = client.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.data


def test_the_records_queries_do_not_grow_with_its_entries(app: Flask, make_batch, login) -> None:
    few = make_batch(ref="SLE-01", expansion=_days(2))
    many = make_batch(ref="SLE-02", expansion=_days(9))
    client = login("qa1")
    counts = []
    for number in (few, many):  # each a first download: the record is derived, not kept yet
        with statements(app) as found:
            _record(client, number)
        counts.append(len(found))
    assert counts[0] == counts[1], counts


def test_a_correction_is_in_the_next_record_and_each_copy_names_its_own_reader(app: Flask, make_batch,
                                                                                login) -> None:
    number = make_batch(expansion=_days(2))
    first = " ".join(page_texts(_record(login("auditor1"), number)))
    assert "Downloaded by Audrey Auditor at" in first
    with app.app_context():
        batch = get_batch(number)
        entry = next(e for e in batch.entries if e.step_key == "expansion" and e.occurrence == 1)
        entry_id, version = entry.id, batch.version
        assert current_values(entry)["viable_cells"].text == "1.0e8"
    tech = login("tech1")
    corrected = tech.post(f"/batches/{number}/entries/{entry_id}/fields/viable_cells/correct", data={
        "value": "4.1e8", "reason": "Re-read of the counter print-out.", "batch_version": version,
        "username": "tech1", "password": PASSWORD})
    assert corrected.status_code == 302, corrected.get_data(as_text=True)
    second = _record(login("qa1"), number)
    assert "Reason: Re-read of the counter print-out." in cells_text(second)
    text = " ".join(page_texts(second))
    assert "Downloaded by Quentin Assurance at" in text and "Audrey Auditor" not in text
    assert text.split("Record digest SHA-256 ")[1][:64] != first.split("Record digest SHA-256 ")[1][:64]


def test_a_download_does_not_make_the_record_derived_again(app: Flask, make_batch, login) -> None:
    """A download is logged in the trail under the batch, but it is a copy taken out, not a change:
    the next download of the unchanged record reads it from what was kept, in fewer queries (the
    batch's rows are not even loaded: less than half the first download's)."""
    number = make_batch(expansion=_days(3))
    client = login("qa1")
    counts = []
    for _ in range(2):
        with statements(app) as found:
            _record(client, number)
        counts.append(len(found))
    assert counts[1] * 2 < counts[0], counts

"""The audit trail reads as a ledger: people by name, ids as what they name, an insert as labelled
fields, an update as old → new, long values shortened with the whole value on demand; a page looks
every id up in a bounded number of queries; what is stored (and exported) stays raw."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab import audit, audit_chain
from lab.extensions import db
from lab.models import AuditEvent, User
from tests.conftest import PASSWORD_HASH
from tests.factories import get_batch, page_text
from tests.queries import statements

pytestmark = pytest.mark.requirements("ALCOA-LEGIBLE", "A11-9")

Login = Callable[[str], FlaskClient]


def rows_of(response: Any) -> dict[int, str]:
    """Each listed entry's row HTML (entities decoded), by entry id."""
    text = page_text(response)
    return {int(n): body for n, body in re.findall(r'<tr id="entry-(\d+)">(.*?)</tr>', text, re.DOTALL)}


def add_entries(app: Flask, entries: list[dict[str, Any]]) -> list[int]:
    """Chain ``entries`` onto the trail as the application would (the fields not given are defaults)."""
    start = datetime(2026, 3, 1, 8, tzinfo=UTC)
    rows = [{"occurred_at": start + timedelta(seconds=n), "actor_id": None, "actor_username": "system",
             "action": "test.readable", "operation": "insert", "table_name": "material_lots", "row_id": str(n),
             "field": None, "old_value": None, "new_value": "{}", "reason": None, "batch_id": None, **entry}
            for n, entry in enumerate(entries)]
    with app.app_context():
        audit_chain.append(db.session.connection(), rows)
        db.session.commit()
    return [row["id"] for row in rows]


def test_a_download_names_who_downloaded_it_not_their_id(app: Flask, make_batch: Callable[..., str],
                                                          login: Login) -> None:
    number = make_batch(until="enrichment")
    auditor = login("auditor1")
    assert auditor.get(f"/batches/{number}/record.pdf").status_code == 200
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "downloads")
                                   .order_by(AuditEvent.id.desc())).first()
        assert event is not None and '"downloaded_by_id": "' in (event.new_value or "")  # stored raw
        batch_id = get_batch(number).id
    response = auditor.get("/audit?table=downloads")
    assert response.status_code == 200
    row = rows_of(response)[event.id]
    assert "<dt>Downloaded by</dt><dd><span title=\"stored as" in row
    assert "Audrey Auditor (auditor1)</span></dd>" in row
    assert f'<dt>Batch</dt><dd><span class="code" title="stored as {batch_id}">{number}</span></dd>' in row
    assert "<dt>Kind</dt><dd><span>record</span></dd>" in row
    assert "Downloaded the executed batch record" in row and "Audrey Auditor" in row and "auditor" in row
    text = page_text(response)
    assert "downloaded_by_id" not in text and '"batch_id"' not in text and "{&#34;" not in text
    # the raw values stay in the export
    export = auditor.get("/audit.csv?table=downloads").get_data(as_text=True)
    assert '""downloaded_by_id"": ""' in export


def test_an_update_reads_field_old_to_new_with_people_named(app: Flask, users: dict[str, int],
                                                            login: Login) -> None:
    [state, updated_by] = add_entries(app, [
        {"operation": "update", "table_name": "batches", "row_id": "999", "field": "state",
         "old_value": "in_process", "new_value": "on_hold", "actor_id": users["qa1"], "actor_username": "qa1",
         "action": "batch.hold", "reason": "Sterility pending"},
        {"operation": "update", "table_name": "batches", "row_id": "999", "field": "updated_by_id",
         "old_value": str(users["tech1"]), "new_value": str(users["qa1"]), "actor_id": users["qa1"],
         "actor_username": "qa1", "action": "batch.hold"},
    ])
    response = login("auditor1").get("/audit?action=batch.hold")
    found = rows_of(response)
    assert '<span class="field-name">State:</span> <span>in_process</span> <span aria-label="changed to">→</span> ' \
           "<span>on_hold</span>" in found[state]
    assert "Quentin Assurance" in found[state] and "QA officer" in found[state] and "Sterility pending" in found[state]
    assert re.search(r'Updated by:</span> <span title="stored as \d+">Tess Technician \(tech1\)</span> '
                     r'<span aria-label="changed to">→</span> <span title="stored as \d+">Quentin Assurance \(qa1\)',
                     found[updated_by])


def test_long_values_and_timestamps_are_shortened_or_written_in_the_labs_time(app: Flask, users: dict[str, int],
                                                                              login: Login) -> None:
    long = "The operator noticed the bag clamp was loose " * 4
    digest = "ab" * 32
    [entry] = add_entries(app, [{"table_name": "downloads", "new_value": (
        f'{{"detail": "{long.strip()}", "digest": "{digest}", "downloaded_at": "2026-03-01T08:00:00.123456+00:00", '
        '"kind": "record", "downloaded_by_id": null, "batch_id": "424242"}')}])
    row = rows_of(login("auditor1").get("/audit?action=test.readable"))[entry]
    assert f'<details class="long-value"><summary>The operator noticed the bag clamp was loose The…</summary>' \
           f'<span class="full-value">{long.strip()}</span></details>' in row
    assert f'<summary>abababababab…</summary><span class="full-value">{digest}</span>' in row
    assert ('<dt>Downloaded at</dt><dd><span class="moment" title="stored as 2026-03-01T08:00:00.123456+00:00">'
            "2026-03-01 08:00 UTC") in row
    assert '<dt>Downloaded by</dt><dd><span class="muted">empty</span></dd>' in row
    assert "<dt>Batch</dt><dd><span>#424242</span></dd>" in row  # no such batch: the id, said to be one


def make_users(app: Flask, count: int) -> list[int]:
    with app.app_context():
        with audit.action("test.setup", actor=None):
            rows = [User(username=f"person{n}", full_name=f"Person Number{n}", role="technician",
                         password_hash=PASSWORD_HASH) for n in range(count)]
            db.session.add_all(rows)
        db.session.commit()
        return [u.id for u in rows]


def test_a_page_names_every_id_in_a_constant_number_of_queries(app: Flask, users: dict[str, int],
                                                               login: Login) -> None:
    people = make_users(app, 50)

    def entries(ids: list[int]) -> list[dict[str, Any]]:
        return [{"actor_id": person, "actor_username": f"person{n}", "action": "test.queries",
                 "table_name": "lot_consumptions", "row_id": str(n),
                 "new_value": (f'{{"batch_id": "{1000 + n}", "lot_id": "{2000 + n}", "entry_id": "{3000 + n}", '
                               f'"recorded_by_id": "{person}", "quantity": "1"}}')}
                for n, person in enumerate(ids)]

    client = login("auditor1")
    counts = []
    for ids in ([people[0]] * 50, people):
        add_entries(app, entries(ids))
        with statements(app) as found:
            response = client.get("/audit?action=test.queries")
        assert response.status_code == 200 and len(rows_of(response)) == 50
        counts.append(len(found))
        listed = page_text(response)
        assert "Person Number49 (person49)" in listed if ids == people else "Person Number0 (person0)" in listed
    assert counts[0] == counts[1]
    # the session's user, the page, the filter's choices, and one look-up of every person and record
    # the page names (users, batches, lots, step entries at once), however many there are
    assert counts[1] <= 4, counts


def test_the_batch_page_audit_box_reads_the_same_way(app: Flask, make_batch: Callable[..., str],
                                                    login: Login) -> None:
    number = make_batch(until="enrichment")
    response = login("tech1").get(f"/batches/{number}")
    assert response.status_code == 200
    section = page_text(response).split('<section class="audit" id="audit">', 1)[1].split("</section>", 1)[0]
    assert 'class="list audit-trail"' in section and "<th>What changed</th>" in section
    assert '{"' not in section and "_by_id" not in section
    assert re.search(r"Tess Technician|Theo Second|Sam Supervisor|Quentin Assurance", section)


def test_the_export_keeps_the_stored_values(app: Flask, users: dict[str, int], login: Login) -> None:
    value = '{"kind": "record", "downloaded_by_id": "4"}'
    [entry] = add_entries(app, [{"table_name": "downloads", "new_value": value}])
    export = login("auditor1").get("/audit.csv?action=test.readable").get_data(as_text=True)
    [row] = [line for line in csv.reader(io.StringIO(export)) if line and line[0] == str(entry)]
    assert row[9] == value

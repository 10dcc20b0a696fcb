"""The audit screens: who sees the trail, filters, keyset paging newest first, the batch page's
section, the CSV export (itself audited) and refusals of bad filters that write nothing."""

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
from sqlalchemy import func, select

from lab import audit_chain
from lab.extensions import db
from lab.models import AuditEvent, Download
from tests.factories import get_batch, page_text, user
from tests.queries import statements
from workflows.codes import CodeKind, make_code

pytestmark = pytest.mark.requirements("A11-9", "P11-10b")

Login = Callable[[str], FlaskClient]
REVIEWERS = ("qa1", "auditor1", "admin")
OTHERS = ("tech1", "super1", "qc1")


def shown(response: Any) -> list[int]:
    """The entry ids a page lists, top to bottom."""
    return [int(n) for n in re.findall(r'<tr id="entry-(\d+)"', response.get_data(as_text=True))]


def older_link(response: Any) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]+)"', response.get_data(as_text=True))
    return found.group(1).replace("&amp;", "&") if found else None


def newest_ids(*conditions: Any, limit: int = 50) -> list[int]:
    query = select(AuditEvent.id).where(*conditions).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    return list(db.session.scalars(query.limit(limit)))


def add_entries(app: Flask, times: list[datetime], *, action: str = "test.paging", **fields: Any) -> list[int]:
    """Chain one entry per time in ``times`` onto the trail, as the application would."""
    rows = [{"occurred_at": when, "actor_id": None, "actor_username": "system", "action": action,
             "operation": "insert", "table_name": "material_lots", "row_id": str(n), "field": None,
             "old_value": None, "new_value": "{}", "reason": None, "batch_id": None, **fields}
            for n, when in enumerate(times)]
    with app.app_context():
        audit_chain.append(db.session.connection(), rows)
        db.session.commit()
    return [row["id"] for row in rows]


def written(app: Flask) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
                db.session.scalar(select(func.count()).select_from(Download)) or 0)


# --- who sees it ------------------------------------------------------------------------------------

@pytest.mark.parametrize("username", REVIEWERS)
def test_qa_auditors_and_admins_see_the_trail_and_its_link(app: Flask, users: dict[str, int], login: Login,
                                                           username: str) -> None:
    client = login(username)
    response = client.get("/audit")
    assert response.status_code == 200
    assert "Showing all entries, newest first." in page_text(response)
    assert shown(response)  # at least the sign-in just made
    assert '<a href="/audit">Audit trail</a>' in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("username", OTHERS)
def test_other_roles_are_refused_the_whole_trail_and_not_shown_its_link(app: Flask, users: dict[str, int],
                                                                        login: Login, username: str) -> None:
    client = login(username)
    before = written(app)
    for url in ("/audit", "/audit.csv", "/audit?user=tech1", "/audit?batch=", "/audit.csv?table=users"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "may review the audit trail; you are signed in as" in page_text(response)
    assert written(app) == before
    assert 'href="/audit"' not in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("username", OTHERS)
def test_every_role_reads_a_batch_trail_as_its_record_prints_it(app: Flask, make_batch: Callable[..., str],
                                                                 login: Login, username: str) -> None:
    """One rule: a batch's trail is its record's appendix, so whoever downloads the record reads it."""
    number = make_batch(until="enrichment")
    client = login(username)
    with app.app_context():
        expected = newest_ids(AuditEvent.batch_id == get_batch(number).id, limit=10)
    page = client.get(f"/batches/{number}")
    assert '<section class="audit" id="audit">' in page_text(page) and shown(page) == expected
    trail = client.get("/audit", query_string={"batch": number})
    assert trail.status_code == 200 and set(expected) <= set(shown(trail))
    assert client.get("/audit.csv", query_string={"batch": number}).status_code == 200
    assert client.get(f"/batches/{number}/record.pdf").status_code == 200
    assert client.get("/audit", query_string={"batch": "x"}).status_code == 422  # a malformed number, not 403


def test_the_batch_page_shows_its_newest_entries(app: Flask, make_batch: Callable[..., str],
                                                              login: Login) -> None:
    number = make_batch(until="enrichment")
    make_batch(until="enrichment", ref="SLE-02")
    with app.app_context():
        expected = newest_ids(AuditEvent.batch_id == get_batch(number).id, limit=10)
    response = login("auditor1").get(f"/batches/{number}")
    text = page_text(response)
    assert '<section class="audit" id="audit">' in text
    assert shown(response) == expected
    assert f'href="/audit?batch={number}">Full audit trail of {number}, newest first' in text
    assert f'href="/audit.csv?batch={number}"' in text


# --- filters ------------------------------------------------------------------------------------------

def test_each_filter_lists_only_its_entries_newest_first(app: Flask, make_batch: Callable[..., str],
                                                         login: Login) -> None:
    number = make_batch(until="enrichment", ref="SLE-01")
    other = make_batch(until="enrichment", ref="SLE-02")
    client = login("qa1")
    with app.app_context():
        batch_id, tech2 = get_batch(other).id, user("tech2").id
        cases = {
            f"batch={other}": newest_ids(AuditEvent.batch_id == batch_id),
            "user=tech2": newest_ids(AuditEvent.actor_id == tech2),
            "action=step.verify": newest_ids(AuditEvent.action == "step.verify"),
            "table=signatures": newest_ids(AuditEvent.table_name == "signatures"),
            f"batch={other}&user=tech2&table=signatures":
                newest_ids(AuditEvent.batch_id == batch_id, AuditEvent.actor_id == tech2,
                           AuditEvent.table_name == "signatures"),
            f"batch={number.lower()}&action=no.such-action": [],
        }
    for query, expected in cases.items():
        response = client.get(f"/audit?{query}")
        assert response.status_code == 200, query
        assert shown(response) == expected, query
        assert expected or "No entries match." in page_text(response)
    assert f'Audit trail of batch <span class="code">{other}</span>' in page_text(client.get(f"/audit?batch={other}"))


def test_a_date_range_is_read_in_the_labs_time_zone(app: Flask, users: dict[str, int], login: Login) -> None:
    app.config["TIMEZONE"] = "Europe/Berlin"  # UTC+1 in January
    times = [datetime(2026, 1, 9, 22, 59, tzinfo=UTC),  # 9 Jan 23:59 in Berlin
             datetime(2026, 1, 9, 23, 0, tzinfo=UTC),  # 10 Jan 00:00
             datetime(2026, 1, 10, 22, 59, 59, tzinfo=UTC),  # 10 Jan 23:59:59
             datetime(2026, 1, 10, 23, 0, tzinfo=UTC)]  # 11 Jan 00:00
    ids = add_entries(app, times)
    client = login("auditor1")
    response = client.get("/audit?from=2026-01-10&to=2026-01-10")
    assert shown(response) == [ids[2], ids[1]]
    assert "from=2026-01-10; to=2026-01-10 (dates in Europe/Berlin)" in page_text(response)
    assert shown(client.get("/audit?to=2026-01-09")) == [ids[0]]
    assert shown(client.get("/audit?from=2026-01-11&action=test.paging")) == [ids[3]]


# --- paging -------------------------------------------------------------------------------------------

def test_pages_follow_each_other_without_gaps_or_repeats(app: Flask, users: dict[str, int], login: Login) -> None:
    start = datetime(2026, 2, 1, 8, tzinfo=UTC)
    times = [start + timedelta(minutes=n // 3) for n in range(120)]  # three entries per action time
    ids = add_entries(app, times)
    expected = [i for _, i in sorted(zip(times, ids, strict=True), reverse=True)]
    client = login("auditor1")
    url: str | None = "/audit?action=test.paging"
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(shown(response))
        url = older_link(response)
        if url:
            assert "action=test.paging" in url
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == expected
    last = client.get(f"/audit?action=test.paging&before={pages[1][-1]}")
    assert 'href="/audit?action=test.paging">Newest entries</a>' in last.get_data(as_text=True)


def test_a_page_reads_no_count_and_skips_no_rows(app: Flask, users: dict[str, int], login: Login) -> None:
    ids = add_entries(app, [datetime(2026, 2, 1, tzinfo=UTC)] * 60)
    client = login("auditor1")
    with statements(app) as found:
        response = client.get(f"/audit?action=test.paging&before={ids[-1]}")
    assert response.status_code == 200
    assert len(shown(response)) == 50
    trail_queries = [(sql.upper(), parameters) for sql, parameters in found if "audit_events" in sql]
    assert trail_queries
    assert not [sql for sql, _ in trail_queries if "COUNT(" in sql]
    # SQLite's dialect writes every LIMIT as "LIMIT ? OFFSET ?", with an offset of 0
    assert not [sql for sql, parameters in trail_queries if "OFFSET" in sql and list(parameters)[-1] != 0]


# --- bad input ------------------------------------------------------------------------------------------

UNKNOWN_BATCH = str(make_code(CodeKind.BATCH, "A9999", 26, 999))


@pytest.mark.parametrize(("query", "status", "message"), [
    ("from=2026-13-01", 422, "From: '2026-13-01' is not a date; use YYYY-MM-DD"),
    ("to=25.11.2026", 422, "To: '25.11.2026' is not a date"),
    ("from=20261101", 422, "is not a date"),
    ("from=1800-01-01", 422, "From: 1800-01-01 is before 2000-01-01; CellTrail holds no record that old."),
    ("from=1026-01-01&to=2026-01-01", 422, "is before 2000-01-01"),
    ("from=2026-01-01&to=3026-01-01", 422, "To: 3026-01-01 is more than a year from today; check the year."),
    ("from=2026-02-01&to=2026-01-01", 422,
     "The range ends (2026-01-01) before it starts (2026-02-01): swap the dates."),
    ("batch=B-12", 422, "'B-12' is not a batch number"),
    (f"batch={UNKNOWN_BATCH}", 404, f"No batch {UNKNOWN_BATCH} is registered in this lab."),
    ("user=nobody", 404, "No user 'nobody' has an account in this lab."),
    ("table=audit_events", 422, "No audited table is called 'audit_events'; choose one from the list."),
    ("action=DROP TABLE", 422, "An action is a name such as step.correct"),
    ("action=" + "a" * 65, 422, "The action filter is too long (at most 64 characters)."),
    ("before=abc", 422, "'abc' is not an entry number"),
    ("before=99999999", 404, "The audit trail has no entry 99999999 to page from"),
])
def test_bad_filters_are_refused_with_a_reason_and_write_nothing(app: Flask, users: dict[str, int], login: Login,
                                                                  query: str, status: int, message: str) -> None:
    client = login("auditor1")
    before = written(app)
    urls = ["/audit"] if query.startswith("before=") else ["/audit", "/audit.csv"]
    for url in urls:
        response = client.get(f"{url}?{query}")
        assert response.status_code == status, url
        assert message in page_text(response), url
        assert response.mimetype == "text/html"
    assert written(app) == before


# --- CSV export -------------------------------------------------------------------------------------------

def read_csv(response: Any) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_the_export_streams_the_filtered_view_and_is_itself_audited(app: Flask, make_batch: Callable[..., str],
                                                                    login: Login) -> None:
    number = make_batch(until="enrichment")
    make_batch(until="enrichment", ref="SLE-02")
    with app.app_context():
        batch_id = get_batch(number).id
    today = datetime.now(UTC).date().isoformat()
    client = login("auditor1")
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.get(f"/audit.csv?batch={number}&from={today}&to={today}")
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=audit-trail-")
    rows = read_csv(response)
    header = rows[0][0]
    assert header.startswith(f"CellTrail audit trail export. Filters: batch={number}; from={today}; to={today} "
                             "(dates in UTC). Exported at ")
    assert header.endswith(" by Audrey Auditor (auditor1).")
    exported_at = datetime.strptime(header.split("Exported at ")[1].split(" ")[0], "%Y-%m-%dT%H:%M:%SZ")
    assert exported_at.replace(tzinfo=UTC) >= before
    assert rows[1] == ["entry", "occurred_at_utc", "user", "action", "operation", "table", "row", "field",
                       "old_value", "new_value", "reason", "batch", "prev_hash", "hash"]
    with app.app_context():  # the export's own entry comes first: it was logged before the rows were read
        expected = newest_ids(AuditEvent.batch_id == batch_id, limit=10_000)
    assert [int(r[0]) for r in rows[2:]] == expected
    assert rows[2][3] == "download.audit_export"
    assert {r[11] for r in rows[2:]} == {number}
    with app.app_context():
        first = db.session.get(AuditEvent, expected[0])
        assert first is not None
        assert rows[2][12:] == [first.prev_hash, first.hash]
        [download] = db.session.scalars(select(Download)).all()
        assert (download.kind, download.batch_id, download.downloaded_by_id) == (
            "audit_export", batch_id, user("auditor1").id)
        assert download.detail == f"batch={number}; from={today}; to={today} (dates in UTC)"
        [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "download.audit_export")).all()
        assert (entry.actor_username, entry.table_name, entry.batch_id) == ("auditor1", "downloads", batch_id)
    again = read_csv(client.get(f"/audit.csv?batch={number}"))
    assert [r[3] for r in again[2:4]] == ["download.audit_export"] * 2


def test_the_export_neutralises_spreadsheet_formulas_but_not_numbers(app: Flask, users: dict[str, int],
                                                                     login: Login) -> None:
    add_entries(app, [datetime(2026, 3, 1, tzinfo=UTC)], action="test.csv", old_value="-80",
                new_value="-2+3+cmd|' /C calc'!A0", reason='=HYPERLINK("http://example.org","click")')
    rows = read_csv(login("auditor1").get("/audit.csv?action=test.csv"))
    [row] = rows[2:]
    assert (row[8], row[9], row[10]) == ("-80", "'-2+3+cmd|' /C calc'!A0", '\'=HYPERLINK("http://example.org","click")')


def test_a_large_export_holds_every_entry_once(app: Flask, users: dict[str, int], login: Login) -> None:
    start = datetime(2026, 4, 1, tzinfo=UTC)
    ids = add_entries(app, [start + timedelta(seconds=n // 7) for n in range(2100)])
    rows = read_csv(login("auditor1").get("/audit.csv?action=test.paging"))
    assert sorted(int(r[0]) for r in rows[2:]) == ids
    assert len(rows) == 2 + 2100

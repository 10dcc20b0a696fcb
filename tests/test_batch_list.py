"""``GET /batches``: every batch newest first with keyset paging, search by batch number,
patient ID or COI (whole or part), filters by state, product and start date; bad searches
and altered paging links answered on the page, never a 500."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.extensions import db
from lab.models import Batch, Patient
from lab.services.batches import start_batch
from lab.services.patients import PatientInput, register_patient
from tests.conftest import ROLES
from tests.factories import page_text, post_step, user
from tests.queries import statements

pytestmark = pytest.mark.usefixtures("never_500")

Login = Callable[..., FlaskClient]
#: When the first test batch starts: batches are started a day apart from there, a few at the same instant.
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def add_batches(app: Flask, count: int, *, first: int = 1) -> list[str]:
    """``count`` patients with a batch each, started one day apart (every fifth one at the same
    instant as the one before, so paging must break ties by id). Returns their batch numbers."""
    numbers = []
    with app.app_context():
        for n in range(first, first + count):
            when = START + timedelta(days=n - (n % 5 == 0))
            patient = register_patient(PatientInput(f"PL-{n:03d}", "AB", date(1980, 5, 1), 60.0, "SLE"),
                                       actor=user("super1"), now=when)
            numbers.append(start_batch(patient, actor=user("super1"), now=when).batch_number)
        db.session.commit()
    return numbers


def newest_first(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(db.select(Batch.batch_number).order_by(Batch.created_at.desc(), Batch.id.desc())))


def listed(response: object) -> list[str]:
    return re.findall(r'<tr id="batch-([^"]+)"', page_text(response))


def words(response: object) -> str:
    """The page's text with its whitespace runs made single spaces."""
    return " ".join(page_text(response).split())


def link(response: object, rel: str) -> str | None:
    match = re.search(rf'<a rel="{rel}" href="([^"]+)"', response.get_data(as_text=True))  # type: ignore[attr-defined]
    return html.unescape(match.group(1)) if match else None


@pytest.fixture
def sixty(app: Flask, users: dict[str, int]) -> list[str]:
    return add_batches(app, 60)


def test_paging_lists_every_batch_once_newest_first_and_back(app: Flask, sixty: list[str], login: Login) -> None:
    client = login("tech1")
    pages, url = [], "/batches"
    while url is not None and len(pages) < 10:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(listed(response))
        url = link(response, "next")
    assert [len(p) for p in pages] == [50, 10]
    assert [n for p in pages for n in p] == newest_first(app)
    assert "60 batches" in page_text(response)
    assert link(response, "prev") is not None
    back = client.get(link(response, "prev"))  # type: ignore[arg-type]
    assert listed(back) == pages[0]
    assert link(back, "prev") is None and link(back, "next") is not None


def test_the_count_stops_past_its_limit_and_says_so(app: Flask, sixty: list[str], login: Login,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The list counts matching batches up to COUNT_LIMIT (a count of every batch ever made would
    grow with the facility): past it, the page says "more than", and paging still reaches them all."""
    monkeypatch.setattr("lab.services.batch_list.COUNT_LIMIT", 59)
    monkeypatch.setattr("lab.views.batch_list.COUNT_LIMIT", 59)
    client = login("tech1")
    first = client.get("/batches")
    assert "More than 59 batches, newest first; 50 shown on this page." in words(first)
    assert "60 batches" not in words(first)
    assert len(listed(first)) + len(listed(client.get(link(first, "next")))) == 60  # type: ignore[arg-type]
    searched = words(client.get("/batches", query_string={"q": "PL-01"}))  # PL-010 to PL-019: under the limit
    assert "10 batches match, newest first." in searched
    monkeypatch.setattr("lab.services.batch_list.COUNT_LIMIT", 60)
    monkeypatch.setattr("lab.views.batch_list.COUNT_LIMIT", 60)
    assert "60 batches, newest first" in words(client.get("/batches"))


def test_first_page_has_no_newer_link_and_a_lone_page_no_links(app: Flask, users: dict[str, int], login: Login) -> None:
    add_batches(app, 3)
    response = login("qa1").get("/batches")
    assert listed(response) == newest_first(app)
    assert link(response, "next") is None and link(response, "prev") is None
    assert "3 batches" in page_text(response)


def test_no_batch_yet(users: dict[str, int], login: Login) -> None:
    response = login("tech1").get("/batches")
    assert response.status_code == 200 and "No batch has been started yet" in page_text(response)


@pytest.mark.parametrize("kind", ["batch", "ref", "coi"])
def test_search_finds_by_each_key_whole_or_part(app: Flask, users: dict[str, int], login: Login, kind: str) -> None:
    numbers = add_batches(app, 12)
    with app.app_context():
        batch = db.session.scalar(db.select(Batch).where(Batch.batch_number == numbers[10]))
        assert batch is not None
        key = {"batch": batch.batch_number, "ref": batch.patient.patient_ref, "coi": batch.patient.coi}[kind]
    client = login("tech1")
    compact = key.replace("-", "")
    for term in (key, key.lower(), compact, compact[-6:], f" {key[-7:].lower()} "):
        found = listed(client.get("/batches", query_string={"q": term}))
        assert numbers[10] in found, (term, found)
    assert listed(client.get("/batches", query_string={"q": key})) == [numbers[10]]


def test_search_by_part_finds_every_batch_holding_it(app: Flask, users: dict[str, int], login: Login) -> None:
    numbers = add_batches(app, 12)
    found = listed(login("tech1").get("/batches", query_string={"q": "pl-01"}))
    # PL-010, PL-011, PL-012, newest first
    assert found == [numbers[11], numbers[10], numbers[9]]


def test_search_that_matches_nothing(app: Flask, users: dict[str, int], login: Login) -> None:
    add_batches(app, 2)
    response = login("tech1").get("/batches", query_string={"q": "ZZZ999"})
    assert response.status_code == 200
    assert listed(response) == [] and "No batch matches this search" in page_text(response)
    # a check character * is part of a code: searched for, not refused
    response = login("tech1").get("/batches", query_string={"q": "B-A9999-26-99999-*"})
    assert response.status_code == 200 and "No batch matches this search" in page_text(response)


def test_filters_by_state_product_and_dates(app: Flask, make_batch: Callable[..., str], login: Login) -> None:
    numbers = add_batches(app, 6)
    running = make_batch(until="enrichment", ref="SLE-77")
    client = login("super1")
    assert listed(client.get("/batches", query_string={"state": "in_process"})) == [running]
    assert set(listed(client.get("/batches", query_string={"state": "scheduled"}))) == set(numbers)
    assert listed(client.get("/batches", query_string={"state": "released"})) == []
    assert len(listed(client.get("/batches", query_string={"product": "cd19-car-t"}))) == 7
    # batches 1..6 start 1, 2, 3, 4, 4 and 6 days after START, at 09:00 UTC (the same date in the lab)
    zone = ZoneInfo(app.config["TIMEZONE"])
    day = (START + timedelta(days=3)).astimezone(zone).date()
    found = listed(client.get("/batches", query_string={"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}))
    assert found == [numbers[4], numbers[3], numbers[2]]
    combined = client.get("/batches", query_string={"from": day.isoformat(), "q": "PL-00", "state": "scheduled"})
    assert listed(combined) == [numbers[5], numbers[4], numbers[3], numbers[2]]


@pytest.mark.parametrize(("args", "field", "words"), [
    ({"q": "B" * 65}, "q", "at most 64 characters"),
    ({"q": "B-26%_"}, "q", "letters, digits, hyphens and the check character * only"),
    ({"q": "SLE\t01"}, "q", "unprintable"),
    ({"q": "---"}, "q", "not only hyphens"),
    ({"state": "lost"}, "state", "No batch state is called 'lost'"),
    ({"product": "x" * 300}, "product", "No product is called"),
    ({"from": "2026-13-01"}, "from", "is not a date; use YYYY-MM-DD"),
    ({"to": "yesterday"}, "to", "is not a date"),
    ({"from": "1900-01-01"}, "from", "before 2000-01-01"),
    ({"from": "2026-03-10", "to": "2026-03-01"}, "to", "swap the dates"),
])
def test_bad_search_is_answered_next_to_its_field(app: Flask, users: dict[str, int], login: Login,
                                                   args: dict[str, str], field: str, words: str) -> None:
    add_batches(app, 2)
    response = login("tech1").get("/batches", query_string=args)
    assert response.status_code == 422
    text = page_text(response)
    assert re.search(rf'<p class="error" id="{field}-error">⚠ [^<]*{re.escape(words)}', text), text
    assert f'aria-describedby="{field}-error"' in text
    assert listed(response) == []


def test_altered_paging_links_are_refused(app: Flask, sixty: list[str], login: Login) -> None:
    client = login("tech1")
    older = link(client.get("/batches", query_string={"q": "PL"}), "next")
    assert older is not None
    cursor = re.search(r"page=([^&]+)", older).group(1)  # type: ignore[union-attr]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (flipped, cursor[:-5], "abc", "x" * 500, "W1tdXQ", cursor[:10] + "\t" + cursor[10:]):
        response = client.get("/batches", query_string={"page": bad, "q": "PL"})
        assert response.status_code == 400, bad
        text = page_text(response)
        assert "page link was altered or cut short" in text and listed(response) == []
        assert 'href="/batches?q=PL"' in text  # back to the first page of the same search
    assert len(listed(client.get(older))) == 10


def test_a_page_runs_the_same_number_of_queries_whatever_the_number_of_batches(
        app: Flask, users: dict[str, int], login: Login) -> None:
    """Whether the rows' summaries are derived (first sight of a batch or of its change) or kept."""
    def queries(url: str) -> tuple[int, int, object]:
        with statements(app) as first:
            response = client.get(url)
        with statements(app) as again:
            client.get(url)
        return len(first), len(again), response

    add_batches(app, 3)
    client = login("tech1")
    few = queries("/batches")
    add_batches(app, 110, first=4)
    many = queries("/batches")
    older = queries(link(many[2], "next"))  # type: ignore[arg-type]
    searched = queries("/batches?q=PL-0&state=scheduled&from=2026-01-01")
    assert len(listed(many[2])) == 50 and len(listed(older[2])) == 50
    assert few[:2] == many[:2] == older[:2], (few, many, older)
    assert searched[0] == searched[1] == few[1]  # its batches were on the pages listed before
    assert many[0] <= 12 and many[1] <= 5, many


@pytest.mark.parametrize("name", list(ROLES))
def test_every_role_has_the_list_in_its_menu(app: Flask, users: dict[str, int], login: Login, name: str) -> None:
    add_batches(app, 1)
    client = login(name)
    menu = re.search(r'<nav aria-label="Main">.*?</nav>', client.get("/").get_data(as_text=True), re.DOTALL)
    assert menu and 'href="/batches">Batches</a>' in menu.group(0)
    response = client.get("/batches")
    assert response.status_code == 200 and len(listed(response)) == 1
    assert 'href="/batches" aria-current="page">Batches</a>' in response.get_data(as_text=True)


def test_signed_out_visitor_is_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/batches")
    assert response.status_code in (302, 401) and "login" in response.headers.get("Location", "login")


def test_codes_do_not_wrap_and_the_table_scrolls_in_its_box(app: Flask, users: dict[str, int], login: Login) -> None:
    add_batches(app, 1)
    text = login("tech1").get("/batches").get_data(as_text=True)
    assert '<div class="table-scroll">' in text and 'class="code"' in text
    with app.app_context():
        assert db.session.scalar(db.select(Patient.coi)) in text


def test_a_recorded_step_shows_in_the_current_step_on_the_next_request(
        app: Flask, make_batch: Callable[..., str], login: Login) -> None:
    """The rows' summaries are kept per process (lab/services/batch_summary.py): a change to the
    record is listed on the next request."""
    def current_step() -> str:
        row = re.search(rf'<tr id="batch-{re.escape(number)}".*?</tr>', page_text(login("qa1").get("/batches")),
                        re.DOTALL)
        assert row is not None
        return re.findall(r"<td>([^<]*)</td>", row.group(0))[-1]

    number = make_batch("harvest", days_ago=14)
    assert current_step() == "Expansion (daily count)"
    assert post_step(app, login("tech1"), number, "harvest").status_code == 302
    assert current_step() == "Formulation and fill"

"""The dashboard: every batch with its state, current step and clocks against the process's
time windows, and each role's own work; and the batch page's timeline."""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, template_rendered
from flask.testing import FlaskClient
from jinja2 import Template

from lab.demo import RELEASE_RESULTS
from lab.services import dashboard as dashboard_service
from tests.factories import get_batch, post_step, signature, signed_in
from tests.quality import close_all_deviations, post_result, record_results, release, words
from tests.queries import statements

Login = Callable[..., FlaskClient]


def _row(page: str, number: str) -> str:
    """The visible text of the dashboard's row for batch ``number``."""
    match = re.search(rf'<tr id="batch-{re.escape(number)}".*?</tr>', page, re.DOTALL)
    assert match, f"no row for {number}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(0)).split())


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<(?:div|section)[^>]* id="{section_id}".*?</(?:div|section)>', page, re.DOTALL)
    assert match, f"no section {section_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(0)).split())


def test_each_batch_shows_its_state_current_step_and_clocks(app: Flask, make_batch, login: Login) -> None:
    overdue = make_batch("harvest", ref="SLE-01", days_ago=20)
    due = make_batch("harvest", ref="SLE-02", days_ago=14)
    scheduled = make_batch("receipt", ref="SLE-03")
    page = login("tech1").get("/").get_data(as_text=True)

    late = _row(page, overdue)
    assert "in process" in late and "Expansion (daily count)" in late
    # Receipt 2 h after the start, collection 9 h before the receipt: 20 days and 7 hours ago.
    assert "20 d 07 h" in late
    assert "⚠ OVERDUE Harvest and wash due on culture day 12–13 (now day 18): OVERDUE" in late
    assert 'class="overdue"' in re.search(rf'<tr id="batch-{overdue}"[^>]*>', page).group(0)  # type: ignore[union-attr]

    on_time = _row(page, due)
    assert "● Due now Harvest and wash due on culture day 12–13 (now day 12)" in on_time
    assert "OVERDUE" not in on_time

    waiting = _row(page, scheduled)
    assert "scheduled" in waiting and "Apheresis receipt" in waiting and "not received yet" in waiting
    assert "scheduled 1" in _section(page, "batches")  # the count of batches by state


def test_a_kept_row_moves_with_the_clock(app: Flask, make_batch, login: Login, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row is kept under its batch's mark and its clocks' words (lab/templating.py, kept_row):
    the same record six days later shows its window due and its clocks six days on."""
    number = make_batch("harvest", ref="SLE-01", days_ago=8)
    client = login("tech1")
    early = _row(client.get("/").get_data(as_text=True), number)
    assert "Not yet due Harvest and wash due on culture day 12–13 (now day 6)" in early

    later = datetime.now(UTC) + timedelta(days=6)
    monkeypatch.setattr(dashboard_service, "utcnow", lambda: later)
    due = _row(client.get("/").get_data(as_text=True), number)
    assert "● Due now Harvest and wash due on culture day 12–13 (now day 12)" in due
    vein_to_vein = re.compile(r"(\d+) d \d\d h")
    assert int(vein_to_vein.findall(due)[0]) == int(vein_to_vein.findall(early)[0]) + 6


def test_batches_past_manufacturing_show_their_state_and_closed_ones_their_total(
        app: Flask, make_batch, login: Login) -> None:
    testing = make_batch(ref="SLE-01")
    released = make_batch(ref="SLE-02")
    record_results(app, released)
    close_all_deviations(app, released)
    release(app, released)
    page = login("auditor1").get("/").get_data(as_text=True)
    assert "In QC testing" in _row(page, testing)
    closed = _section(page, "closed")
    assert released in closed and "released" in closed
    assert re.search(r"\b\d+ d \d\d h\b", _row(page, released))  # collection to release
    assert released not in _section(page, "batches")


def test_technicians_see_the_steps_they_may_record_and_what_others_wait_to_have_verified(
        app: Flask, make_batch, login: Login) -> None:
    due = make_batch("harvest", ref="SLE-01", days_ago=14)
    early = make_batch("harvest", ref="SLE-02", days_ago=8)
    unverified = make_batch("enrichment", ref="SLE-03", verify=False)  # tech1's receipt, not verified

    tech1_page = login("tech1").get("/").get_data(as_text=True)
    tech1 = _section(tech1_page, "to-perform")
    assert f"Record Harvest and wash {due}" in tech1
    assert f"Add entry: Expansion (daily count) {early}" in tech1
    assert f"Record Harvest and wash {early}" not in tech1  # its window opens on day 12
    assert f"Record T-cell enrichment {unverified}" in tech1
    assert "Entries to verify (0)" in _section(tech1_page, "to-verify")  # tech1 recorded the receipt: not theirs to verify

    page = login("tech2").get("/").get_data(as_text=True)
    tech2 = _section(page, "to-verify")
    assert f"Verify Apheresis receipt {unverified} · recorded by Tess Technician" in tech2
    with app.app_context():
        entry = get_batch(unverified).entries[0]
    assert f'href="/batches/{unverified}/entries/{entry.id}/verify"' in page

    qc = login("qc1").get("/").get_data(as_text=True)
    assert 'id="to-perform"' not in qc and 'id="to-verify"' not in qc


def test_qc_sees_the_tests_due_qa_the_batches_to_review_the_auditor_recent_releases(
        app: Flask, make_batch, login: Login) -> None:
    testing = make_batch(ref="SLE-01")
    review = make_batch(ref="SLE-02")
    record_results(app, review)
    released = make_batch(ref="SLE-03")
    record_results(app, released)
    close_all_deviations(app, released)
    release(app, released)

    qc = _section(login("qc1").get("/").get_data(as_text=True), "tests-due")
    assert f"Enter results for {testing}" in qc and "Sterility" in qc and "Viability" in qc
    # Results in for QA review: only the final sterility and the vector copy number are to come.
    assert f"Enter results for {review} Vector copy number, Sterility Enter" in qc

    qa = _section(login("qa1").get("/").get_data(as_text=True), "awaiting-review")
    assert f"Waiting for QA review (1) Review {review}" in qa

    auditor = _section(login("auditor1").get("/").get_data(as_text=True), "recent-releases")
    assert released in auditor and "Quentin Assurance" in auditor and "Batch record (PDF)" in auditor
    assert testing not in auditor


def test_the_dashboard_query_count_does_not_grow_with_the_number_of_batches(
        app: Flask, make_batch, login: Login) -> None:
    """Counted on a first look at the batches (their summaries derived, their patients' names
    read) and on a second (kept)."""
    def queries() -> tuple[int, int]:
        client = login("tech2")
        with statements(app) as first:
            assert client.get("/").status_code == 200
        with statements(app) as again:
            assert client.get("/").status_code == 200
        return len(first), len(again)

    make_batch("harvest", ref="SLE-01", verify=False)
    make_batch(ref="SLE-02")
    few = queries()
    daily = ({"culture_day": str(day), "viable_cells": "1.5e9", "viability_pct": "92"} for day in range(6, 12))
    make_batch("harvest", ref="SLE-03", verify=False, expansion=tuple(daily))
    make_batch(ref="SLE-04")
    make_batch("receipt", ref="SLE-05")
    assert queries() == few
    assert few[0] <= 15 and few[1] <= 5, few


def test_the_batch_timeline_lists_steps_custody_corrections_and_decisions_in_order(
        app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", ref="SLE-01")
    client = login("tech1")
    with app.app_context():
        batch = get_batch(number)
        entry = next(e for e in batch.entries if e.step_key == "expansion")
        version = batch.version
    response = client.post(f"/batches/{number}/entries/{entry.id}/fields/viable_cells/correct",
                           data={"value": "1.4e9", "reason": "Counter print-out misread.", "batch_version": version,
                                 **signature("tech1")})
    assert response.status_code == 302, words(response)
    response = post_step(app, client, number, "expansion", culture_day="12", viability_pct="62",
                         comment="Low viability, supervisor informed.")
    assert response.status_code == 302, words(response)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    section = re.search(r'<section id="timeline".*?</section>', page, re.DOTALL)
    assert section
    times = re.findall(r'<time datetime="([^"]+)"', section.group(0))
    assert times == sorted(times) and len(times) >= 15
    text = " ".join(re.sub(r"<[^>]+>", " ", section.group(0)).split())
    assert "Batch Batch started" in text
    assert "Step Apheresis receipt recorded · Tess Technician" in text
    assert "Verified Apheresis receipt verified · Theo Second" in text
    assert "Custody Label applied:" in text and "Custody Sampled for a count:" in text
    assert ("Correction Expansion (daily count) (entry 1): Viable cells corrected to 1.4e9 · Tess Technician "
            "Reason: Counter print-out misread.") in text
    assert "Step Expansion (daily count) (entry 2) recorded · Tess Technician ⚠ OUT OF LIMIT: Viability" in text
    assert "Deviation DEV-" in text
    assert text.index("Correction Expansion") < text.index("Expansion (daily count) (entry 2) recorded")


def _verify(app: Flask, client: FlaskClient, number: str, step_key: str) -> int:
    with app.app_context():
        entry_id = [e for e in get_batch(number).entries if e.step_key == step_key][-1].id
        version = get_batch(number).version
    return client.post(f"/batches/{number}/entries/{entry_id}/verify",
                       data={**signature(signed_in(app, client)), "batch_version": version}).status_code


def test_a_recorded_and_verified_step_shows_on_the_next_request_in_each_users_own_work(
        app: Flask, make_batch, login: Login) -> None:
    """The batches' summaries are kept per process and shared by every user: each user's own work
    is worked out from them on each request."""
    def page(username: str) -> str:
        return login(username).get("/").get_data(as_text=True)

    number = make_batch("harvest", ref="SLE-01", days_ago=14)
    before = page("tech1")
    assert "Expansion (daily count)" in _row(before, number)
    assert f"Record Harvest and wash {number}" in _section(before, "to-perform")
    assert "Entries to verify (0)" in _section(page("tech2"), "to-verify")

    assert post_step(app, login("tech1"), number, "harvest").status_code == 302
    mine = page("tech1")
    assert f"Record Harvest and wash {number}" not in _section(mine, "to-perform")
    assert "Entries to verify (0)" in _section(mine, "to-verify")  # tech1 recorded it
    theirs = _section(page("tech2"), "to-verify")
    assert f"Entries to verify (1) Verify Harvest and wash {number} · recorded by Tess Technician" in theirs

    assert _verify(app, login("tech2"), number, "harvest") == 302
    assert "Entries to verify (0)" in _section(page("tech2"), "to-verify")
    after = page("tech1")
    assert "Formulation and fill" in _row(after, number)
    assert f"Record Formulation and fill {number}" in _section(after, "to-perform")


def test_an_opened_then_closed_deviation_shows_on_the_next_request(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", ref="SLE-01")
    tech1 = login("tech1")
    assert _row(tech1.get("/").get_data(as_text=True), number).endswith(" none")
    response = tech1.post(f"/batches/{number}/deviations/new",
                          data={"title": "Incubator door found ajar", "description": "Found at 07:10, closed at once."})
    assert response.status_code == 302, words(response)
    assert _row(tech1.get("/").get_data(as_text=True), number).endswith(" 1 open")
    close_all_deviations(app, number)
    assert _row(tech1.get("/").get_data(as_text=True), number).endswith(" none")


def test_a_recorded_result_leaves_the_tests_due_and_the_results_bring_the_batch_to_qa(
        app: Flask, make_batch, login: Login) -> None:
    def section(username: str, section_id: str) -> str:
        return _section(login(username).get("/").get_data(as_text=True), section_id)

    number = make_batch(ref="SLE-01")
    assert "Viability" in section("qc1", "tests-due")
    assert "Waiting for QA review (0)" in section("qa1", "awaiting-review")

    assert post_result(app, login("qc1"), number, "viability", "91.2").status_code == 302
    due = section("qc1", "tests-due")
    assert f"Enter results for {number}" in due and "Viability" not in due

    qc = login("qc1")
    for key, text in RELEASE_RESULTS.items():
        if key != "viability":
            assert post_result(app, qc, number, key, text).status_code == 302
    assert f"Waiting for QA review (1) Review {number}" in section("qa1", "awaiting-review")


def test_a_page_frees_what_it_was_given_when_it_is_sent(app: Flask, make_batch, login: Login) -> None:
    """No reference cycle through the template's context (a macro defined in a page refers to the
    context that refers to it): otherwise every object a page was given waits for the garbage
    collector's full pass, some 35 ms every fifty dashboards at facility scale."""
    make_batch("harvest", ref="SLE-01")
    client = login("super1")
    given: list[weakref.ref[object]] = []

    def keep(sender: Flask, template: Template, context: dict[str, object], **extra: object) -> None:
        given.extend(weakref.ref(context[name]) for name in ("board", "alerts") if name in context)

    collecting = gc.isenabled()
    gc.disable()
    try:
        with template_rendered.connected_to(keep, app):
            assert client.get("/").status_code == 200
        assert len(given) == 2 and all(ref() is None for ref in given)
    finally:
        if collecting:
            gc.enable()
